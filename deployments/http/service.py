"""What the HTTP API does, without HTTP: create, list, read, download, cancel, delete and verify videos
for a caller, check one photo (analyses), take abuse reports, describe what this service offers
(capabilities), and the replica's background work (recovery of orphaned jobs, the retention sweep).

The stages are injected: the Ingress deployment passes Serve handles, a test may pass the in-process
stages (kiss_core.jobs.stages.InProcessStages).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, get_args

from deployments import metrics
from deployments.http.forms import VideoForm
from kiss_core.errors import (
    ContentNotReady,
    InvalidRequest,
    JobFinished,
    ModelDirectoryError,
    UnsupportedMedia,
)
from kiss_core.generation.backends.loras import discover_loras
from kiss_core.generation.backends.weights import configured_backends
from kiss_core.generation.provenance.verify import sniff_mime, verify_media
from kiss_core.jobs.access import AccessControl, Principal
from kiss_core.jobs.admission import JobAdmission
from kiss_core.jobs.audit import CONSENT_TEXT
from kiss_core.jobs.protocol import Stages
from kiss_core.jobs.reports import REPORT_REASONS, ReportLog, ReportRecord, ReportRequest
from kiss_core.jobs.retention import install_lifecycle, sweep
from kiss_core.jobs.runner import JobRunner
from kiss_core.jobs.store import InvalidTransition, JobStore
from kiss_core.jobs.webhooks import WebhookSender
from kiss_core.keys import OUTPUT_NAMES, output_key
from kiss_core.schemas import (
    TERMINAL_STATUSES,
    Background,
    JobManifest,
    JobResult,
    Style,
    SubjectSummary,
    VideoParams,
    utcnow,
)
from kiss_core.settings import Settings
from kiss_core.storage import open_store

log = logging.getLogger("kissgen.ingress")

# The frame sizes the page offers per shape (VideoParams: divisible by 16): Wan's 480p in both
# orientations, and a square of about the same pixel count.
SHAPES = {"landscape": "832x480", "portrait": "480x832", "square": "640x640"}
QUALITIES = ["standard", "fast"]


def loaded_backends(settings: Settings, generators: Iterable[str] = ()) -> list[str]:
    """The video backends this service runs: the preview always, each diffusion backend the settings
    load (`generator.enabled`, or those whose directory is under model_root) and each one a generator
    deployment was built for. A model directory the ingress cannot judge counts as not loaded here (the
    generator replica refuses to start with the reason)."""
    try:
        diffusion = list(configured_backends(settings.generator))
    except ModelDirectoryError as exc:
        log.warning("capabilities: diffusion backends unknown: %s", exc)
        diffusion = []
    return list(dict.fromkeys(["preview", *diffusion, *generators]))


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
            faces=settings.faces,
        )
        self.reports = ReportLog(self.store)
        # The ingress (deployments.ingress) replaces this with what its generator deployments hold.
        self.backends = loaded_backends(settings)
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
        if variant == "progress":  # the latest latent preview of a diffusion job, while it is made
            if manifest.progress_preview is None or manifest.status in ("failed", "canceled"):
                raise ContentNotReady(f"video {video_id} has no progress preview ({manifest.status})")
            key = output_key(video_id, "progress")
        elif manifest.status != "completed" or result is None or variant not in result.keys:
            raise ContentNotReady(f"video {video_id} is {manifest.status}; `{variant}` is not available")
        else:
            key = result.keys[variant]
        filename, content_type = OUTPUT_NAMES[variant]
        url = self.store.presigned_url(key, self.settings.storage.presign_seconds, f"{video_id}-{filename}")
        if url is not None:
            return Content(url, None, content_type)
        return Content(None, await asyncio.to_thread(self.store.get, key), content_type)

    async def analyze(
        self, caller: Principal, photo: bytes, subject: str, incoming_trace: dict[str, str]
    ) -> dict[str, Any]:
        """One photo through the submission's checks (JobAdmission.analyze), storing nothing; the answer
        is what a client may see of the analysis (SubjectSummary: never the identity embedding)."""
        analysis = await self.admission.analyze(photo, subject, incoming_trace)
        summary = SubjectSummary.model_validate(analysis.model_dump())
        return {"object": "analysis", **summary.model_dump(mode="json")}

    def capabilities(self) -> dict[str, Any]:
        """What this service offers a client, for the page to build its choices from (no key needed)."""
        generator = self.settings.generator
        diffusion = [b for b in self.backends if b != "preview"]
        default = generator.backend if generator.backend in self.backends else "preview"
        fields = VideoParams.model_fields
        return {
            "object": "capabilities",
            "backends": [{"name": b, "default": b == default} for b in self.backends],
            "qualities": list(QUALITIES) if diffusion else [],
            "loras": self._loras(diffusion),
            "styles": list(get_args(Style)),
            "backgrounds": list(get_args(Background)),
            "intensity": {"min": 0.0, "max": 1.0, "default": fields["intensity"].default},
            "seconds": {"min": 1.0, "max": 10.0, "default": fields["seconds"].default},
            "shapes": dict(SHAPES),
            "fps": fields["fps"].default,
            "limits": {
                "max_upload_bytes": self.limits.max_upload_bytes,
                "max_request_bytes": self.limits.max_request_bytes,
                "max_photos_per_subject": self.limits.max_photos_per_subject,
            },
            "api_key_required": not self.access.open,
            "consent_text": CONSENT_TEXT,
            "report_reasons": list(REPORT_REASONS),
        }

    def _loras(self, diffusion: list[str]) -> list[dict[str, Any]]:
        """The LoRAs a request may name: installed under model_root/loras/ for a loaded backend, not a
        step-distillation one (the fast quality picks that), only the fused one under `fuse_lora`."""
        if not diffusion:
            return []
        generator = self.settings.generator
        try:
            specs = discover_loras(generator.model_root)
        except ModelDirectoryError as exc:
            log.warning("capabilities: loras/ unreadable: %s", exc)
            return []
        return [
            {
                "name": s.name,
                "base": s.base,
                "trigger_words": [w.strip() for w in s.trigger_words.split(",") if w.strip()],
            }
            for s in specs.values()
            if s.base in diffusion and not s.fast and (not generator.fuse_lora or s.name == generator.lora)
        ]

    async def cancel(self, caller: Principal, video_id: str) -> JobManifest:
        """Stop a queued or running job, keep its record as `canceled`, erase its photos and any output.

        The canceled state is stored first: a generator on any replica sees it at its next progress
        report and stops (kiss_core.jobs.stages), and the runner that ran it ends quietly. Then this
        replica's runner task, if the job runs here, is stopped at once.
        """
        manifest = await self.job(caller, video_id)
        if manifest.status in TERMINAL_STATUSES:
            raise JobFinished(f"video {video_id} is already {manifest.status}")
        try:
            canceled = await asyncio.to_thread(self.jobs.cancel, video_id)
        except InvalidTransition:  # it ended between the read and the cancel
            current = await self.job(caller, video_id)
            raise JobFinished(f"video {video_id} is already {current.status}") from None
        await self.runner.cancel(video_id)
        metrics.record_job_status("canceled")
        return canceled

    async def report(self, caller: Principal, report: ReportRequest) -> ReportRecord:
        """Store an abuse report. A video must be the caller's and exist now (404 otherwise); the report
        is kept when the video is erased later."""
        if report.video_id is not None:
            await self.job(caller, report.video_id)
        return await asyncio.to_thread(self.reports.record, report, caller.tenant)

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
