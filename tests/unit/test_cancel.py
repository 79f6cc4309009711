"""Cancel: the store keeps a canceled job's record and erases its photos and outputs; a job canceled by
another replica stops at its generator's next progress report, and its runner ends quietly (no retry,
no `failed`, no webhook), erasing outputs a generation stored after the cancel. Real stages, in-process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from kiss_core.faces.synthetic import synthetic_subject_png
from kiss_core.jobs.admission import JobAdmission
from kiss_core.jobs.runner import JobRunner
from kiss_core.jobs.stages import InProcessStages
from kiss_core.jobs.store import InvalidTransition, JobStore
from kiss_core.jobs.webhooks import WebhookSender, new_secret
from kiss_core.keys import output_key, tenant_active_key
from kiss_core.schemas import Attestation, JobManifest, JobResult, StageRequest, SubjectConsent, VideoParams
from kiss_core.settings import JobSettings, Settings, WebhookSettings
from kiss_core.storage import LocalDirStore

PARAMS = VideoParams(style="peck", seconds=1, fps=8, size="256x144")
ATTESTED = Attestation(a=SubjectConsent(consented=True), b=SubjectConsent(consented=True))
HOOK = "https://hooks.example/kiss"


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    return {"a": synthetic_subject_png(0), "b": synthetic_subject_png(1)}


@pytest.fixture
def store(tmp_path: Path) -> LocalDirStore:
    return LocalDirStore(tmp_path)


class Receiver:
    """The far end of webhooks, which cannot run here: an httpx transport that records what it got."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        import json

        self.events.append(json.loads(request.content))
        return httpx.Response(204)


def _runner(store: LocalDirStore, stages: Any, receiver: Receiver) -> JobRunner:
    webhooks = WebhookSender(
        WebhookSettings(secret=new_secret(), backoff_s=0.01),
        resolve=lambda host, port: ["93.184.216.34"],  # a public address; nothing is resolved for real
        transport=receiver.transport,
    )
    return JobRunner(JobStore(store), stages, JobSettings(max_attempts=3), owner="here", webhooks=webhooks)


async def _submit(
    settings: Settings, store: LocalDirStore, stages: Any, photos: dict[str, bytes]
) -> JobManifest:
    manifest = await JobAdmission(JobStore(store), stages, settings.limits).submit(PARAMS, photos, ATTESTED)
    # The webhook URL is set on the stored job directly: the submission-time URL check resolves DNS.
    return await asyncio.to_thread(JobStore(store).update, manifest.id, webhook_url=HOOK)


async def _run_and_settle(runner: JobRunner, job_id: str) -> JobManifest:
    """Run the job, then let every background task (webhook deliveries) finish."""
    done = await runner.run(job_id)
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    await asyncio.gather(*others)
    return done


class CanceledElsewhere(InProcessStages):
    """The real stages; another replica's JobStore cancels the job at a chosen point of `generate`."""

    def __init__(self, settings: Settings, store: LocalDirStore, when: str):
        super().__init__(settings, store)
        self.elsewhere = JobStore(store)
        self.when = when
        self.calls = 0

    async def generate(self, request: StageRequest, conditioning: Any) -> JobResult:
        self.calls += 1
        if self.when == "before_generation":  # the generator's first progress report sees it
            resolved = await conditioning
            await asyncio.to_thread(self.elsewhere.cancel, request.job_id)
            return await asyncio.to_thread(self.generation, request, resolved)
        result = await super().generate(request, conditioning)  # outputs stored, not yet completed
        await asyncio.to_thread(self.elsewhere.cancel, request.job_id)
        return result


def test_cancel_keeps_the_record_and_erases_photos_and_outputs(
    settings: Settings, store: LocalDirStore, photos: dict[str, bytes]
) -> None:
    jobs = JobStore(store)
    stages = InProcessStages(settings, store)
    manifest = asyncio.run(JobAdmission(jobs, stages, settings.limits).submit(PARAMS, photos, ATTESTED))
    store.put(output_key(manifest.id, "video"), b"partial", "video/mp4")

    canceled = jobs.cancel(manifest.id)

    assert canceled.status == "canceled" and canceled.completed_at is not None
    assert jobs.get(manifest.id).status == "canceled", "the record stays"
    assert store.list(f"inputs/{manifest.id}/") == [] and store.list(f"outputs/{manifest.id}/") == []
    assert not store.exists(tenant_active_key("public", manifest.id))
    assert jobs.cancel_requested(manifest.id) and jobs.unfinished() == []
    with pytest.raises(InvalidTransition):
        jobs.cancel(manifest.id)


def test_a_write_that_raced_the_cancel_is_put_right(
    settings: Settings, store: LocalDirStore, photos: dict[str, bytes]
) -> None:
    """A runner read the manifest before the cancel and wrote it back after: settle_cancel restores it,
    also over a `completed` that won the race, and erases what that run stored."""
    jobs = JobStore(store)
    stages = InProcessStages(settings, store)
    manifest = asyncio.run(JobAdmission(jobs, stages, settings.limits).submit(PARAMS, photos, ATTESTED))
    running = jobs.update(manifest.id, status="in_progress", stage="generation", progress=40)
    jobs.cancel(manifest.id)
    jobs.save(running)  # the stale write
    assert jobs.get(manifest.id).status == "in_progress"
    assert jobs.settle_cancel(manifest.id).status == "canceled"

    stale = running.model_copy(update={"status": "completed", "progress": 100})
    jobs.save(stale)
    store.put(output_key(manifest.id, "image"), b"late", "image/jpeg")
    settled = jobs.settle_cancel(manifest.id)
    assert settled.status == "canceled" and settled.result is None
    assert store.list(f"outputs/{manifest.id}/") == []


def test_a_generation_canceled_elsewhere_stops_and_its_runner_ends_quietly(
    settings: Settings, store: LocalDirStore, photos: dict[str, bytes]
) -> None:
    receiver = Receiver()
    stages = CanceledElsewhere(settings, store, when="before_generation")

    async def scenario() -> JobManifest:
        manifest = await _submit(settings, store, stages, photos)
        return await _run_and_settle(_runner(store, stages, receiver), manifest.id)

    done = asyncio.run(scenario())
    assert done.status == "canceled" and done.error is None and done.result is None
    assert stages.calls == 1, "a cancel is not retried"
    assert done.attempts == 1
    assert store.list(f"outputs/{done.id}/") == [] and store.list(f"inputs/{done.id}/") == []
    assert JobStore(store).get(done.id).status == "canceled"
    assert receiver.events == [], "no webhook for a canceled job (there is no video.canceled event)"


def test_outputs_of_a_generation_that_finished_after_the_cancel_are_erased(
    settings: Settings, store: LocalDirStore, photos: dict[str, bytes]
) -> None:
    receiver = Receiver()
    stages = CanceledElsewhere(settings, store, when="after_generation")

    async def scenario() -> JobManifest:
        manifest = await _submit(settings, store, stages, photos)
        return await _run_and_settle(_runner(store, stages, receiver), manifest.id)

    done = asyncio.run(scenario())
    assert done.status == "canceled" and done.result is None
    assert store.list(f"outputs/{done.id}/") == [], "complete() refused: the stored outputs are erased"
    assert receiver.events == []


def test_the_receiver_does_get_a_completed_jobs_webhook(
    settings: Settings, store: LocalDirStore, photos: dict[str, bytes]
) -> None:
    """The control for the two tests above: the same runner and receiver, no cancel, one event."""
    receiver = Receiver()
    stages = InProcessStages(settings, store)

    async def scenario() -> JobManifest:
        manifest = await _submit(settings, store, stages, photos)
        return await _run_and_settle(_runner(store, stages, receiver), manifest.id)

    done = asyncio.run(scenario())
    assert done.status == "completed"
    assert [e["type"] for e in receiver.events] == ["video.completed"]


def test_a_job_canceled_while_queued_never_starts(
    settings: Settings, store: LocalDirStore, photos: dict[str, bytes]
) -> None:
    receiver = Receiver()
    stages = CanceledElsewhere(settings, store, when="before_generation")

    async def scenario() -> JobManifest:
        manifest = await _submit(settings, store, stages, photos)
        await asyncio.to_thread(JobStore(store).cancel, manifest.id)
        return await _run_and_settle(_runner(store, stages, receiver), manifest.id)

    done = asyncio.run(scenario())
    assert done.status == "canceled" and done.attempts == 0 and stages.calls == 0
    assert receiver.events == []
