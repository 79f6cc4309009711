"""What the HTTP API does, without HTTP: create, list, read, download, delete and verify videos for a
caller, and the replica's background work (recovery of orphaned jobs, the retention sweep).

The stages are injected: the Ingress deployment passes Serve handles, a test may pass the in-process
stages (kiss_core.jobs.stages.InProcessStages).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from deployments import metrics
from deployments.http.forms import VideoForm
from kiss_core.errors import ContentNotReady, InvalidRequest, UnsupportedMedia
from kiss_core.generation.provenance.verify import sniff_mime, verify_media
from kiss_core.jobs.access import AccessControl, Principal
from kiss_core.jobs.admission import JobAdmission
from kiss_core.jobs.protocol import Stages
from kiss_core.jobs.retention import install_lifecycle, sweep
from kiss_core.jobs.runner import JobRunner
from kiss_core.jobs.store import JobStore
from kiss_core.jobs.webhooks import WebhookSender
from kiss_core.keys import OUTPUT_NAMES
from kiss_core.schemas import TERMINAL_STATUSES, JobManifest, JobResult, utcnow
from kiss_core.settings import Settings
from kiss_core.storage import open_store

log = logging.getLogger("kissgen.ingress")


@dataclass(frozen=True)
class Content:
    """A stored output: a presigned URL to redirect to, or (a store without URLs) the bytes themselves."""

    url: str | None
    data: bytes | None
    media_type: str


class VideoService:
    """The ingress's work for one replica: admission, the runner, and everything scoped to a tenant."""

    def __init__(self, settings: Settings, stages: Stages):
        self.settings = settings
        self.limits = settings.limits
        self.store = open_store(settings.storage)
        self.jobs = JobStore(self.store)
        # Reads access.keys_file; with access.required and no keys the replica refuses to start.
        self.access = AccessControl(settings.access)
        self.webhooks = WebhookSender(settings.webhooks, self.access.webhook_secret_for)
        self.runner = JobRunner(self.jobs, stages, settings.jobs, webhooks=self.webhooks)
        self.admission = JobAdmission(
            self.jobs,
            stages,
            settings.limits,
            running=self.runner.running,
            webhooks=self.webhooks,
            generator=settings.generator,
        )
        install_lifecycle(self.store, settings.retention)
        self._maintenance: asyncio.Task[None] | None = None

    def authorize(self, authorization: str | None, api_key: str | None) -> Principal:
        """The caller's tenant and limits; raises Unauthorized (401) or RateLimited (429)."""
        return self.access.authorize(authorization, api_key)

    async def create(
        self,
        caller: Principal,
        form: VideoForm,
        incoming_trace: dict[str, str],
        idempotency_key: str | None = None,
    ) -> tuple[JobManifest, bool]:
        """Admit the job and start it: (the job, whether it replays an earlier request with the key)."""
        scope: dict[str, Any] = {
            "tenant": caller.tenant,
            "max_tenant_jobs": caller.max_concurrent_jobs,
            "webhook_url": form.webhook_url,
        }
        job = (form.params, form.photos, form.attestation, incoming_trace)
        if idempotency_key is None:
            manifest, replayed = await self.admission.submit(*job, **scope), False
        else:
            manifest, replayed = await self.admission.submit_once(idempotency_key, *job, **scope)
        if not replayed:
            metrics.track_job(self.runner.start(manifest.id))
        return manifest, replayed

    async def list_jobs(self, caller: Principal, limit: int, cursor: str | None) -> dict[str, Any]:
        """One page of the caller's jobs, newest first, as the API shows it."""
        page, next_cursor = await asyncio.to_thread(self.jobs.list_tenant, caller.tenant, limit, cursor)
        return {
            "object": "list",
            "data": [m.public() for m in page],
            "has_more": next_cursor is not None,
            "next_cursor": next_cursor,
        }

    async def job(self, caller: Principal, video_id: str) -> JobManifest:
        return await asyncio.to_thread(self.jobs.get, video_id, caller.tenant)

    async def content(self, caller: Principal, video_id: str, variant: str) -> Content:
        if variant not in OUTPUT_NAMES:
            raise InvalidRequest(f"`variant` must be one of {', '.join(OUTPUT_NAMES)} but is {variant!r}")
        manifest = await self.job(caller, video_id)
        result: JobResult | None = manifest.result
        if manifest.status != "completed" or result is None or variant not in result.keys:
            raise ContentNotReady(f"video {video_id} is {manifest.status}; `{variant}` is not available")
        key = result.keys[variant]
        filename, content_type = OUTPUT_NAMES[variant]
        url = self.store.presigned_url(key, self.settings.storage.presign_seconds, f"{video_id}-{filename}")
        if url is not None:
            return Content(url, None, content_type)
        return Content(None, await asyncio.to_thread(self.store.get, key), content_type)

    async def delete(self, caller: Principal, video_id: str) -> None:
        """Cancel the job if it runs here, erase its inputs and outputs (the audit record stays)."""
        manifest = await self.job(caller, video_id)
        await self.runner.cancel(video_id)
        await asyncio.to_thread(self.jobs.delete, video_id)
        if manifest.status not in TERMINAL_STATUSES:
            metrics.record_job_status("canceled")

    async def verify(self, body: bytes) -> dict[str, Any]:
        """The C2PA manifest and watermark of an MP4 or JPEG; a damaged file is the client's problem."""
        try:
            mime = sniff_mime(body)
        except ValueError:
            raise UnsupportedMedia("send an MP4 video or a JPEG image as the request body") from None
        anchors = self.settings.provenance.c2pa.trust_anchors
        try:
            report = await asyncio.to_thread(verify_media, body, mime, anchors)
        except Exception as exc:
            raise UnsupportedMedia(f"the file could not be read as {mime}: {type(exc).__name__}") from None
        return report.model_dump(mode="json")

    def start_maintenance(self) -> None:
        """Recovery of orphaned jobs and the retention sweep, in the background of this replica's loop."""
        if self._maintenance is None or self._maintenance.done():
            self._maintenance = asyncio.get_running_loop().create_task(self._maintain_forever())

    async def hand_back(self) -> list[str]:
        """Graceful shutdown: stop the background work, then give this replica's jobs back at once."""
        if self._maintenance is not None:
            self._maintenance.cancel()  # must not pick the handed-back jobs up again
        return await self.runner.hand_back()

    async def _maintain_forever(self) -> None:
        last_sweep = float("-inf")
        loop = asyncio.get_running_loop()
        while True:
            try:
                for job_id in await self.runner.recover():
                    metrics.track_job(self.runner.start(job_id))  # the task recover() started
                if loop.time() - last_sweep >= self.settings.retention.sweep_interval_s:
                    last_sweep = loop.time()
                    report = await asyncio.to_thread(sweep, self.jobs, self.settings.retention, utcnow())
                    if report.jobs_erased or report.inputs_erased:
                        log.info("retention sweep: %s", report)
            except Exception:  # storage unreachable: try again at the next interval
                log.exception("job recovery or retention sweep failed")
            await asyncio.sleep(self.settings.jobs.recovery_interval_s)
