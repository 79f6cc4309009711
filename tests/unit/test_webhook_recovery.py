"""Durable webhooks without Ray: the terminal write records the delivery as pending and a claim under
webhooks/pending/ outlives the replica that ended the job; another runner's recovery delivers it, with
the same webhook-id, once the claim lapsed, and not before."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from kiss_core.faces.synthetic import synthetic_subject_png
from kiss_core.jobs.admission import JobAdmission
from kiss_core.jobs.runner import JobRunner
from kiss_core.jobs.stages import InProcessStages
from kiss_core.jobs.store import JobStore
from kiss_core.jobs.webhooks import WebhookSender, message_id, new_secret
from kiss_core.schemas import Attestation, SubjectConsent, VideoParams
from kiss_core.settings import JobSettings, Settings, WebhookSettings
from kiss_core.storage import LocalDirStore

PARAMS = VideoParams(style="peck", seconds=1, fps=8, size="256x144")
ATTESTED = Attestation(a=SubjectConsent(consented=True), b=SubjectConsent(consented=True))
HOOK = "https://hooks.example/kiss"
SECRET = new_secret()


class Receiver:
    """The far end of webhooks, which cannot run here: an httpx transport that records each request;
    `stall` keeps every request waiting (a receiver that never answers)."""

    def __init__(self, stall: bool = False) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.stall = stall
        self.transport = httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.headers["webhook-id"], json.loads(request.content)))
        if self.stall:
            await asyncio.Event().wait()
        return httpx.Response(204)


def _runner(store: LocalDirStore, settings: Settings, owner: str, receiver: Receiver) -> JobRunner:
    webhooks = WebhookSender(
        WebhookSettings(secret=SECRET, backoff_s=0.01),
        resolve=lambda host, port: ["93.184.216.34"],  # a public address; nothing is resolved for real
        transport=receiver.transport,
    )
    stages = InProcessStages(settings, store)
    return JobRunner(JobStore(store), stages, JobSettings(lease_s=1.0), owner=owner, webhooks=webhooks)


def test_a_webhook_whose_replica_died_is_delivered_by_another_with_the_same_id(tmp_path: Path) -> None:
    settings = Settings()
    store = LocalDirStore(tmp_path)
    jobs = JobStore(store)
    stalled, answering = Receiver(stall=True), Receiver()
    first = _runner(store, settings, "replica-a", stalled)
    second = _runner(store, settings, "replica-b", answering)

    async def scenario() -> None:
        photos = {"a": synthetic_subject_png(0), "b": synthetic_subject_png(1)}
        admission = JobAdmission(jobs, first.stages, settings.limits)
        manifest = await admission.submit(PARAMS, photos, ATTESTED)
        manifest = await asyncio.to_thread(jobs.update, manifest.id, webhook_url=HOOK)

        done = await first.run(manifest.id)
        assert done.status == "completed"
        assert done.webhook is not None and done.webhook.status == "pending", "recorded by the terminal write"
        assert jobs.pending_webhooks() == [manifest.id]
        while not stalled.requests:  # the first attempt is on its way, and stalls
            await asyncio.sleep(0.01)

        # While replica a holds its claim (renewing it), b leaves the delivery alone.
        await asyncio.sleep(1.2)
        assert await second.recover_webhooks() == []

        # Replica a dies mid-delivery: its task ends without an outcome and stops renewing the claim.
        delivery = first._deliveries[manifest.id]
        delivery.cancel()
        await asyncio.gather(delivery, return_exceptions=True)
        assert jobs.pending_webhooks() == [manifest.id], "the claim outlives the replica"
        await asyncio.sleep(1.1)  # past the lease

        assert await second.recover_webhooks() == [manifest.id]
        await asyncio.gather(*second._deliveries.values())

        (sent, _), (resent, event) = stalled.requests[0], answering.requests[0]
        assert sent == resent == message_id(manifest.id, "video.completed")
        assert event["type"] == "video.completed" and event["data"]["id"] == manifest.id
        assert len(answering.requests) == 1
        final = jobs.get(manifest.id).webhook
        assert final is not None and final.status == "delivered" and final.message_id == sent
        assert jobs.pending_webhooks() == [], "the claim is gone once the outcome is recorded"
        assert await second.recover_webhooks() == []

    asyncio.run(scenario())


def test_claims_of_jobs_without_a_pending_webhook_are_dropped(tmp_path: Path) -> None:
    settings = Settings()
    store = LocalDirStore(tmp_path)
    jobs = JobStore(store)
    runner = _runner(store, settings, "replica-b", Receiver())

    async def scenario() -> None:
        photos = {"a": synthetic_subject_png(0), "b": synthetic_subject_png(1)}
        admission = JobAdmission(jobs, runner.stages, settings.limits)
        queued = await admission.submit(PARAMS, photos, ATTESTED)
        canceled = await admission.submit(PARAMS, photos, ATTESTED)
        await asyncio.to_thread(jobs.cancel, canceled.id)
        past = queued.created_at.replace(year=2000)
        for job_id in (queued.id, canceled.id, "video_0123456789abcdef01234567"):  # the last one is gone
            jobs.write_webhook_claim(job_id, "replica-a", past)
        assert await runner.recover_webhooks() == []
        assert jobs.pending_webhooks() == [queued.id], "an unfinished job's claim waits for its end"

    asyncio.run(scenario())
