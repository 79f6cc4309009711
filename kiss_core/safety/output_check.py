"""The output check: sampled frames of every generated video, before anything of it is stored or served.

A diffusion model can produce what no input showed, so the photos' checks (kiss_core.safety.content,
kiss_core.safety.age) run again on what was generated, for every backend, the preview included:

- the content filter (`ContentFilter`, NudeNet) on each checked frame: a frame is explicit when an
  exposed class scores over `safety.output_check.content_threshold` (None: the photos' threshold);
- the age estimate (`AgeEstimator`) on each *full* face the detector finds in a checked frame (its
  68 landmarks), refused under `safety.age_gate.min_age` less `safety.output_check.age_tolerance`.

The checked frames are the ones the producer already keeps for the quality report (evenly spaced
from first to last, plus the contact frame; kiss_core.generation.producer.quality_sample), as the
backend made them, before the watermark and label (the watermark's cells moved the age estimate by
years, by job id): nothing is decoded again, and the face detections are shared with the quality report.

Full faces only, and a robust decision per person. The age model is sensitive to the exact crop
(kiss_core.safety.age): on rendered frames the same adult's estimate moves by several years, and far
more where the two faces overlap. Measured on the preview (4 synthetic pairs x 4 styles, 9 frames
each): faces overlapping the other person's read from 22.6 to 45 years, and around the contact the
detector often finds one blended "face" spanning both. So a detected face is read only when it is
*full*: it covers at least `OWN_FACE` of one planned face (the scene plan's landmark box for that
person in that frame) and less than `SEPARATE` of the other's; those faces read 26.4 years or more
at 832x480, but down to 21.3 at 416x240 (faces ~70 px, where each job's watermark moves a single
estimate by years), while each person's median stayed at 27.0 or more. With whole people in a scene
(and the camera's push-in) the medians came lower: 24.7 to 32.0 over 2 pairs x 4 styles x 3 sizes
(256x144 to 832x480), camera still and pushing in, the same adults whose photos read 26.7-29.8. Held
to the photos' own threshold (25) that blocked admitted adults (a median of 25.0 at 416x240 with
the camera still), so the frames are held `age_tolerance` (2) years lower, at 23.
A face covering no planned face at all (someone the model added) is read too; faces touching both
people, or covering only part of one, are skipped. The content filter runs on every checked frame,
blended or not.

Decision: each planned person is judged on the median of their full-face estimates (a single frame
can read a few years low); under `safety.age_gate.min_age - safety.output_check.age_tolerance` the
video is blocked, naming that person's lowest-reading frame; any single full face estimated under
`LEGAL_AGE` (18) blocks on its own whatever the median; a face no planned person accounts for is
judged alone against that same threshold.

This layer knows no face detector (faces sits beside it): the caller hands in the faces of each
frame (`FrameFace`: box and 68 landmarks) and the planned face boxes. A violation raises
`OutputBlocked` (422 `output_blocked`, naming the check and the frame); `record_blocked` writes the
append-only record of it under `blocked/` (beside `audit/`: job id, check, frame, score; no pixels).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from kiss_core.errors import OutputBlocked
from kiss_core.safety.age import AgeEstimator
from kiss_core.safety.content import ContentFilter, Detection
from kiss_core.schemas import utcnow
from kiss_core.settings import SafetySettings
from kiss_core.storage import ObjectStore

CHECK_EXPLICIT = "explicit_content"
CHECK_MINOR = "subject_may_be_minor"
BLOCKED_PREFIX = "blocked/"
# A full face covers at least OWN_FACE of its planned face and less than SEPARATE of the other's.
OWN_FACE = 0.5
SEPARATE = 0.05
LEGAL_AGE = 18.0

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels


@dataclass(frozen=True)
class FrameFace:
    """One face the detector found in a generated frame: box and 68 iBUG landmarks (x, y)."""

    box: Box
    landmarks: np.ndarray


FacesOf = Callable[[int, np.ndarray], Sequence[FrameFace]]  # (frame index, frame) -> its faces


@dataclass(frozen=True)
class FrameReading:
    """What the check's models found in one frame, before any decision."""

    explicit: tuple[Detection, ...]  # exposed classes over the threshold, best first
    explicit_score: float  # the highest exposed-class score seen (0.0: none over min_score)
    ages: tuple[tuple[str, float], ...]  # (owner, estimated age) of each full face read
    faces_skipped: int  # faces touching both people or only part of one, not read


@dataclass(frozen=True)
class OutputCheckReport:
    """What a passed check looked at (for traces and the benchmark): never any pixels."""

    frames: tuple[int, ...]
    faces_read: int  # full faces the age model read
    faces_skipped: int  # faces touching both people, not read
    max_explicit_score: float  # the highest exposed-class score seen (0.0: none over min_score)
    min_age: float | None  # the lowest single estimate among the faces read


def planned_box(landmarks: np.ndarray) -> Box:
    """The box of a planned face: its landmarks' extent."""
    points = np.asarray(landmarks, dtype=np.float64)
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    return (float(x0), float(y0), float(x1), float(y1))


def _covered_share(face: Box, planned: Box) -> float:
    """Share of the planned box's area that the detected face box covers."""
    width = min(face[2], planned[2]) - max(face[0], planned[0])
    height = min(face[3], planned[3]) - max(face[1], planned[1])
    area = (planned[2] - planned[0]) * (planned[3] - planned[1])
    return max(0.0, width) * max(0.0, height) / area if area > 0 else 0.0


def face_owner(face: Box, planned: Mapping[str, Box]) -> str | None:
    """Whose full face this detection is: a planned person's name; "" for a face no planned person
    overlaps (read alone); None for a face touching both people or only part of one (blended, occluded:
    not read)."""
    shares = {subject: _covered_share(face, box) for subject, box in planned.items()}
    touching = [subject for subject, share in shares.items() if share >= SEPARATE]
    if not touching:
        return ""
    if len(touching) == 1 and shares[touching[0]] >= OWN_FACE:
        return touching[0]
    return None


class OutputChecker:
    """Runs the content filter and the age estimate on a generated video's sampled frames.

    Built once per generator replica: the models load here (a missing one raises
    `SafetyModelUnavailable`, so a replica that could not check its outputs never starts).
    `content_filter` and `age_estimator` default to the real models configured by `settings`.
    """

    def __init__(
        self,
        settings: SafetySettings,
        content_filter: ContentFilter | None = None,
        age_estimator: AgeEstimator | None = None,
    ):
        check = settings.output_check
        self.enabled = check.enabled
        self.frames = check.frames
        threshold = check.content_threshold or settings.content_filter.threshold
        # The photos were held at min_age; a generated frame's reading of the same person runs lower
        # (smaller, re-sampled faces), so frames are held `age_tolerance` years under it.
        self.min_age = settings.age_gate.min_age - check.age_tolerance
        self.content_filter = content_filter or (ContentFilter(threshold) if check.enabled else None)
        self.age_estimator = age_estimator or (
            # The robust estimate's canonical colour and deblocking, on the detected crop only: each
            # person is judged on the median over the sampled frames, which averages out the crop noise
            # the photo gate's shifted views are for, at a third of the cost (4.5 vs 13 ms per face).
            AgeEstimator(mirror=settings.age_gate.mirror, shifted_views=False)
            if check.enabled and check.age
            else None
        )

    def check(
        self,
        frames: Mapping[int, np.ndarray],
        faces_of: FacesOf,
        planned: Mapping[int, Mapping[str, Box]],
    ) -> OutputCheckReport:
        """Check `frames` (index -> RGB frame, before the marks); raise `OutputBlocked` on a violation.

        `faces_of` finds a frame's faces, `planned[index]` is each person's planned face box there.
        `read` each frame, then `decide`: the producer calls the two apart, reading each frame while
        the rest of the video is still rendering."""
        return self.decide(
            {
                i: self.read(
                    frames[i], faces_of(i, frames[i]) if self.age_estimator else (), planned.get(i, {})
                )
                for i in sorted(frames)
            }
        )

    def read(self, frame: np.ndarray, faces: Sequence[FrameFace], planned: Mapping[str, Box]) -> FrameReading:
        """What the models see in one frame (content filter, then each full face's age); decides nothing.

        Frames are independent, so each can be read as soon as it is made, on any thread (both models
        are thread-safe and release the GIL while they run)."""
        explicit: list[Detection] = []
        explicit_score = 0.0
        if self.content_filter is not None:
            detections = self.content_filter.detect(frame)
            explicit = self.content_filter.explicit(detections)
            explicit_score = max([0.0, *(d.score for d in detections if d.explicit)])
        ages: list[tuple[str, float]] = []
        skipped = 0
        if self.age_estimator is not None:
            for face in faces:
                owner = face_owner(face.box, planned)
                if owner is None:
                    skipped += 1
                    continue
                try:
                    ages.append((owner, self.age_estimator.estimate(frame, face.landmarks)))
                except ValueError:  # degenerate landmarks (eye corners coincide): not a face to read
                    skipped += 1
        return FrameReading(tuple(explicit), explicit_score, tuple(ages), skipped)

    def decide(self, readings: Mapping[int, FrameReading]) -> OutputCheckReport:
        """The decision over every checked frame's reading; raise `OutputBlocked` on a violation.

        The content filter goes first on every frame (in index order, the first explicit frame is
        named); then the age decisions described in the module docstring."""
        indices = tuple(sorted(readings))
        max_score = 0.0
        if self.content_filter is not None:
            for index in indices:
                explicit = readings[index].explicit
                max_score = max(max_score, readings[index].explicit_score)
                if explicit:
                    worst = explicit[0]
                    raise _explicit(index, worst.label, worst.score, self.content_filter.threshold)
        if self.age_estimator is None:
            return OutputCheckReport(indices, 0, 0, round(max_score, 4), None)
        by_person: dict[str, list[tuple[float, int]]] = {}
        read = sum(len(readings[i].ages) for i in indices)
        skipped = sum(readings[i].faces_skipped for i in indices)
        for index in indices:
            for owner, age in readings[index].ages:
                if not np.isfinite(age) or age < LEGAL_AGE or (owner == "" and age < self.min_age):
                    raise _minor(index, age, self.min_age, owner or None)
                by_person.setdefault(owner, []).append((age, index))
        youngest = None
        for person, ages in sorted(by_person.items()):
            median = float(np.median([age for age, _ in ages]))
            lowest, lowest_frame = min(ages)
            youngest = lowest if youngest is None else min(youngest, lowest)
            if median < self.min_age:
                raise _minor(lowest_frame, median, self.min_age, person, lowest)
        return OutputCheckReport(indices, read, skipped, round(max_score, 4), youngest)


def _explicit(frame: int, label: str, score: float, threshold: float) -> OutputBlocked:
    name = label.lower().replace("_", " ")
    return OutputBlocked(
        f"frame {frame} of the generated video appears to show explicit content ({name}); the video was"
        " not stored",
        None,
        [
            {
                "check": CHECK_EXPLICIT,
                "frame": frame,
                "label": label,
                "score": round(score, 3),
                "threshold": threshold,
            }
        ],
        check=CHECK_EXPLICIT,
        frame=frame,
    )


def _minor(
    frame: int, age: float, min_age: float, person: str | None, lowest: float | None = None
) -> OutputBlocked:
    """`age`: the one face's estimate, or (with `lowest`, that of `frame`) the person's median."""
    who = f"subject {person!r}" if person else "a face"
    if lowest is None:
        found = f"{who} in frame {frame} of the generated video is estimated {age:.1f} years old"
    else:
        found = (
            f"{who} is estimated {age:.1f} years old in the generated video (median over the checked frames;"
            f" frame {frame} reads {lowest:.1f})"
        )
    error: dict[str, object] = {
        "check": CHECK_MINOR,
        "frame": frame,
        "estimated_age": round(float(age), 1),
        "min_age": min_age,
    }
    if lowest is not None:
        error["frame_estimated_age"] = round(float(lowest), 1)
    return OutputBlocked(
        f"{found}, under the {min_age:g} years this service requires: they may be a minor, and the video"
        " was not stored",
        person,
        [error],
        check=CHECK_MINOR,
        frame=frame,
    )


class BlockedRecord(BaseModel):
    """The append-only record of one blocked output: what was found where, never any pixels."""

    record_id: str = Field(description="Unique id of this record (a job retried after a block has two).")
    job_id: str = Field(description="The job whose generated video was blocked.")
    blocked_at: datetime = Field(description="When the check blocked it (UTC).")
    check: Literal["explicit_content", "subject_may_be_minor"] = Field(description="Which check failed.")
    frame: int = Field(description="Index of the frame that failed, in the generated video.")
    score: float = Field(
        description="explicit_content: the exposed class's score (0..1); subject_may_be_minor: the age"
        " estimate in years."
    )
    threshold: float = Field(description="What the score was held against (content threshold or min age).")
    label: str | None = Field(None, description="The NudeNet class that scored (explicit_content only).")
    backend: str = Field(description="The generation backend that made the frames.")
    frames_checked: list[int] = Field(description="The frames the check looked at, in order.")


def record_blocked(
    store: ObjectStore, job_id: str, backend: str, blocked: OutputBlocked, frames_checked: Sequence[int]
) -> BlockedRecord:
    """Write the record of `blocked` under a key never written before:
    `blocked/{YYYY}/{MM}/{DD}/{blocked_at}-{job_id}-{record_id}.json`. Outside every job's prefix, so
    erasing the job (DELETE, retention) leaves it, as it leaves the consent audit."""
    found = (blocked.errors or [{}])[0]
    explicit = blocked.check == CHECK_EXPLICIT
    now = utcnow()
    record = BlockedRecord(
        record_id="blk_" + secrets.token_hex(8),
        job_id=job_id,
        blocked_at=now,
        check="explicit_content" if explicit else "subject_may_be_minor",
        frame=blocked.frame,
        score=float(found.get("score" if explicit else "estimated_age", float("nan"))),
        threshold=float(found.get("threshold" if explicit else "min_age", float("nan"))),
        label=found.get("label") if explicit else None,
        backend=backend,
        frames_checked=list(frames_checked),
    )
    key = f"{BLOCKED_PREFIX}{now:%Y/%m/%d}/{now:%Y%m%dT%H%M%S%fZ}-{job_id}-{record.record_id}.json"
    store.put(key, record.model_dump_json().encode(), "application/json")
    return record


def blocked_records(store: ObjectStore, job_id: str | None = None) -> list[BlockedRecord]:
    """Every blocked-output record, or those of one job (a scan: an operator tool, not a hot path)."""
    records = [BlockedRecord.model_validate_json(store.get(k)) for k in store.list(BLOCKED_PREFIX)]
    return [r for r in records if job_id is None or r.job_id == job_id]
