"""The per-tenant job cap, exact across ingress replicas: a fixed set of slots, claimed by conditional writes.

A tenant whose cap is N has the slots `tenants/{t}/slots/0000` .. N-1. Admission claims a free one for
the new job with `ObjectStore.put_if_absent` (a local file hard-linked into place; on S3 a PUT with
`If-None-Match: *`) before it analyses the photos, so two replicas never hold the same slot, and refuses
with too_many_jobs when all N hold unfinished jobs. The slot is freed when the job becomes terminal or is
erased (kiss_core.jobs.store), or when admission refuses the request after claiming it.

Freeing is done under a lock, `tenants/{t}/slots-released/{job id}.{n}`, itself created only if absent:
of the runner ending a job and a replica reclaiming the slot as stale, exactly one deletes it (without
the lock, one could read the slot, the other free it and a new job claim it, and the first then delete
the new job's slot). The lock is deleted after the slot: any later attempt finds a slot that no longer
names the job. A lock left by a replica that died holding it expires after `LOCK_TTL` and the next one
takes the lock of the next generation `n + 1` (again created only if absent: one winner).

Stale slots: a replica that died between a job's terminal write and its release, or during admission,
leaves its slot behind. When every slot is taken, admission looks at each slot's job: one that ended, or
that does not exist `ADMISSION_GRACE` after its claim (admission died before storing it), is freed and
its slot claimed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Literal

from kiss_core.keys import TENANTS_PREFIX, tenant_slot_key, tenant_slot_released_key
from kiss_core.schemas import utcnow
from kiss_core.storage import ObjectNotFound, ObjectStore

JobState = Literal["unfinished", "finished", "missing"]

ADMISSION_GRACE = timedelta(minutes=15)
LOCK_TTL = timedelta(seconds=60)


class TenantSlots:
    """Claims and frees the job-cap slots of tenants on any ObjectStore with conditional creates."""

    def __init__(self, store: ObjectStore, job_state: Callable[[str], JobState]):
        self.store = store
        self.job_state = job_state

    def claim(self, tenant: str, job_id: str, cap: int) -> str | None:
        """The key of the slot now held by `job_id`, or None when all `cap` slots hold unfinished jobs."""
        data = json.dumps({"job_id": job_id, "claimed_at": utcnow().isoformat()}).encode()
        keys = [tenant_slot_key(tenant, i) for i in range(cap)]
        taken = set(self.store.list(f"{TENANTS_PREFIX}{tenant}/slots/"))
        for key in keys:
            if key not in taken and self.store.put_if_absent(key, data, "application/json"):
                return key
        for key in keys:  # all taken: free the stale ones, then try again
            holder = self._holder(key)
            if holder is not None:
                held_by, claimed_at = holder
                state = self.job_state(held_by)
                stale = state == "finished" or (
                    state == "missing" and utcnow() - claimed_at > ADMISSION_GRACE
                )
                if not stale:
                    continue
                self.release(tenant, held_by, key)
            if self.store.put_if_absent(key, data, "application/json"):
                return key
        return None

    def held(self, tenant: str) -> list[str]:
        """The job ids holding the tenant's slots now."""
        found = []
        for key in self.store.list(f"{TENANTS_PREFIX}{tenant}/slots/"):
            holder = self._holder(key)
            if holder is not None:
                found.append(holder[0])
        return found

    def release(self, tenant: str, job_id: str, key: str | None = None) -> bool:
        """Free the slot `job_id` holds (`key`, or whichever names it); False when another party is freeing
        it right now. Idempotent: a slot that no longer names the job is left alone."""
        generation = 0
        while True:
            lock = f"{tenant_slot_released_key(tenant, job_id)}.{generation}"
            if self.store.put_if_absent(lock, utcnow().isoformat().encode(), "text/plain"):
                break
            try:
                since = datetime.fromisoformat(self.store.get(lock).decode())
            except ObjectNotFound:
                continue  # freed meanwhile: try this generation again
            except ValueError:
                since = datetime.min.replace(tzinfo=utcnow().tzinfo)
            if utcnow() - since < LOCK_TTL:
                return False
            generation += 1  # its holder died: the next generation's lock
        try:
            slots = [key] if key is not None else self.store.list(f"{TENANTS_PREFIX}{tenant}/slots/")
            for slot in slots:
                holder = self._holder(slot)
                if holder is not None and holder[0] == job_id:
                    self.store.delete(slot)
        finally:
            for n in range(generation + 1):
                self.store.delete(f"{tenant_slot_released_key(tenant, job_id)}.{n}")
        return True

    def _holder(self, key: str) -> tuple[str, datetime] | None:
        try:
            record = json.loads(self.store.get(key))
            return str(record["job_id"]), datetime.fromisoformat(record["claimed_at"])
        except ObjectNotFound:
            return None
        except (ValueError, KeyError, TypeError):  # unreadable: treat it as a claim of no job, long ago
            return "unreadable", datetime.min.replace(tzinfo=utcnow().tzinfo)
