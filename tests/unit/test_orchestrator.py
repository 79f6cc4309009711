"""Job admission and the job runner with the real stages run in-process (no Ray), on a local store."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from kiss_core.errors import (
    AttemptSuperseded,
    ConsentRequired,
    FaceNotFound,
    GenerationError,
    ImageTooLarge,
    JobNotFound,
)
from kiss_core.faces.synthetic import synthetic_subject_png
from kiss_core.jobs.admission import JobAdmission
from kiss_core.jobs.audit import AuditLog
from kiss_core.jobs.runner import JobRunner
from kiss_core.jobs.stages import InProcessStages
from kiss_core.jobs.store import InvalidTransition, JobStore
from kiss_core.schemas import (
    Attestation,
    JobManifest,
    JobResult,
    StageRequest,
    SubjectConsent,
    VideoParams,
    utcnow,
)
from kiss_core.settings import JobSettings, Settings
from kiss_core.storage import LocalDirStore

PARAMS = VideoParams(style="peck", seconds=1, fps=8, size="256x144")
ATTESTED = Attestation(a=SubjectConsent(consented=True, reference="rec-a"), b=SubjectConsent(consented=True))


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    return {"a": synthetic_subject_png(0), "b": synthetic_subject_png(1)}


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


@pytest.fixture
def store(tmp_path: Path) -> LocalDirStore:
    return LocalDirStore(tmp_path)


class FlakyStages(InProcessStages):
    """Fault injection around the real stages: the first `failures` generations raise `error`."""

    def __init__(self, settings: Settings, store: LocalDirStore, failures: int, error: Exception):
        super().__init__(settings, store)
        self.failures = failures
        self.error = error
        self.calls = 0

    async def generate(self, request: StageRequest, conditioning: Any) -> JobResult:
        self.calls += 1
        if self.calls <= self.failures:
            await conditioning  # consume the conditioning like a real generator would
            raise self.error
        return await super().generate(request, conditioning)


def _gradient_png() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (200, 1, 3))).save(buffer, "PNG")
    return buffer.getvalue()


def _admission(settings: Settings, store: LocalDirStore, stages: Any) -> JobAdmission:
    return JobAdmission(JobStore(store), stages, settings.limits)


def _runner(store: LocalDirStore, stages: Any, owner: str | None = None, lease_s: float = 30.0) -> JobRunner:
    return JobRunner(JobStore(store), stages, JobSettings(max_attempts=3, lease_s=lease_s), owner=owner)


def test_submit_persists_inputs_and_manifest_then_run_completes(
    settings: Settings, store: LocalDirStore, photos: dict[str, bytes]
) -> None:
    stages = InProcessStages(settings, store)
    manifest = asyncio.run(_admission(settings, store, stages).submit(PARAMS, photos, ATTESTED))
    assert manifest.status == "queued"
    assert store.get(manifest.input_keys["a"]) == photos["a"]
    assert JobStore(store).get(manifest.id).status == "queued"
    assert [s.subject for s in manifest.subjects] == ["a", "b"]

    done = asyncio.run(_runner(store, stages).run(manifest.id))
    assert done.status == "completed" and done.attempts == 1 and done.progress == 100
    assert done.result is not None and set(done.result.keys) == {"video", "thumbnail", "image"}
    assert all(store.exists(key) for key in done.result.keys.values())
    assert done.result.frames == 8


def test_submit_refuses_a_photo_without_face(
    settings: Settings, store: LocalDirStore, photos: dict[str, bytes]
) -> None:
    admission = _admission(settings, store, InProcessStages(settings, store))
    with pytest.raises(FaceNotFound) as caught:
        asyncio.run(admission.submit(PARAMS, {"a": photos["a"], "b": _gradient_png()}, ATTESTED))
    assert caught.value.subject == "b"
    assert store.list("jobs/") == [] and store.list("audit/") == [], "a refused request leaves nothing behind"


def test_submit_refuses_oversized_upload(
    settings: Settings, store: LocalDirStore, photos: dict[str, bytes]
) -> None:
    admission = _admission(settings, store, InProcessStages(settings, store))
    huge = b"\xff" * (settings.limits.max_upload_bytes + 1)
    with pytest.raises(ImageTooLarge):
        asyncio.run(admission.submit(PARAMS, {"a": huge, "b": photos["b"]}, ATTESTED))


def test_transient_failure_is_retried(
    settings: Settings, store: LocalDirStore, photos: dict[str, bytes]
) -> None:
    stages = FlakyStages(settings, store, failures=1, error=ConnectionError("replica died"))
    manifest = asyncio.run(_admission(settings, store, stages).submit(PARAMS, photos, ATTESTED))
    done = asyncio.run(_runner(store, stages).run(manifest.id))
    assert done.status == "completed" and done.attempts == 2 and stages.calls == 2


def test_deterministic_failure_fails_without_retry(
    settings: Settings, store: LocalDirStore, photos: dict[str, bytes]
) -> None:
    stages = FlakyStages(settings, store, failures=5, error=GenerationError("model produced NaNs"))
    manifest = asyncio.run(_admission(settings, store, stages).submit(PARAMS, photos, ATTESTED))
    done = asyncio.run(_runner(store, stages).run(manifest.id))
    assert done.status == "failed" and stages.calls == 1
    assert done.error is not None and done.error.code == "generation_error"


def test_terminal_states_are_final_and_delete_erases(
    settings: Settings, store: LocalDirStore, photos: dict[str, bytes]
) -> None:
    jobs = JobStore(store)
    admission = _admission(settings, store, InProcessStages(settings, store))
    manifest = asyncio.run(admission.submit(PARAMS, photos, ATTESTED))
    jobs.update(manifest.id, status="canceled")
    with pytest.raises(InvalidTransition):
        jobs.update(manifest.id, status="in_progress")
    assert jobs.unfinished() == []
    assert jobs.delete(manifest.id) >= 3
    assert [
        k for prefix in ("jobs/", "inputs/", "outputs/") for k in store.list(f"{prefix}{manifest.id}/")
    ] == []
    with pytest.raises(JobNotFound):
        jobs.get(manifest.id)


@pytest.mark.parametrize(
    ("attestation", "subject"),
    [
        (None, "a"),
        (Attestation(a=SubjectConsent(consented=False), b=SubjectConsent(consented=True)), "a"),
        (Attestation(a=SubjectConsent(consented=True), b=SubjectConsent(consented=False)), "b"),
    ],
)
def test_submit_requires_consent_for_each_person(
    settings: Settings, store: LocalDirStore, photos: dict[str, bytes], attestation: Any, subject: str
) -> None:
    admission = _admission(settings, store, InProcessStages(settings, store))
    with pytest.raises(ConsentRequired) as caught:
        asyncio.run(admission.submit(PARAMS, photos, attestation))
    assert caught.value.subject == subject
    assert store.list("") == [], "nothing is analysed or stored without consent"


def test_accepted_attestation_is_audited_and_outlives_the_job(
    settings: Settings, store: LocalDirStore, photos: dict[str, bytes]
) -> None:
    admission = _admission(settings, store, InProcessStages(settings, store))
    manifest = asyncio.run(admission.submit(PARAMS, photos, ATTESTED))
    JobStore(store).delete(manifest.id)
    (record,) = AuditLog(store).for_job(manifest.id)
    assert record.photo_sha256 == {s: hashlib.sha256(photos[s]).hexdigest() for s in "ab"}
    assert record.consent == ATTESTED and record.consent.a.reference == "rec-a"
    assert record.policy_version and record.tenant == "public"
    stored = b"".join(store.get(k) for k in store.list("audit/"))
    assert photos["a"][:64] not in stored, "the audit trail keeps hashes, never photos"


def test_recover_resumes_a_job_whose_runner_died(
    settings: Settings, store: LocalDirStore, photos: dict[str, bytes]
) -> None:
    first = _admission(settings, store, InProcessStages(settings, store))
    manifest = asyncio.run(first.submit(PARAMS, photos, ATTESTED))
    jobs = JobStore(store)
    jobs.update(manifest.id, status="in_progress", attempts=1)
    jobs.write_lease(manifest.id, "a-replica-that-died", utcnow() - timedelta(seconds=1))

    async def recover_and_wait() -> tuple[list[str], JobManifest]:
        survivor = _runner(store, InProcessStages(settings, store), owner="survivor")
        started = await survivor.recover()
        return started, await survivor.start(manifest.id)

    started, done = asyncio.run(recover_and_wait())
    assert started == [manifest.id]
    assert done.status == "completed" and done.attempts == 2
    assert jobs.read_lease(manifest.id) is None, "the lease is released once the job is done"


def test_recover_leaves_jobs_with_a_live_lease_or_just_accepted(
    settings: Settings, store: LocalDirStore, photos: dict[str, bytes]
) -> None:
    admission = _admission(settings, store, InProcessStages(settings, store))
    leased = asyncio.run(admission.submit(PARAMS, photos, ATTESTED))
    fresh = asyncio.run(admission.submit(PARAMS, photos, ATTESTED))
    jobs = JobStore(store)
    jobs.write_lease(leased.id, "a-live-replica", utcnow() + timedelta(seconds=30))
    other = _runner(store, InProcessStages(settings, store), owner="other", lease_s=30)
    assert asyncio.run(other.recover()) == []
    assert jobs.get(leased.id).status == jobs.get(fresh.id).status == "queued"


async def _handed_back_while_running(
    settings: Settings, store: LocalDirStore, photos: dict[str, bytes]
) -> tuple[JobManifest, list[str]]:
    """A job submitted, started by the runner "leaving" (60 s lease) and handed back once in_progress."""
    stages = InProcessStages(settings, store)
    leaving = _runner(store, stages, owner="leaving", lease_s=60)
    manifest = await _admission(settings, store, stages).submit(PARAMS, photos, ATTESTED)
    leaving.start(manifest.id)
    while (await asyncio.to_thread(JobStore(store).get, manifest.id)).status != "in_progress":
        await asyncio.sleep(0.01)
    return manifest, await leaving.hand_back()


def test_hand_back_gives_a_running_job_to_another_replica_at_once(
    settings: Settings, store: LocalDirStore, photos: dict[str, bytes]
) -> None:
    """Graceful shutdown: the running job stops, goes back to queued without spending an attempt,
    and another replica's next recovery pass takes it although the lease (60 s) has not lapsed."""
    jobs = JobStore(store)

    async def scenario() -> tuple[list[str], JobManifest, list[str], JobManifest]:
        manifest, handed = await _handed_back_while_running(settings, store, photos)
        back = await asyncio.to_thread(jobs.get, manifest.id)
        staying = _runner(store, InProcessStages(settings, store), owner="staying", lease_s=60)
        started = await staying.recover()
        return handed, back, started, await staying.start(manifest.id)

    handed, back, started, done = asyncio.run(scenario())
    assert handed == [back.id] and back.status == "queued" and back.attempts == 0
    assert started == [back.id], "taken at once, not after the 60 s lease"
    assert done.status == "completed" and done.attempts == 1


def test_a_late_write_of_the_handed_back_attempt_does_not_make_the_next_runner_count_it(
    settings: Settings, store: LocalDirStore, photos: dict[str, bytes]
) -> None:
    """The generator of the attempt given back may still be rendering, and one progress write it read
    before the hand-back can land after it: the manifest says in_progress, attempt 1 again. The runner
    that takes over goes by the lease, which only runners write, and runs attempt 1 again."""
    jobs = JobStore(store)

    async def scenario() -> tuple[int | None, JobManifest]:
        manifest, _ = await _handed_back_while_running(settings, store, photos)
        lease = await asyncio.to_thread(jobs.read_lease, manifest.id)
        # The stopping generator's write, read before the hand-back: status and count put back.
        jobs.update(manifest.id, status="in_progress", stage="generation", attempts=1)
        staying = _runner(store, InProcessStages(settings, store), owner="staying", lease_s=60)
        assert await staying.recover() == [manifest.id]
        return (lease.handed_back if lease else None), await staying.start(manifest.id)

    handed_back, done = asyncio.run(scenario())
    assert handed_back == 1
    assert done.status == "completed" and done.attempts == 1


def test_a_runner_whose_lease_was_taken_over_leaves_it_and_its_attempt_stops(
    settings: Settings, store: LocalDirStore, photos: dict[str, bytes]
) -> None:
    """Storage away longer than the lease: another runner takes the job over. The first, back, does
    not take the lease back at its next renewal (every 0.2 s here); its render stops at its next
    progress report and it returns without failing, completing or releasing the taker's lease."""
    jobs = JobStore(store)

    class HeldStages(InProcessStages):
        """The real stages, generation held back until `go` is set (the renewals run meanwhile)."""

        go = asyncio.Event()

        async def generate(self, request: StageRequest, conditioning: Any) -> JobResult:
            await self.go.wait()
            return await super().generate(request, conditioning)

    async def scenario() -> tuple[str | None, JobManifest]:
        stages = HeldStages(settings, store)
        lapsed = _runner(store, stages, owner="lapsed", lease_s=0.6)
        manifest = await _admission(settings, store, stages).submit(PARAMS, photos, ATTESTED)
        task = lapsed.start(manifest.id)
        while (await asyncio.to_thread(jobs.get, manifest.id)).status != "in_progress":
            await asyncio.sleep(0.01)
        jobs.write_lease(manifest.id, "taker", utcnow() + timedelta(seconds=60))
        await asyncio.sleep(0.7)  # three renewal periods
        during = jobs.read_lease(manifest.id)
        stages.go.set()
        return (during.owner if during else None), await task

    owner_meanwhile, ended = asyncio.run(scenario())
    assert owner_meanwhile == "taker", "the lapsed runner's renewal took the lease back"
    assert ended.status == "in_progress" and ended.attempts == 1 and ended.result is None
    lease = jobs.read_lease(ended.id)
    assert lease is not None and lease.owner == "taker" and lease.handed_back is None


def test_a_render_whose_job_was_handed_back_stops_at_its_next_progress_report(
    settings: Settings, store: LocalDirStore, photos: dict[str, bytes]
) -> None:
    """A cancel cannot stop a render mid-step: the generator checks the lease at each progress report,
    so the attempt given back stops there, stores nothing and no longer writes the manifest."""
    jobs = JobStore(store)
    stages = InProcessStages(settings, store)
    manifest = asyncio.run(_admission(settings, store, stages).submit(PARAMS, photos, ATTESTED))
    manifest = jobs.update(manifest.id, status="in_progress", stage="identity", attempts=1)
    request = StageRequest.for_job(manifest, {}, runner="leaving")
    conditioning = stages.identity(request)
    jobs.write_lease(manifest.id, "leaving", utcnow() + timedelta(seconds=60), handed_back=1)
    with pytest.raises(AttemptSuperseded):
        stages.generation(request, conditioning)
    jobs.write_lease(manifest.id, "staying", utcnow() + timedelta(seconds=60))  # taken over: the same
    with pytest.raises(AttemptSuperseded):
        stages.generation(request, conditioning)
    assert jobs.get(manifest.id).revision == manifest.revision, "the manifest was written"
    assert not store.list(f"outputs/{manifest.id}"), "outputs were stored"
    jobs.write_lease(manifest.id, "leaving", utcnow() + timedelta(seconds=60))  # its own: it renders
    assert stages.generation(request, conditioning).keys
    assert jobs.get(manifest.id).progress > 0
