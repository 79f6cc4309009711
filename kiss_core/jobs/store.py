"""Durable jobs: the manifest in object storage is the single source of truth of a job's state.

The key layout (manifest, inputs, outputs, per-tenant markers) is kiss_core.keys'.
Markers are written before the manifest and removed with the job (or when it ends); a marker
whose manifest is gone (a crash in between, an S3 lifecycle expiry) is skipped and pruned on read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kiss_core.errors import JobNotFound
from kiss_core.jobs.slots import JobState, TenantSlots
from kiss_core.keys import (
    QUEUE_PREFIX,
    TENANTS_PREFIX,
    WEBHOOKS_PENDING_PREFIX,
    decode_cursor,
    encode_cursor,
    input_key,
    job_prefixes,
    new_job_id,
    queue_key,
    tenant_active_key,
    tenant_index_key,
    webhook_pending_key,
)
from kiss_core.schemas import (
    SUBJECTS,
    TERMINAL_STATUSES,
    ConsentReference,
    JobManifest,
    JobResult,
    JobStatus,
    Lease,
    Problem,
    SubjectAnalysis,
    SubjectPhotos,
    VideoParams,
    photo_list,
    utcnow,
)
from kiss_core.storage import ObjectNotFound, ObjectStore

# Allowed status transitions; a terminal status never changes again.
_TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"in_progress", "failed", "canceled"}),
    "in_progress": frozenset({"queued", "in_progress", "completed", "failed", "canceled"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "canceled": frozenset(),
}


class InvalidTransition(RuntimeError):
    pass


class JobStore:
    """Creates, reads and moves jobs through their states on any ObjectStore."""

    def __init__(self, store: ObjectStore):
        self.store = store
        self.slots = TenantSlots(store, self.state)

    def state(self, job_id: str) -> JobState:
        """Whether the job is unfinished, finished or missing (for the job-cap slots)."""
        try:
            manifest = self.get(job_id)
        except (JobNotFound, ValueError):
            return "missing"
        return "finished" if manifest.status in TERMINAL_STATUSES else "unfinished"

    def _manifest_key(self, job_id: str) -> str:
        return f"jobs/{job_id}/manifest.json"

    def create(
        self,
        params: VideoParams,
        photos: Mapping[str, SubjectPhotos],
        analyses: Mapping[str, SubjectAnalysis | Sequence[SubjectAnalysis]],
        trace_context: dict[str, str] | None = None,
        job_id: str | None = None,
        tenant: str = "public",
        webhook_url: str | None = None,
        consent: ConsentReference | None = None,
        tenant_slot: str | None = None,
        best: Mapping[str, int] | None = None,
    ) -> JobManifest:
        """Store the inputs and the tenant's markers, then the manifest: once this returns the job
        survives any crash. `consent`: the audit record admission wrote for it.

        A subject may have several photos (a sequence of photos and one analysis each, in the order sent):
        each is stored under its own key, `best[subject]` (default 0) becomes `input_keys` and the
        subject's analysis, the others `reference_keys` and `reference_analyses`."""
        job_id = job_id or new_job_id()
        input_keys: dict[str, str] = {}
        chosen: dict[str, SubjectAnalysis] = {}
        reference_keys: dict[str, list[str]] = {}
        reference_analyses: dict[str, list[SubjectAnalysis]] = {}
        for subject in SUBJECTS:
            subject_photos = photo_list(photos[subject])
            found = analyses[subject]
            subject_analyses = [found] if isinstance(found, SubjectAnalysis) else list(found)
            if len(subject_analyses) != len(subject_photos):
                raise ValueError(
                    f"subject {subject!r} has {len(subject_photos)} photos"
                    f" but {len(subject_analyses)} analyses"
                )
            pick = (best or {}).get(subject, 0)
            for index, photo in enumerate(subject_photos):
                key = input_key(job_id, subject, index)
                self.store.put(key, photo, "application/octet-stream")
                if index == pick:
                    input_keys[subject] = key
                    chosen[subject] = subject_analyses[index]
                else:
                    reference_keys.setdefault(subject, []).append(key)
                    reference_analyses.setdefault(subject, []).append(subject_analyses[index])
        now = utcnow()
        index_key = tenant_index_key(tenant, now, job_id)
        manifest = JobManifest(
            id=job_id,
            created_at=now,
            updated_at=now,
            params=params,
            subjects=[chosen[s] for s in SUBJECTS],
            input_keys=input_keys,
            reference_keys=reference_keys,
            reference_analyses=reference_analyses,
            trace_context=trace_context or {},
            tenant=tenant,
            webhook_url=webhook_url,
            index_key=index_key,
            queue_key=queue_key(now, job_id),
            revision=1,
            consent=consent,
            tenant_slot=tenant_slot,
        )
        self.store.put(index_key, b"", "application/octet-stream")
        self.store.put(tenant_active_key(tenant, job_id), b"", "application/octet-stream")
        self.store.put(queue_key(now, job_id), b"", "application/octet-stream")  # == manifest.queue_key
        self.save(manifest)
        return manifest

    def save(self, manifest: JobManifest) -> None:
        data = manifest.model_dump_json().encode()
        self.store.put(self._manifest_key(manifest.id), data, "application/json")

    def get(self, job_id: str, tenant: str | None = None) -> JobManifest:
        """The job's manifest; with `tenant`, another tenant's job is not found (exactly as a missing one)."""
        if not job_id.startswith("video_") or not job_id[6:].isalnum():
            raise JobNotFound(f"There is no video with id {job_id!r}.")
        try:
            data = self.store.get(self._manifest_key(job_id))
        except ObjectNotFound:
            raise JobNotFound(f"There is no video with id {job_id!r}.") from None
        manifest = JobManifest.model_validate_json(data)
        if tenant is not None and manifest.tenant != tenant:
            raise JobNotFound(f"There is no video with id {job_id!r}.")
        return manifest

    def update(self, job_id: str, *, status: JobStatus | None = None, **changes: Any) -> JobManifest:
        """Read-modify-write of the manifest, refusing transitions out of a terminal state."""
        manifest = self.get(job_id)
        if status is not None and status != manifest.status:
            if status not in _TRANSITIONS[manifest.status]:
                raise InvalidTransition(f"job {job_id} cannot go from {manifest.status} to {status}")
            changes["status"] = status
            if status in TERMINAL_STATUSES:
                changes["completed_at"] = utcnow()
        changes["updated_at"] = utcnow()
        changes["revision"] = manifest.revision + 1  # every write: the SSE event id
        updated = manifest.model_copy(update=changes)
        self.save(updated)
        if updated.status in TERMINAL_STATUSES and manifest.status not in TERMINAL_STATUSES:
            self.store.delete(tenant_active_key(updated.tenant, job_id))
            self.store.delete(updated.queue_key or queue_key(updated.created_at, job_id))
            if updated.tenant_slot is not None:
                self.slots.release(updated.tenant, job_id, updated.tenant_slot)
        return updated

    def complete(self, job_id: str, result: JobResult, **changes: Any) -> JobManifest:
        """`changes`: written in the same step (the runner's pending `webhook`)."""
        return self.update(job_id, status="completed", stage="done", progress=100, result=result, **changes)

    def fail(self, job_id: str, problem: dict[str, Any], **changes: Any) -> JobManifest:
        return self.update(job_id, status="failed", error=Problem.model_validate(problem), **changes)

    def _cancel_key(self, job_id: str) -> str:
        return f"jobs/{job_id}/canceled"

    def cancel(self, job_id: str) -> JobManifest:
        """Cancel a queued or running job: its record stays (status canceled), its photos and any output
        are erased. InvalidTransition if it already ended.

        A marker beside the manifest is written first: the manifest is rewritten read-modify-write by
        the job's runner and generator too, so one of their writes racing this one could bring the old
        status back; they check `cancel_requested` after writing and put it right (`settle_cancel`).
        """
        manifest = self.get(job_id)
        if manifest.status in TERMINAL_STATUSES:
            raise InvalidTransition(f"job {job_id} cannot be canceled: it is {manifest.status}")
        self.store.put(self._cancel_key(job_id), b"", "application/octet-stream")
        return self.settle_cancel(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        """Whether the job was canceled (by any replica); one existence check, no manifest read."""
        return self.store.exists(self._cancel_key(job_id))

    def settle_cancel(self, job_id: str) -> JobManifest:
        """Make a canceled job look canceled: the status (again, if a racing write of its runner brought
        another back, even `completed`), its photos and outputs erased. Idempotent."""
        manifest = self.get(job_id)
        if manifest.status in ("queued", "in_progress"):
            manifest = self.update(job_id, status="canceled")
        elif manifest.status != "canceled":  # completed just before the marker: the cancel wins
            self.save(manifest.model_copy(update={"status": "canceled", "completed_at": utcnow()}))
            manifest = self.update(job_id, result=None)  # a second write, so it counts as a change
        self.store.delete_prefix(f"inputs/{job_id}/")
        self.store.delete_prefix(f"outputs/{job_id}/")
        return manifest

    def _lease_key(self, job_id: str) -> str:
        return f"jobs/{job_id}/lease.json"

    def write_lease(self, job_id: str, owner: str, until: datetime, handed_back: int | None = None) -> Lease:
        lease = Lease(owner=owner, until=until, handed_back=handed_back)
        self.store.put(self._lease_key(job_id), lease.model_dump_json().encode(), "application/json")
        return lease

    def holds_lease(self, job_id: str, owner: str) -> bool:
        """Whether `owner` still runs the job: its lease names it and was not given back."""
        lease = self.read_lease(job_id)
        return lease is not None and lease.owner == owner and lease.handed_back is None

    def read_lease(self, job_id: str) -> Lease | None:
        try:
            return Lease.model_validate_json(self.store.get(self._lease_key(job_id)))
        except (ObjectNotFound, ValueError):
            return None

    def release_lease(self, job_id: str) -> None:
        self.store.delete(self._lease_key(job_id))

    def write_webhook_claim(self, job_id: str, owner: str, until: datetime) -> Lease:
        """Mark the job's webhook pending, delivered by `owner` until `until` (then anyone may)."""
        lease = Lease(owner=owner, until=until)
        self.store.put(webhook_pending_key(job_id), lease.model_dump_json().encode(), "application/json")
        return lease

    def read_webhook_claim(self, job_id: str) -> Lease | None:
        try:
            return Lease.model_validate_json(self.store.get(webhook_pending_key(job_id)))
        except (ObjectNotFound, ValueError):
            return None

    def clear_webhook_claim(self, job_id: str) -> None:
        """The webhook has its outcome (or there is none to send): nothing pending any more."""
        self.store.delete(webhook_pending_key(job_id))

    def pending_webhooks(self) -> list[str]:
        """Ids of the jobs whose webhook is still pending (one listing)."""
        return [key[len(WEBHOOKS_PENDING_PREFIX) :] for key in self.store.list(WEBHOOKS_PENDING_PREFIX)]

    def delete(self, job_id: str) -> int:
        """Erase everything the job owns (inputs, outputs, the manifest, then its tenant markers);
        the audit record stays."""
        manifest = self.get(job_id)
        erased = sum(self.store.delete_prefix(prefix) for prefix in reversed(job_prefixes(job_id)))
        self.store.delete(tenant_active_key(manifest.tenant, job_id))
        self.store.delete(manifest.queue_key or queue_key(manifest.created_at, job_id))
        if manifest.tenant_slot is not None:
            self.slots.release(manifest.tenant, job_id, manifest.tenant_slot)
        self.store.delete(
            manifest.index_key or tenant_index_key(manifest.tenant, manifest.created_at, job_id)
        )
        return erased

    def list_tenant(
        self, tenant: str, limit: int = 20, cursor: str | None = None
    ) -> tuple[list[JobManifest], str | None]:
        """One page of the tenant's jobs, newest first, and the cursor of the next page (None at the end)."""
        prefix = f"{TENANTS_PREFIX}{tenant}/videos/"
        after = decode_cursor(cursor) if cursor else None
        page: list[JobManifest] = []
        last_name: str | None = None
        for key in self.store.list(prefix):
            name = key[len(prefix) :]
            if after is not None and name <= after:
                continue
            if len(page) == limit:
                return page, encode_cursor(last_name) if last_name else None
            job_id = name.partition("-")[2]
            try:
                page.append(self.get(job_id, tenant))
            except JobNotFound:  # erased (or expired by a lifecycle rule) without its marker
                self.store.delete(key)
                continue
            last_name = name
        return page, None

    def active(self, tenant: str, verify: bool = False) -> list[str]:
        """Ids of the tenant's queued and running jobs, from the markers; `verify` reads each manifest
        and prunes markers of jobs that ended or are gone."""
        prefix = f"{TENANTS_PREFIX}{tenant}/active/"
        ids = [key[len(prefix) :] for key in self.store.list(prefix)]
        if not verify:
            return ids
        alive = []
        for job_id in ids:
            try:
                if self.get(job_id, tenant).status not in TERMINAL_STATUSES:
                    alive.append(job_id)
                    continue
            except (JobNotFound, ValueError):
                pass
            self.store.delete(tenant_active_key(tenant, job_id))
        return alive

    def queued(self) -> list[JobManifest]:
        """Every unfinished job, oldest first, from the global queue markers (one listing plus a read per
        unfinished job, not a scan of jobs/); markers of jobs that ended or are gone are pruned."""
        found = []
        now_us = utcnow().timestamp() * 1e6
        for key in self.store.list(QUEUE_PREFIX):
            micros, _, job_id = key[len(QUEUE_PREFIX) :].partition("-")
            try:
                manifest: JobManifest | None = self.get(job_id)
            except (JobNotFound, ValueError):
                manifest = None
            if manifest is None and micros.isdigit() and now_us - int(micros) < 60e6:
                continue  # being created: the marker is written before the manifest
            if manifest is None or manifest.status in TERMINAL_STATUSES:
                self.store.delete(key)
                continue
            found.append(manifest)
        return found

    def erase_inputs(self, job_id: str) -> int:
        return self.store.delete_prefix(f"inputs/{job_id}/")

    def manifests(self) -> list[JobManifest]:
        """Every job's manifest (a scan of jobs/: for sweeps and recovery, not for hot paths)."""
        found = []
        for key in self.store.list("jobs/"):
            if key.endswith("/manifest.json"):
                try:
                    found.append(JobManifest.model_validate(json.loads(self.store.get(key))))
                except (ObjectNotFound, ValueError):
                    continue
        return found

    def unfinished(self) -> list[JobManifest]:
        """Jobs that were accepted but not finished: candidates for recovery after a restart."""
        return [m for m in self.manifests() if m.status not in TERMINAL_STATUSES]
