"""The three stages of a job as plain classes, and all of them in one process.

Each Serve deployment is a thin adapter over one stage class; `InProcessStages` runs the same
classes in the caller's process, for unit tests and for measuring what serving costs on top.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

import numpy as np

from kiss_core.errors import AttemptSuperseded, JobCanceled, StorageError
from kiss_core.faces.analysis import DlibFaceAnalyzer
from kiss_core.generation.backends.base import FrameSource
from kiss_core.generation.backends.preview import PreviewFrames
from kiss_core.generation.backends.weights import configured_backends
from kiss_core.generation.conditioning import Conditioning, IdentityEncoder, ModelConditioner
from kiss_core.generation.gpu import cap_gpu_memory, check_weights_fit
from kiss_core.generation.producer import VideoProducer
from kiss_core.jobs.store import JobStore
from kiss_core.keys import output_key
from kiss_core.media.images import decode_image, encode_jpeg
from kiss_core.safety.age import AgeEstimator, AgeGate
from kiss_core.safety.content import ContentFilter
from kiss_core.schemas import JobResult, ProgressPreview, StageRequest, SubjectAnalysis
from kiss_core.settings import Settings
from kiss_core.storage import ObjectStore
from kiss_core.tracing import stage_span

_PROGRESS_INTERVAL_S = 0.5
log = logging.getLogger(__name__)


class AnalysisStage:
    """Photo bytes in, a small SubjectAnalysis out (CPU), with the input safety checks on the way.

    Order: decode (limits), content filter (explicit photos are refused before anything else is
    learnt from them), face analysis, age gate on the analysed face. The safety models load here, so
    a replica without them fails to start instead of admitting unchecked photos.
    """

    def __init__(self, settings: Settings):
        self.limits = settings.limits
        self.analyzer = DlibFaceAnalyzer(settings.faces)
        safety = settings.safety
        self.content_filter = (
            ContentFilter(safety.content_filter.threshold) if safety.content_filter.enabled else None
        )
        self.age_estimator = AgeEstimator(mirror=safety.age_gate.mirror) if safety.age_gate.enabled else None
        self.age_gate = AgeGate(safety.age_gate.min_age)

    def __call__(self, image: bytes, subject: str, trace: dict[str, str]) -> SubjectAnalysis:
        with stage_span("face_analysis", trace, subject=subject, bytes=len(image)) as span:
            pixels = decode_image(image, self.limits, subject)
            if self.content_filter is not None:
                self.content_filter.check(pixels, subject)
            analysis = self.analyzer.analyze(pixels, subject)
            if self.age_estimator is not None:
                age = self.age_estimator.estimate(pixels, np.asarray(analysis.landmarks, np.float32))
                span.set_attribute("age_estimate", round(age, 1))
                analysis = analysis.model_copy(update={"age_estimate": round(age, 2)})
                self.age_gate.check(age, subject)
            return analysis

    def check_health(self) -> None:
        """Runs the detector for real, so a broken model file fails the health check."""
        self.analyzer.detect(np.zeros((64, 64, 3), np.uint8))


def load_conditioners(settings: Settings) -> dict[str, ModelConditioner]:
    """The text/image encoders of each configured diffusion backend (none: only the preview runs)."""
    names = configured_backends(settings.generator)
    if not names:
        return {}
    from kiss_core.generation.backends.wan import WanConditioner

    check_weights_fit(settings.generator, list(names), "encoder")
    lighting = settings.generator.lighting_strength
    conditioners: dict[str, ModelConditioner] = {}
    first: WanConditioner | None = None
    for name in names:
        conditioner = WanConditioner(name, settings.generator, lighting, share_with=first)
        conditioners[name] = conditioner
        first = first or conditioner
    return conditioners


def load_backends(settings: Settings) -> dict[str, FrameSource]:
    """The preview, plus the denoiser and VAE of each configured diffusion backend."""
    backends: dict[str, FrameSource] = {"preview": PreviewFrames()}
    names = configured_backends(settings.generator)
    if names:
        from kiss_core.generation.backends.wan import load_frame_source

        check_weights_fit(settings.generator, list(names), "generator")
        backends.update({name: load_frame_source(name, settings.generator) for name in names})
    return backends


class IdentityStage:
    """Stored photos and their analyses in, the generator's conditioning out.

    For a diffusion backend that is the identity plus the prompt and start-image embeddings; the
    backend, quality and LoRA are decided here from the job's parameters.
    """

    def __init__(self, settings: Settings, store: ObjectStore):
        self.limits = settings.limits
        self.store = store
        self.encoder = IdentityEncoder(settings.faces, settings.generator, load_conditioners(settings))

    def __call__(self, request: StageRequest) -> Conditioning:
        with stage_span("identity", request.trace, job_id=request.job_id) as span:
            photos = {
                s: decode_image(self.store.get(key), self.limits, s) for s, key in request.input_keys.items()
            }
            references = {
                s: [
                    (decode_image(self.store.get(key), self.limits, s), analysis)
                    for key, analysis in zip(keys, request.reference_analyses.get(s, []), strict=True)
                ]
                for s, keys in request.reference_keys.items()
            }
            span.set_attribute("reference_photos", sum(len(r) for r in references.values()))
            conditioning = self.encoder.encode(photos, request.by_subject(), request.params, references)
            span.set_attribute("backend", conditioning.backend)
            return conditioning

    def check_health(self) -> None:
        """Each loaded text/image encoder runs for real: a dead device fails the replica's health check."""
        for conditioner in self.encoder.conditioners.values():
            conditioner.check_health()


class GenerationStage:
    """Conditioning in, stored outputs out; progress goes into the job's manifest."""

    def __init__(self, settings: Settings, store: ObjectStore):
        self.jobs = JobStore(store)
        cap_gpu_memory(settings.generator.gpu_memory_fraction, settings.generator.device)
        self.producer = VideoProducer(settings, store, backends=load_backends(settings))
        self.backend = settings.generator.backend

    def check_health(self) -> None:
        """Each loaded backend runs for real (a one-token forward); Serve replaces a replica that fails."""
        for backend in self.producer.backends.values():
            backend.check_health()

    def __call__(self, request: StageRequest, conditioning: Conditioning) -> JobResult:
        last = (0.0, "")

        def progress(stage: str, percent: int) -> None:
            """Every stage change is written; updates within a stage at most every 0.5 s.

            A deleted job raises JobNotFound here, a canceled one JobCanceled (checked before and after
            the write, which may have raced the cancel's), one whose runner gave it back or lost it
            AttemptSuperseded: each stops the work before anything is stored.
            """
            nonlocal last
            now = time.monotonic()
            if stage != last[1] or now - last[0] >= _PROGRESS_INTERVAL_S:
                last = (now, stage)
                self._stop_if_superseded(request)
                self._stop_if_canceled(request.job_id)
                self.jobs.update(request.job_id, stage=stage, progress=percent)
                self._stop_if_canceled(request.job_id)

        previewed = -float("inf")
        content = self.producer.output_checker.content_filter

        def preview(rgb: np.ndarray) -> None:
            """A backend's low-resolution preview: stored at the job's progress key and named in the
            manifest, at most every 0.5 s. A failed write loses that preview, never the job. One the
            output check's content filter flags is not shown (the next one may be); the job itself is
            decided on its final frames (kiss_core.safety.output_check)."""
            nonlocal previewed
            now = time.monotonic()
            if now - previewed < _PROGRESS_INTERVAL_S:
                return
            if content is not None and content.explicit(content.detect(rgb)):
                log.warning(
                    "a progress preview of job %s was not shown: the content filter flags it", request.job_id
                )
                return
            previewed = now
            job_id = request.job_id
            self._stop_if_superseded(request)
            try:
                self.jobs.store.put(output_key(job_id, "progress"), encode_jpeg(rgb, 75), "image/jpeg")
                url = f"/v1/videos/{job_id}/content?variant=progress"
                revision = self.jobs.get(job_id).revision + 1  # the write below, unless another races it
                self.jobs.update(job_id, progress_preview=ProgressPreview(url=url, revision=revision))
            except StorageError:
                log.warning("could not store the progress preview of job %s", job_id, exc_info=True)
            self._stop_if_canceled(job_id)

        with stage_span("generation", request.trace, job_id=request.job_id, backend=conditioning.backend):
            progress("generation", 10)
            result = self.producer.produce(request, conditioning, progress, preview)
            # Canceled while the outputs were being stored: they must not stay behind.
            self._stop_if_canceled(request.job_id)
            return result

    def _stop_if_superseded(self, request: StageRequest) -> None:
        """A runner that handed the job back on shutdown, or lost its lease, no longer waits for this
        render: without this check it would run to the end (on a GPU, minutes that hold the old replica
        up) and keep writing progress into the manifest of a job another runner now runs."""
        if request.runner is not None and not self.jobs.holds_lease(request.job_id, request.runner):
            raise AttemptSuperseded(f"job {request.job_id} is no longer run by {request.runner}")

    def _stop_if_canceled(self, job_id: str) -> None:
        if self.jobs.cancel_requested(job_id):
            self.jobs.settle_cancel(job_id)  # erases what was stored, puts back a status a write replaced
            raise JobCanceled(f"job {job_id} was canceled")


class InProcessStages:
    """The job's stages as direct calls in this process (threads keep the event loop free)."""

    def __init__(self, settings: Settings, store: ObjectStore):
        self.analysis = AnalysisStage(settings)
        self.identity = IdentityStage(settings, store)
        self.generation = GenerationStage(settings, store)

    def analyze(self, image: bytes, subject: str, trace: dict[str, str]) -> Awaitable[SubjectAnalysis]:
        return asyncio.to_thread(self.analysis, image, subject, trace)

    def condition(self, request: StageRequest) -> Any:
        return asyncio.ensure_future(asyncio.to_thread(self.identity, request))

    async def generate(self, request: StageRequest, conditioning: Any) -> JobResult:
        resolved = await conditioning
        return await asyncio.to_thread(self.generation, request, resolved)
