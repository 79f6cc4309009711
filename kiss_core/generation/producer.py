"""From analyses and conditioning to stored outputs: plan, render, encode, check, store.

This is the work of the VideoGenerator deployment. It returns only object keys and the quality report:
frames never leave the process that rendered them. The photos get shared lighting first
(kiss_core.scene.lighting); the report's flicker is measured on every frame as it streams to the encoder,
identity on a sample, contact on the contact frame and lighting on the first frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from kiss_core.errors import GenerationError, OutputBlocked
from kiss_core.faces.analysis import DetectedFace, DlibFaceAnalyzer
from kiss_core.faces.embedding import identity_model
from kiss_core.generation.backends.base import FrameSource, PreviewSink, StepProgress
from kiss_core.generation.backends.preview import PreviewFrames
from kiss_core.generation.conditioning import Conditioning
from kiss_core.generation.prefetch import prefetched
from kiss_core.generation.provenance.credentials import sign_media, signing_configured
from kiss_core.generation.provenance.devcert import with_dev_certificate
from kiss_core.generation.provenance.marks import FrameMarks
from kiss_core.generation.quality import (
    FlickerMeter,
    contact_quality,
    lighting_delta_e,
    photos_delta_e,
    static_mask_from_plan,
)
from kiss_core.generation.quality.identity import frame_identity, identity_from_frames
from kiss_core.keys import OUTPUT_NAMES, output_key
from kiss_core.media.images import decode_image
from kiss_core.media.video import encode_jpeg, encode_mp4, make_thumbnail
from kiss_core.safety.output_check import (
    FrameFace,
    FrameReading,
    OutputChecker,
    planned_box,
    record_blocked,
)
from kiss_core.scene.choreography import KissPlan, face_centers, plan_kiss
from kiss_core.scene.lighting import harmonize_photos
from kiss_core.schemas import (
    FlickerQuality,
    JobResult,
    LightingQuality,
    Provenance,
    QualityReport,
    StageRequest,
    SubjectAnalysis,
    VideoParams,
)
from kiss_core.settings import Settings
from kiss_core.storage import ObjectStore
from kiss_core.tracing import stage_span

ProgressCallback = Callable[[str, int], None]


class VideoProducer:
    """The generator's work around a backend: owns the backends and the face model used for the report."""

    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        analyzer: DlibFaceAnalyzer | None = None,
        backends: Mapping[str, FrameSource] | None = None,
        output_checker: OutputChecker | None = None,
    ):
        # With provenance.c2pa.dev_certificate (the local profile) and no certificate of the operator's:
        # sign with the development one, made here on first start.
        self.settings = settings = with_dev_certificate(settings)
        self.store = store
        self.analyzer = analyzer or DlibFaceAnalyzer(settings.faces)
        self.identity = identity_model(settings.faces)  # ArcFace when a pack is mounted, else dlib
        self.backends: dict[str, FrameSource] = dict(backends or {"preview": PreviewFrames()})
        # The generated frames' safety check (kiss_core.safety.output_check); its models load here.
        self.output_checker = output_checker or OutputChecker(self.settings.safety)

    def backend_for(self, conditioning: Conditioning) -> FrameSource:
        """The backend the IdentityEncoder conditioned for (it chose it from the request and settings)."""
        if conditioning.backend not in self.backends:
            raise ValueError(
                f"backend {conditioning.backend!r} is not loaded here; loaded: {sorted(self.backends)}"
            )
        return self.backends[conditioning.backend]

    def _check_identity(self, conditioning: Conditioning) -> None:
        """Before any rendering: the report can compare the encoder's embeddings with this stage's own.

        Differently configured stages (`faces.arcface_pack` on one only) would otherwise fail the job
        at the quality check, after minutes of GPU time.
        """
        for subject, condition in conditioning.subjects.items():
            if condition.embedding.size != self.identity.dimension:
                raise GenerationError(
                    f"the identity embedding of subject {subject!r} has {condition.embedding.size} values but"
                    f" this stage measures identity with {self.identity.dimension}: give the IdentityEncoder"
                    " and the VideoGenerator the same `faces.arcface_pack`"
                )

    def produce(
        self,
        request: StageRequest,
        conditioning: Conditioning,
        progress: ProgressCallback | None = None,
        preview: PreviewSink | None = None,
    ) -> JobResult:
        """Prepare the scene, render and encode, sign, measure, store: each step timed under its name.
        `preview` receives the backend's low-resolution previews while it generates, if it makes any."""
        timings: dict[str, float] = {}
        report = progress or (lambda _stage, _pct: None)
        self._check_identity(conditioning)
        scene = self._prepare(request, timings)
        # Faces detected once, on the unmarked frames, for the output check and the report.
        faces = _FrameFaces(self.analyzer, scene.plan)
        identify = self._identify(scene.plan, conditioning, faces)
        with _BesideRender(
            self.output_checker, faces, scene.plan, self._output_sample(scene.plan), identify
        ) as beside:
            rendered = self._render_encode(request, scene, conditioning, report, timings, preview, beside)
            with stage_span("output_check", None), _timed(timings, "output_check_wait"):
                readings = beside.readings()
            with _timed(timings, "identity_wait"):
                identities = beside.identities()
        # The worker's own seconds: "faces" apart, so that "output_check" is what the
        # check itself costs (bench/output_check.py); "output_check_wait" and "identity_wait" are what
        # they added after the last frame, the rest overlapped the render.
        timings["faces"], timings["output_check"] = round(beside.faces_s, 4), round(beside.read_s, 4)
        timings["identity"] = round(beside.identity_s, 4)
        self._check_output(request.job_id, scene.plan, readings, conditioning.backend)
        report("quality", 85)
        signed = signing_configured(self.settings.provenance)
        if signed:  # last: nothing may change the bytes after signing
            with _timed(timings, "sign"):
                self._sign(request, rendered.outputs)
        with stage_span("quality", None, frames=len(rendered.sampled)), _timed(timings, "quality"):
            quality = self._measure(request.params, scene, rendered, conditioning, faces, identities)
        report("storing", 95)
        with stage_span("store", None), _timed(timings, "store"):
            keys = self._store(request.job_id, rendered.outputs)

        plan, params = scene.plan, request.params
        return JobResult(
            output=params.output,
            width=plan.width,
            height=plan.height,
            fps=params.fps,
            frames=plan.frame_count,
            seconds=plan.frame_count / params.fps,
            contact_frame=plan.contact_frame,
            keys=keys,
            quality=quality,
            timings=timings,
            provenance=Provenance(
                label=rendered.marks.labeler is not None,
                watermark=rendered.marks.watermark is not None,
                c2pa=signed,
            ),
        )

    def _prepare(self, request: StageRequest, timings: dict[str, float]) -> _Scene:
        """Load the photos, plan the motion, give both people the same light (timed: load, plan, lighting)."""
        by_subject = request.by_subject()
        with _timed(timings, "load"):
            photos = {
                s: decode_image(self.store.get(key), self.settings.limits, s)
                for s, key in request.input_keys.items()
            }
        with _timed(timings, "plan"):
            plan = plan_kiss(by_subject, request.params, self.settings.generator.camera_push_in)
        with _timed(timings, "lighting"):
            landmarks = {s: np.asarray(by_subject[s].landmarks, dtype=np.float64) for s in ("a", "b")}
            delta_e_input = photos_delta_e(photos["a"], landmarks["a"], photos["b"], landmarks["b"])
            photos = harmonize_photos(photos, landmarks, self.settings.generator.lighting_strength)
        return _Scene(photos, by_subject, plan, delta_e_input)

    def _render_encode(
        self,
        request: StageRequest,
        scene: _Scene,
        conditioning: Conditioning,
        report: ProgressCallback,
        timings: dict[str, float],
        preview: PreviewSink | None,
        beside: _BesideRender,
    ) -> _Rendered:
        """Frames from the backend, marked, sampled for the report and streamed into the encoder; the
        output check's frames go to `beside` as the backend made them, before the marks, and once marked
        the report's frames to be identified there, and every frame to the flicker meter there."""
        plan, params = scene.plan, request.params
        output_checked = beside.indices
        identified = quality_sample(
            plan.frame_count, plan.contact_frame, self.settings.generator.quality_frames
        )
        checked = identified | output_checked
        sampled: dict[int, np.ndarray] = {}
        contact: list[np.ndarray] = []
        shape = (plan.height, plan.width)
        flicker = FlickerMeter(static_mask_from_plan({s: t.landmarks for s, t in plan.tracks.items()}, shape))
        source = self.backend_for(conditioning)
        marks = FrameMarks(self.settings.provenance, request.job_id, plan.width, plan.height)

        def share_done(share: float) -> None:
            report("generation", 10 + int(70 * share))

        def frames() -> Iterator[np.ndarray]:
            done = StepProgress(share_done, preview)
            # Made a frame or two ahead on their own thread, while this one marks and encodes (prefetch.py).
            rendered = prefetched(
                source.frames(plan, scene.photos, scene.by_subject, conditioning, params, done)
            )
            for index, raw in enumerate(rendered):
                # Marked before anything looks at it: the report measures what the viewer gets.
                frame = raw if raw.flags.writeable and raw.flags.c_contiguous else np.array(raw, order="C")
                if index in output_checked:
                    beside.submit(index, frame.copy())
                marks.apply(frame)
                if index in identified:
                    beside.identify(index, frame)
                if index in checked:
                    sampled[index] = frame
                if index == plan.contact_frame:
                    contact.append(frame)
                beside.measure(flicker, frame)
                yield frame

        outputs: dict[str, bytes] = {}
        with stage_span("render_encode", None, frames=plan.frame_count), _timed(timings, "render_encode"):
            generator = self.settings.generator
            if params.output == "video":
                outputs["video"] = encode_mp4(frames(), params.fps, generator.crf, generator.preset)
            else:
                _drain(frames())
        outputs["image"] = encode_jpeg(contact[0])
        outputs["thumbnail"] = make_thumbnail(sampled[0] if params.output == "video" else contact[0])
        beside.measured()
        return _Rendered(outputs, sampled, contact[0], flicker.result(), marks)

    def _sign(self, request: StageRequest, outputs: dict[str, bytes]) -> None:
        """Content Credentials into every output, in place: with the job's consent audit record."""
        for variant, data in outputs.items():
            mime, provenance = OUTPUT_NAMES[variant][1], self.settings.provenance
            outputs[variant] = sign_media(data, mime, request.job_id, provenance, request.consent)

    def _output_sample(self, plan: KissPlan) -> set[int]:
        """The frames the output check reads (none when it is off)."""
        if not self.output_checker.enabled:
            return set()
        return quality_sample(plan.frame_count, plan.contact_frame, self.output_checker.frames)

    def _check_output(
        self, job_id: str, plan: KissPlan, readings: Mapping[int, FrameReading], backend: str
    ) -> None:
        """The output check's decision over its frames' readings, before anything is stored.

        The frames were read as the backend made them, before our own marks: the watermark's +/-2.5
        grey-level 8x8 cells are invisible to a person but not to the age model, which read the same
        synthetic adult's face anywhere from 16 to 26 years depending on the job id the cells carry.

        Blocked: the outputs prefix is emptied (a diffusion backend's progress preview, an earlier
        attempt's files), the blocked record written, and `OutputBlocked` raised: the job fails with it.
        """
        if not readings:
            return
        try:
            self.output_checker.decide(readings)
        except OutputBlocked as blocked:
            self.store.delete_prefix(f"outputs/{job_id}/")
            record_blocked(self.store, job_id, backend, blocked, sorted(readings))
            raise

    def _identify(
        self, plan: KissPlan, conditioning: Conditioning, faces: _FrameFaces
    ) -> Callable[[int, np.ndarray], dict[str, float]]:
        """One checked frame's identity (`frame_identity`): subject -> similarity, for those found in it."""
        centres = face_centers(plan)
        references = {s: conditioning.subjects[s].embedding for s in conditioning.subjects}
        embedder = self.identity.embedder or self.analyzer

        def identify(index: int, frame: np.ndarray) -> dict[str, float]:
            return frame_identity(
                frame,
                faces.detected(index, frame),
                {s: c[index] for s, c in centres.items()},
                references,
                embedder,
                {s: t.landmarks[index] for s, t in plan.tracks.items()},
            )

        return identify

    def _measure(
        self,
        params: VideoParams,
        scene: _Scene,
        rendered: _Rendered,
        conditioning: Conditioning,
        faces: _FrameFaces,
        identities: list[dict[str, float]],
    ) -> QualityReport:
        """The quality report: identity (each checked frame's, measured beside the render), contact,
        flicker and lighting."""
        plan = scene.plan
        embedder = self.identity.embedder or self.analyzer
        identity = identity_from_frames(
            identities, sorted(conditioning.subjects), embedder.description, self.identity.threshold
        )
        tracks = plan.tracks
        upsample = faces.upsample
        return identity.model_copy(
            update={
                "contact": contact_quality(
                    rendered.contact,
                    plan.contact_frame,
                    {s: t.landmarks[plan.contact_frame] for s, t in tracks.items()},
                    self.analyzer,
                    upsample,
                    target="cheek" if params.style == "cheek" else "lips",
                    detections=faces.detected(plan.contact_frame, rendered.contact),
                ),
                "flicker": rendered.flicker,
                "lighting": LightingQuality(
                    delta_e_input=scene.delta_e_input,
                    delta_e_output=lighting_delta_e(
                        rendered.sampled[0], tracks["a"].landmarks[0], tracks["b"].landmarks[0]
                    ),
                ),
            }
        )

    def _store(self, job_id: str, outputs: Mapping[str, bytes]) -> dict[str, str]:
        """Each output under its idempotent key: a second attempt overwrites the first one's."""
        keys: dict[str, str] = {}
        for variant, data in outputs.items():
            key = output_key(job_id, variant)
            self.store.put(key, data, OUTPUT_NAMES[variant][1])
            keys[variant] = key
        return keys


@dataclass(frozen=True)
class _Scene:
    """The inputs ready to render: harmonised photos, their analyses and the motion plan."""

    photos: dict[str, np.ndarray]
    by_subject: dict[str, SubjectAnalysis]
    plan: KissPlan
    delta_e_input: float | None


@dataclass(frozen=True)
class _Rendered:
    """What rendering leaves behind: the encoded outputs and the frames the report measures (marked, as
    the viewer gets them)."""

    outputs: dict[str, bytes]
    sampled: dict[int, np.ndarray]
    contact: np.ndarray
    flicker: FlickerQuality
    marks: FrameMarks


_NO_UPSAMPLE_FACE_PX = 100  # HOG finds faces this wide without its (slow) upsampling pass


class _FrameFaces:
    """The faces of a job's sampled frames, detected once and shared by the output check and the report.

    A `FacesOf` for kiss_core.safety.output_check (which knows no detector) and, through `detected`, the
    identity report's detections. Upsampling as the report always did: none when the planned faces are
    large enough for HOG's window.
    """

    def __init__(self, analyzer: DlibFaceAnalyzer, plan: KissPlan):
        self.analyzer = analyzer
        self.upsample = 0 if planned_face_width(plan) >= _NO_UPSAMPLE_FACE_PX else 1
        self._found: dict[int, list[DetectedFace]] = {}

    def detected(self, index: int, frame: np.ndarray) -> list[DetectedFace]:
        if index not in self._found:
            self._found[index] = self.analyzer.detect(frame, self.upsample)
        return self._found[index]

    def __call__(self, index: int, frame: np.ndarray) -> list[FrameFace]:
        return [FrameFace(face.box, face.landmarks) for face in self.detected(index, frame)]


class _BesideRender:
    """Per-frame measuring on one worker thread while the rest of the video renders.

    The output check's frames are handed over as the backend made them; the worker finds their faces
    (shared with the quality report through `faces`) and reads them (`OutputChecker.read`: content
    filter, then age). Every marked frame also goes to the flicker meter (`measure`). onnxruntime and
    OpenCV release the GIL, so on a second core this overlaps the render instead of following it
    (bench/cpu_pipeline.py); one worker keeps the frames in order. The decision waits for every
    reading. A context manager: on leaving, a job that failed mid-render drops the work not yet done.
    """

    def __init__(
        self,
        checker: OutputChecker,
        faces: _FrameFaces,
        plan: KissPlan,
        indices: set[int],
        identify: Callable[[int, np.ndarray], dict[str, float]],
    ):
        self.checker, self.faces, self.plan, self.indices = checker, faces, plan, indices
        self._identify = identify
        # Seconds spent on the worker, for the job's timings.
        self.faces_s = self.read_s = self.identity_s = 0.0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="beside-render")
        self._pending: dict[int, Future[FrameReading]] = {}
        self._identities: dict[int, Future[dict[str, float]]] = {}
        self._measures: list[Future[None]] = []

    def __enter__(self) -> _BesideRender:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, index: int, frame: np.ndarray) -> None:
        """Read this output-check frame (it must not change afterwards)."""
        self._pending[index] = self._pool.submit(self._read, index, frame)

    def identify(self, index: int, frame: np.ndarray) -> None:
        """The report's identity on this checked frame, after its output-check reading if it has one
        (the HOG faces are shared): the frame must not change afterwards."""
        self._identities[index] = self._pool.submit(self._timed_identify, index, frame)

    def identities(self) -> list[dict[str, float]]:
        """Every identified frame's similarities, in frame order (a worker's exception is raised here)."""
        return [future.result() for _, future in sorted(self._identities.items())]

    def _timed_identify(self, index: int, frame: np.ndarray) -> dict[str, float]:
        start = time.perf_counter()
        try:
            return self._identify(index, frame)
        finally:
            self.identity_s += time.perf_counter() - start

    def measure(self, meter: FlickerMeter, frame: np.ndarray) -> None:
        """`meter.add(frame)` on the worker, in the order given (the frame must not change afterwards)."""
        self._measures.append(self._pool.submit(meter.add, frame))

    def measured(self) -> None:
        """Wait for every `measure` (a worker's exception is raised here)."""
        for future in self._measures:
            future.result()
        self._measures.clear()

    def readings(self) -> dict[int, FrameReading]:
        """Every submitted frame's reading (a worker's exception is raised here)."""
        return {index: future.result() for index, future in sorted(self._pending.items())}

    def _read(self, index: int, frame: np.ndarray) -> FrameReading:
        start = time.perf_counter()
        found = self.faces(index, frame) if self.checker.age_estimator is not None else []
        detected = time.perf_counter()
        planned = {s: planned_box(t.landmarks[index]) for s, t in self.plan.tracks.items()}
        reading = self.checker.read(frame, found, planned)
        self.faces_s += detected - start
        self.read_s += time.perf_counter() - detected
        return reading


def quality_sample(frame_count: int, contact_frame: int, count: int) -> set[int]:
    """Evenly spaced frames from first to last, plus the contact frame, where face merging shows."""
    spaced = np.linspace(0, frame_count - 1, min(count, frame_count)).round().astype(int)
    return {*spaced.tolist(), contact_frame}


def planned_face_width(plan: KissPlan) -> float:
    """The narrowest jaw span (landmarks 0-16) the plan gives either person in the first frame."""
    return min(float(np.ptp(track.landmarks[0, :17, 0])) for track in plan.tracks.values())


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round(time.perf_counter() - start, 4)


def _drain(frames: Iterable[np.ndarray]) -> None:
    for _ in frames:
        pass
