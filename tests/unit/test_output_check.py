"""The output check: generated frames go through the content filter and the age estimate before storing.

Real frames throughout: the preview compositor's video of two synthetic subjects (composites, nobody
real) through the producer's real work. Two test doubles, both at the edge and named as such:

- `InjectingFrames`: a FrameSource wrapping the real preview that replaces one frame by
  scikit-image's `color.png` test chart letterboxed to the frame (black right and bottom, as the
  filter's own letterbox pads). The real ContentFilter, at its default threshold, reads that chart
  as BUTTOCKS_EXPOSED at ~0.8 (a false positive of NudeNet's that suits a test: no explicit image is
  made or stored anywhere); no preview frame of the synthetic pairs scores any exposed class at all.
- `ForcedAgeEstimator`: no child-like face ships in the wheels here (the insightface and
  scikit-image photos are adults), so a face that reads young is made by wrapping the real
  AgeEstimator at its boundary: the real estimate minus a fixed number of years.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest

from kiss_core.errors import OutputBlocked
from kiss_core.faces.synthetic import synthetic_subject_png
from kiss_core.generation.backends.base import preview_sink
from kiss_core.generation.backends.preview import PreviewFrames
from kiss_core.generation.producer import VideoProducer, quality_sample
from kiss_core.jobs.admission import JobAdmission
from kiss_core.jobs.runner import JobRunner
from kiss_core.jobs.stages import InProcessStages
from kiss_core.jobs.store import JobStore
from kiss_core.keys import new_job_id, output_key
from kiss_core.media.images import decode_image
from kiss_core.safety.age import AgeEstimator
from kiss_core.safety.content import ContentFilter
from kiss_core.safety.output_check import (
    BLOCKED_PREFIX,
    OutputChecker,
    blocked_records,
    face_owner,
)
from kiss_core.schemas import (
    Attestation,
    JobManifest,
    JobResult,
    StageRequest,
    SubjectConsent,
    VideoParams,
)
from kiss_core.settings import JobSettings, Settings
from kiss_core.storage import LocalDirStore
from tests.support.photos import load_rgb, skimage_path
from tests.support.studio import SyntheticPair, SyntheticStudio

PARAMS = VideoParams(style="peck", seconds=2, fps=24, size="832x480")
ATTESTED = Attestation(a=SubjectConsent(consented=True), b=SubjectConsent(consented=True))


def flagged_frame(width: int, height: int) -> np.ndarray:
    """scikit-image's colour chart letterboxed into a frame: the real filter flags it (see above)."""
    chart = load_rgb(skimage_path("color.png"))
    scale = min(width / chart.shape[1], height / chart.shape[0])
    size = (round(chart.shape[1] * scale), round(chart.shape[0] * scale))
    frame = np.zeros((height, width, 3), np.uint8)
    frame[: size[1], : size[0]] = cv2.resize(chart, size, interpolation=cv2.INTER_AREA)
    return frame


class InjectingFrames:
    """Test double (a FrameSource): the real preview's frames, one of them replaced by `flagged_frame`."""

    name = "preview"

    def __init__(self, index: int):
        self.index = index
        self.inner = PreviewFrames()

    def frames(self, plan: Any, *args: Any, **kwargs: Any) -> Iterator[np.ndarray]:
        for index, frame in enumerate(self.inner.frames(plan, *args, **kwargs)):
            yield flagged_frame(plan.width, plan.height) if index == self.index else frame

    def check_health(self) -> None:
        self.inner.check_health()


class ForcedAgeEstimator(AgeEstimator):
    """Test double at the AgeEstimator boundary: the real estimate, `years` younger."""

    def __init__(self, years: float):
        super().__init__()
        self.years = years

    def estimate(self, image: np.ndarray, landmarks: np.ndarray) -> float:
        return super().estimate(image, landmarks) - self.years


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> SyntheticStudio:
    return SyntheticStudio(Settings(), str(tmp_path_factory.mktemp("outputs")))


@pytest.fixture(scope="module")
def pair(studio: SyntheticStudio) -> SyntheticPair:
    return studio.pair(0, 1)


def _produce(
    studio: SyntheticStudio,
    pair: SyntheticPair,
    job_id: str | None = None,
    producer: VideoProducer | None = None,
) -> JobResult:
    job_id = job_id or new_job_id()
    keys = {s: f"inputs/{job_id}/{s}.png" for s in pair.pngs}
    for subject, key in keys.items():
        studio.store.put(key, pair.pngs[subject], "image/png")
    request = StageRequest(
        job_id=job_id, params=PARAMS, input_keys=keys, analyses=[pair.analyses["a"], pair.analyses["b"]]
    )
    return (producer or studio.producer).produce(request, pair.conditioning)


def _checked(studio: SyntheticStudio, result: JobResult) -> list[int]:
    """The frames of a PARAMS job the output check reads: evenly spaced, plus the contact frame."""
    count = studio.settings.safety.output_check.frames
    return sorted(quality_sample(result.frames, result.contact_frame, count))


@pytest.fixture(scope="module")
def normal(studio: SyntheticStudio, pair: SyntheticPair) -> JobResult:
    return _produce(studio, pair)


@pytest.fixture
def swap_backend(studio: SyntheticStudio) -> Iterator[None]:
    """Puts the producer's real preview back after a test replaced it."""
    original = studio.producer.backends["preview"]
    checker = studio.producer.output_checker
    yield
    studio.producer.backends["preview"] = original
    studio.producer.output_checker = checker


def test_a_normal_job_passes_and_is_stored(studio: SyntheticStudio, normal: JobResult) -> None:
    assert set(normal.keys) == {"video", "thumbnail", "image"}
    assert all(studio.store.exists(key) for key in normal.keys.values())
    assert normal.timings["output_check"] > 0
    job_id = normal.keys["video"].split("/")[1]
    assert blocked_records(studio.store, job_id) == []
    # The quality report still measures its own sample (the check adds no frames to it by default).
    assert all(s.frames_checked == len(_checked(studio, normal)) for s in normal.quality.subjects)


def test_small_previews_pass(studio: SyntheticStudio, pair: SyntheticPair) -> None:
    """The soak's job (416x240, 12 fps, romantic): faces ~70 px wide, where single age estimates wobbled
    with each job's watermark while the check read marked frames (a per-face rule blocked ~1 % of them
    at 23.5-24.7 years); full faces and the per-person median pass every one. Five jobs."""
    small = VideoParams(style="romantic", seconds=2, fps=12, size="416x240")
    for _ in range(5):
        job_id = new_job_id()
        keys = {s: f"inputs/{job_id}/{s}.png" for s in pair.pngs}
        for subject, key in keys.items():
            studio.store.put(key, pair.pngs[subject], "image/png")
        analyses = [pair.analyses["a"], pair.analyses["b"]]
        request = StageRequest(job_id=job_id, params=small, input_keys=keys, analyses=analyses)
        result = studio.producer.produce(request, pair.conditioning)
        assert studio.store.exists(result.keys["video"])


class RecordingChecker(OutputChecker):
    """The real checker, keeping the frames it was handed (to compare two jobs)."""

    def __init__(self, settings: Settings):
        super().__init__(settings.safety)
        self.seen: list[dict[int, np.ndarray]] = []
        self._reading: list[np.ndarray] = []

    def read(self, frame: Any, faces: Any, planned: Any) -> Any:
        self._reading.append(frame.copy())  # frames of one job, read in index order on one thread
        return super().read(frame, faces, planned)

    def decide(self, readings: Any) -> Any:
        self.seen.append(dict(zip(sorted(readings), self._reading, strict=True)))
        self._reading = []
        return super().decide(readings)


def test_the_check_reads_what_the_backend_made_not_our_marks(
    studio: SyntheticStudio, pair: SyntheticPair, swap_backend: None
) -> None:
    """Two jobs of one pair differ only in their job ids, so in their watermarks' cells. The age model
    read those cells as years (pair 2+3: 16.0 to 25.9 on one face, by job id), so the check reads the
    frames before the marks: the same frames for both jobs, while the stored videos still differ."""
    checker = RecordingChecker(studio.settings)
    studio.producer.output_checker = checker
    first, second = _produce(studio, pair), _produce(studio, pair)
    assert len(checker.seen) == 2 and checker.seen[0].keys() == checker.seen[1].keys()
    assert all(np.array_equal(checker.seen[0][i], checker.seen[1][i]) for i in checker.seen[0])
    assert studio.store.get(first.keys["image"]) != studio.store.get(second.keys["image"])


def test_the_flagged_chart_is_flagged_and_preview_frames_are_not(normal: JobResult) -> None:
    """The premise of the injection test: the real filter flags the chart, on its own and marked."""
    content = ContentFilter()
    explicit = content.explicit(content.detect(flagged_frame(normal.width, normal.height)))
    assert explicit and explicit[0].score > 0.6


@pytest.mark.parametrize("where", ["spaced", "contact"])
def test_a_flagged_frame_blocks_the_job_and_nothing_is_stored(
    studio: SyntheticStudio, pair: SyntheticPair, normal: JobResult, swap_backend: None, where: str
) -> None:
    checked = _checked(studio, normal)
    index = normal.contact_frame if where == "contact" else checked[2]
    studio.producer.backends["preview"] = InjectingFrames(index)
    job_id = new_job_id()
    # A progress preview written while generating (a diffusion backend's) must go too.
    studio.store.put(f"outputs/{job_id}/progress.jpg", b"preview", "image/jpeg")
    with pytest.raises(OutputBlocked) as blocked:
        _produce(studio, pair, job_id)
    problem = blocked.value.to_problem()
    assert (problem["code"], problem["status"]) == ("output_blocked", 422)
    assert (problem["check"], problem["frame"]) == ("explicit_content", index)
    assert problem["errors"][0]["label"] == "BUTTOCKS_EXPOSED" and problem["errors"][0]["score"] > 0.5
    assert f"frame {index}" in problem["detail"]
    assert studio.store.list(f"outputs/{job_id}/") == []
    (record,) = blocked_records(studio.store, job_id)
    assert (record.check, record.frame, record.backend) == ("explicit_content", index, "preview")
    assert record.score > 0.5 and record.threshold == 0.5 and record.frames_checked == checked
    assert record.label == "BUTTOCKS_EXPOSED"
    again = pickle.loads(pickle.dumps(blocked.value))
    assert type(again) is OutputBlocked and again.to_problem() == problem


def test_a_face_read_as_a_minor_blocks_the_job(
    studio: SyntheticStudio, pair: SyntheticPair, normal: JobResult, swap_backend: None
) -> None:
    studio.producer.output_checker = OutputChecker(
        studio.settings.safety, age_estimator=ForcedAgeEstimator(years=15.0)
    )
    job_id = new_job_id()
    with pytest.raises(OutputBlocked) as blocked:
        _produce(studio, pair, job_id)
    problem = blocked.value.to_problem()
    # Every full face now reads ~12-16: the first face read (frame 0) is under 18 and blocks on its own.
    assert (problem["code"], problem["check"], problem["frame"]) == (
        "output_blocked",
        "subject_may_be_minor",
        0,
    )
    assert problem["subject"] in {"a", "b"} and problem["errors"][0]["estimated_age"] < 18
    assert studio.store.list(f"outputs/{job_id}/") == []
    (record,) = blocked_records(studio.store, job_id)
    # The frames' threshold: the photos' 25 less the output check's 2-year tolerance.
    assert (record.check, record.frame, record.threshold) == ("subject_may_be_minor", 0, 23.0)
    assert record.score < 18 and record.label is None


def test_a_person_whose_median_reads_under_the_threshold_blocks(
    studio: SyntheticStudio, pair: SyntheticPair, normal: JobResult, swap_backend: None
) -> None:
    """Estimates 7 years lower: no face under 18, but a person's median under 23 (the synthetic pair reads
    27-31 on its full faces; frames are held at the photos' 25 less 2 years); the problem names the
    person's lowest-reading frame."""
    studio.producer.output_checker = OutputChecker(
        studio.settings.safety, age_estimator=ForcedAgeEstimator(7.0)
    )
    with pytest.raises(OutputBlocked) as blocked:
        _produce(studio, pair)
    problem = blocked.value.to_problem()
    error = problem["errors"][0]
    assert problem["check"] == "subject_may_be_minor" and problem["frame"] in _checked(studio, normal)
    assert 18 <= error["frame_estimated_age"] <= error["estimated_age"] < 23 == error["min_age"]
    assert "median" in problem["detail"]


def test_without_tolerance_frames_are_held_to_the_photos_threshold(
    studio: SyntheticStudio, pair: SyntheticPair, normal: JobResult, swap_backend: None
) -> None:
    """4 years lower: medians of ~24.5 (a) and ~27 (b) pass the frames' 23 but not the photos' own 25."""
    lower = ForcedAgeEstimator(4.0)
    studio.producer.output_checker = OutputChecker(studio.settings.safety, age_estimator=lower)
    _produce(studio, pair)
    strict = studio.settings.safety.model_copy(deep=True)
    strict.output_check.age_tolerance = 0.0
    studio.producer.output_checker = OutputChecker(strict, age_estimator=lower)
    with pytest.raises(OutputBlocked) as blocked:
        _produce(studio, pair)
    assert blocked.value.to_problem()["errors"][0]["min_age"] == 25.0


def test_switched_off_the_check_stores_the_flagged_frame(
    studio: SyntheticStudio, pair: SyntheticPair, normal: JobResult
) -> None:
    settings = Settings.model_validate({"safety": {"output_check": {"enabled": False}}})
    injecting = {"preview": InjectingFrames(normal.contact_frame)}
    off = VideoProducer(settings, studio.store, studio.analyzer, backends=injecting)
    assert off.output_checker.content_filter is None and off.output_checker.age_estimator is None
    blocked_before = studio.store.list(BLOCKED_PREFIX)
    result = _produce(studio, pair, producer=off)
    assert studio.store.exists(result.keys["video"])
    assert studio.store.list(BLOCKED_PREFIX) == blocked_before


def test_which_faces_the_age_model_reads() -> None:
    planned = {"a": (100.0, 100.0, 200.0, 220.0), "b": (400.0, 100.0, 500.0, 220.0)}
    assert face_owner((95.0, 95.0, 205.0, 225.0), planned) == "a"  # a's full face
    assert face_owner((395.0, 90.0, 505.0, 230.0), planned) == "b"
    assert face_owner((650.0, 100.0, 750.0, 220.0), planned) == ""  # someone nobody planned: read alone
    assert face_owner((150.0, 100.0, 450.0, 220.0), planned) is None  # a blend spanning both: skipped
    assert face_owner((120.0, 100.0, 410.0, 220.0), planned) is None  # touches b's face: not read
    assert face_owner((150.0, 150.0, 260.0, 300.0), planned) is None  # part of a's face only: not read


class PreviewingFrames(InjectingFrames):
    """Test double: the real preview's frames (none replaced), after two progress previews as a diffusion
    backend sends them: first the flagged chart, then a plain grey one."""

    GREY = 128

    def __init__(self) -> None:
        super().__init__(index=-1)

    def frames(self, plan: Any, *args: Any, **kwargs: Any) -> Iterator[np.ndarray]:
        sink = preview_sink(args[-1])
        assert sink is not None, "the generation stage asks for previews"
        sink(cv2.resize(flagged_frame(plan.width, plan.height), (208, 120), interpolation=cv2.INTER_AREA))
        sink(np.full((120, 208, 3), self.GREY, np.uint8))
        yield from super().frames(plan, *args, **kwargs)


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalDirStore, InProcessStages, JobStore]:
    settings = Settings()
    store = LocalDirStore(tmp_path_factory.mktemp("in_process"))
    return store, InProcessStages(settings, store), JobStore(store)


def _run_job(in_process: tuple[LocalDirStore, InProcessStages, JobStore], backend: Any) -> JobManifest:
    """Admission, then the runner over the in-process stages, with `backend` as the preview."""
    _, stages, jobs = in_process
    params = VideoParams(style="peck", seconds=1, fps=24, size="832x480")
    photos = {"a": synthetic_subject_png(2), "b": synthetic_subject_png(3)}
    manifest = asyncio.run(
        JobAdmission(jobs, stages, stages.analysis.limits).submit(params, photos, ATTESTED)
    )
    stages.generation.producer.backends["preview"] = backend
    runner = JobRunner(jobs, stages, JobSettings(max_attempts=3), owner="test")
    return asyncio.run(runner.run(manifest.id))


@pytest.mark.slow  # ~12 s: every stage's models load
def test_the_runner_fails_the_job_once_with_output_blocked(
    in_process: tuple[LocalDirStore, InProcessStages, JobStore],
) -> None:
    """Through admission, the in-process stages and the runner: failed at the first attempt, never retried."""
    store = in_process[0]
    done = _run_job(in_process, InjectingFrames(0))
    assert done.status == "failed" and done.attempts == 1 and done.result is None
    assert done.error is not None and done.error.code == "output_blocked"
    extra = done.error.model_dump()
    assert (extra["check"], extra["frame"]) == ("explicit_content", 0)
    assert store.list(f"outputs/{done.id}/") == []
    assert [r.check for r in blocked_records(store, done.id)] == ["explicit_content"]
    assert store.list("audit/"), "the consent audit is untouched beside the blocked record"


@pytest.mark.slow  # shares the stages above
def test_a_flagged_progress_preview_is_not_shown(
    in_process: tuple[LocalDirStore, InProcessStages, JobStore],
) -> None:
    """The generation stage stores no progress preview the content filter flags; the next one is shown, and
    the job, whose final frames pass, completes."""
    store = in_process[0]
    done = _run_job(in_process, PreviewingFrames())
    assert done.status == "completed" and done.progress_preview is not None
    shown = decode_image(store.get(output_key(done.id, "progress")), Settings().limits, "a")
    assert np.abs(shown.astype(int) - PreviewingFrames.GREY).max() <= 8, "the grey preview, not the chart"
