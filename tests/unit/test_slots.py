"""The per-tenant job cap's slots on a real local store: conditional creates have one winner among
concurrent callers, a cap of N admits N jobs however many race for it, slots come back when jobs end,
stale slots are reclaimed, and a slot is freed by exactly one party."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from kiss_core.jobs.slots import ADMISSION_GRACE, LOCK_TTL, JobState, TenantSlots
from kiss_core.jobs.store import JobStore
from kiss_core.keys import tenant_slot_key, tenant_slot_released_key
from kiss_core.schemas import SubjectAnalysis, VideoParams, utcnow
from kiss_core.storage import LocalDirStore
from tests.support.mean_face import mean_face_analysis

PHOTOS = {"a": b"A", "b": b"B"}


def _analysis(subject: str) -> SubjectAnalysis:
    return mean_face_analysis(subject, (480, 600), (140, 200, 340, 440), 0.0, 0.0)


def test_put_if_absent_has_one_winner_among_concurrent_callers(tmp_path: Path) -> None:
    store = LocalDirStore(tmp_path)
    start = threading.Barrier(16)

    def create(i: int) -> bool:
        start.wait()
        return store.put_if_absent("race/key", f"caller-{i}".encode())

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(create, range(16)))
    assert results.count(True) == 1
    assert store.get("race/key") == f"caller-{results.index(True)}".encode(), "the winner's whole content"
    assert store.list("race/") == ["race/key"], "no temporary files left behind"
    store.delete("race/key")
    assert store.put_if_absent("race/key", b"again")


def test_a_cap_of_three_admits_three_of_twenty_concurrent_claims(tmp_path: Path) -> None:
    store = LocalDirStore(tmp_path)
    slots = TenantSlots(store, lambda job_id: "unfinished")
    start = threading.Barrier(20)

    def claim(i: int) -> str | None:
        start.wait()
        return slots.claim("acme", f"video_{i:024x}", 3)

    with ThreadPoolExecutor(20) as pool:
        claimed = [s for s in pool.map(claim, range(20)) if s is not None]
    assert sorted(claimed) == [tenant_slot_key("acme", i) for i in range(3)]
    assert len(set(slots.held("acme"))) == 3
    assert slots.claim("globex", "video_" + "f" * 24, 3) is not None, "tenants do not share slots"


def test_slots_come_back_when_jobs_end_or_are_erased(tmp_path: Path) -> None:
    jobs = JobStore(LocalDirStore(tmp_path))
    held = []
    for i in range(2):
        job_id = f"video_{i:024x}"
        slot = jobs.slots.claim("acme", job_id, 2)
        assert slot is not None
        analyses = {s: _analysis(s) for s in "ab"}
        jobs.create(VideoParams(), PHOTOS, analyses, None, job_id, "acme", tenant_slot=slot)
        held.append(job_id)
    assert jobs.slots.claim("acme", "video_" + "9" * 24, 2) is None, "both slots hold unfinished jobs"

    jobs.fail(held[0], {"type": "t", "title": "t", "status": 500, "detail": "d", "code": "x"})
    assert jobs.slots.held("acme") == [held[1]]
    third = jobs.slots.claim("acme", "video_" + "9" * 24, 2)
    assert third is not None
    jobs.slots.release("acme", "video_" + "9" * 24, third)

    jobs.delete(held[1])  # DELETE of an unfinished job
    assert jobs.slots.held("acme") == []
    assert jobs.store.list("tenants/acme/slots-released/") == [], "release locks do not pile up"


def test_stale_slots_are_reclaimed_and_claims_in_admission_are_not(tmp_path: Path) -> None:
    store = LocalDirStore(tmp_path)
    states: dict[str, JobState] = {"video_ended": "finished", "video_admitting": "missing"}
    slots = TenantSlots(store, lambda job_id: states.get(job_id, "unfinished"))
    now = utcnow()
    store.put(
        tenant_slot_key("acme", 0),
        json.dumps({"job_id": "video_ended", "claimed_at": now.isoformat()}).encode(),
    )
    store.put(
        tenant_slot_key("acme", 1),
        json.dumps({"job_id": "video_admitting", "claimed_at": now.isoformat()}).encode(),
    )
    # The ended job's slot was left behind (its replica died before releasing it): reclaimed.
    assert slots.claim("acme", "video_new", 2) == tenant_slot_key("acme", 0)
    # A job still in admission (no manifest yet) keeps its slot ...
    assert slots.claim("acme", "video_newer", 2) is None
    # ... unless its admission is older than the grace: its replica died before storing the job.
    old = (now - ADMISSION_GRACE - timedelta(seconds=1)).isoformat()
    store.put(
        tenant_slot_key("acme", 1), json.dumps({"job_id": "video_admitting", "claimed_at": old}).encode()
    )
    assert slots.claim("acme", "video_newer", 2) == tenant_slot_key("acme", 1)


def test_a_slot_is_freed_by_one_party_and_a_dead_lock_expires(tmp_path: Path) -> None:
    store = LocalDirStore(tmp_path)
    slots = TenantSlots(store, lambda job_id: "finished")
    key = slots.claim("acme", "video_a", 1)
    assert key is not None
    lock = f"{tenant_slot_released_key('acme', 'video_a')}.0"

    store.put(lock, utcnow().isoformat().encode())  # another party is freeing it right now
    assert slots.release("acme", "video_a", key) is False
    assert slots.held("acme") == ["video_a"], "left to the lock's holder"

    store.put(lock, (utcnow() - LOCK_TTL - timedelta(seconds=1)).isoformat().encode())  # its holder died
    assert slots.release("acme", "video_a", key) is True
    assert slots.held("acme") == [] and store.list("tenants/acme/slots-released/") == []

    other = slots.claim("acme", "video_b", 1)
    assert slots.release("acme", "video_a", other) is True  # a late release of the old job ...
    assert slots.held("acme") == ["video_b"], "... leaves the slot's new holder alone"
