"""Output checks: the four known failure modes of a kiss video, measured on its frames.

- identity `similarity_min` / `similarity_mean`: cosine similarity of the dlib 128-D descriptor of
  each face found in a checked frame to the subject's reference descriptor; -1..1 (0.8..1 in
  practice), the same person scores above `same_person_threshold` (0.92). With an insightface pack
  mounted the producer passes its ArcFace embedder instead (unrelated faces near 0, the same person
  above `arcface_same_person_threshold`, 0.4); the report's `similarity` names which.
- identity `visible_share`: frames_found / frames_checked, the share of checked frames in which that
  person's face was found; 0..1 (the back face may be hidden at the contact).
- contact `mouth_distance`: distance between the two mouth centres (mean of landmarks 48-67) at the
  contact frame / the mean face width (jaw span, landmark 0 to 16); 0..~3, below ~0.3 the lips
  meet, 1 = a face width apart.
- flicker `mean` / `p95`: mean absolute luma change (BT.601, 0..255) between consecutive frames
  inside the static mask, after a Gaussian blur (sigma 1.5 px) that hides codec noise; mean and
  95th percentile over frame pairs; 0 = perfectly stable, below ~1 invisible.
- lighting `delta_e_input` / `delta_e_output`: CIE76 ΔE between the two people's mean skin colour in
  CIE Lab (cheeks, forehead and nose from the landmarks; no eyes, brows or mouth); 0..~100, below 2
  barely perceptible, above 10 clearly different lighting.

Faces are found in a sample of frames and matched to the person the motion plan put there (or, for
any video without a plan, to the person tracked there since the first frame with two faces), so
face merging at the lip contact or a swapped identity shows up as low similarity for that subject.

At the contact the back face is partly hidden and HOG often misses it, so the contact distance does
not depend on detection: dlib's 68-point shape predictor runs directly on the rectangle where the
face is expected (planned, or interpolated from the frames where it was found), refined once on
its own answer.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import dlib
import face_recognition_models
import numpy as np

from kiss_core.faces.analysis import DetectedFace, DlibFaceAnalyzer
from kiss_core.faces.embedding import FaceEmbedder, cosine_similarity
from kiss_core.media.geometry import CHEEK_LEFT, MOUTH, face_width
from kiss_core.scene.lighting import skin_stats
from kiss_core.schemas import (
    SUBJECTS,
    ContactQuality,
    FlickerQuality,
    LightingQuality,
    QualityReport,
    SubjectQuality,
)

MATCH_RADIUS = 0.75  # a detection counts for a subject if its centre is within this many face widths
TRACK_RADIUS = 1.0  # without a plan: a detection continues a track within this many face widths
FLICKER_BLUR_SIGMA = 1.5  # px; hides x264 noise and single-pixel dither, keeps real changes
STATIC_MARGIN = 0.5  # room around each face (fraction of its size on every side) that may change
MAX_CHECKED = 32  # frames checked for faces by video_quality_report unless told otherwise

# dlib's HOG boxes relative to the 68 landmarks (measured on the test faces, 83 detections): a square
# of side 1.06 jaw spans, centred 0.05 jaw spans above the landmark centroid.
_BOX_SIDE = 1.06
_BOX_RAISE = 0.05

Box = tuple[float, float, float, float]


# --- landmarks on a known rectangle -------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _predictor() -> Any:
    return dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())


# dlib objects keep scratch state: one shared predictor must never run in two threads at once.
_PREDICTOR_LOCK = threading.Lock()


def mouth_center(landmarks: np.ndarray) -> np.ndarray:
    """Mean of the 20 mouth landmarks (48-67)."""
    return np.asarray(landmarks, dtype=np.float64)[MOUTH].mean(axis=0)


def detector_box(landmarks: np.ndarray) -> Box:
    """The rectangle dlib's HOG detector would give for a face with these 68 landmarks.

    The shape predictor was trained on HOG boxes, so it is fed boxes of the same framing.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    side = _BOX_SIDE * face_width(points)
    cx, cy = points.mean(axis=0)
    cy -= _BOX_RAISE * face_width(points)
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def predict_landmarks(frame: np.ndarray, box: Sequence[float], refine: int = 1) -> np.ndarray:
    """68 landmarks (float64, (68, 2)) from dlib's shape predictor run on `box` (x0, y0, x1, y1).

    No detection: this works where HOG misses a half-hidden face. With `refine` > 0 the predictor
    runs again on the detector-like box of its own answer, which pulls a box that is somewhat off
    (plan vs. render, interpolation between checked frames) onto the face that is really there.
    """
    image = _check_rgb(frame)
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"`box` has to be (x0, y0, x1, y1) with x1 > x0 and y1 > y0 but is {tuple(box)}")
    predictor = _predictor()
    points = np.empty((68, 2))
    for _ in range(1 + max(0, refine)):
        rect = dlib.rectangle(round(x0), round(y0), round(x1) - 1, round(y1) - 1)
        with _PREDICTOR_LOCK:
            shape = predictor(image, rect)
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        x0, y0, x1, y1 = detector_box(points)
    return points


# --- identity ------------------------------------------------------------------------------------


def identity_report(
    frames: Sequence[np.ndarray],
    expected_centers: dict[str, np.ndarray],
    references: dict[str, np.ndarray],
    analyzer: DlibFaceAnalyzer,
    threshold: float,
    upsample: int | None = None,
    embedder: FaceEmbedder | None = None,
) -> QualityReport:
    """Per-subject similarity of the faces found where the plan expects each person, over `frames`.

    `expected_centers[subject]` is (len(frames), 2): the planned face centre (x, y) in each frame.
    Each detection is given to at most one subject (closest pairs first), so two people whose faces
    meet at the contact cannot both claim the same face. Faces are found by `analyzer`; similarities
    are cosines (-1..1) of `embedder`'s embeddings (None: the analyzer's dlib descriptors), so the
    `references` must come from the same embedder; `visible_share` = frames_found / frames_checked (0..1).
    """
    subjects = sorted(references)
    for subject in subjects:
        centres = np.asarray(expected_centers.get(subject, np.empty((0, 2))), dtype=np.float64)
        if centres.shape != (len(frames), 2):
            raise ValueError(
                f"`expected_centers[{subject!r}]` has to be ({len(frames)}, 2) but is {centres.shape}"
            )
    embedder = embedder or analyzer
    similarities: dict[str, list[float]] = {s: [] for s in subjects}
    for index, frame in enumerate(frames):
        found = analyzer.find_faces(frame, upsample, embedder)
        centres = {s: np.asarray(expected_centers[s][index], dtype=np.float64) for s in subjects}
        for subject, face_index in _assign(found, centres, {}, MATCH_RADIUS).items():
            similarities[subject].append(cosine_similarity(found[face_index][1], references[subject]))
    return QualityReport(
        similarity=embedder.description,
        threshold=threshold,
        subjects=[_subject_quality(s, similarities[s], len(frames)) for s in subjects],
    )


def _assign(
    found: Sequence[tuple[DetectedFace, np.ndarray]],
    centres: Mapping[str, np.ndarray],
    widths: Mapping[str, float],
    radius: float,
) -> dict[str, int]:
    """subject -> index into `found`: closest pairs first, each face and subject used once.

    A face is a candidate for a subject if its centre is within `radius` face widths of the subject's
    centre (the subject's own width from `widths` where known, else the detection's).
    """
    candidates = []
    for subject, centre in centres.items():
        for face_index, (face, _) in enumerate(found):
            distance = float(np.linalg.norm(face.center - centre))
            if distance <= radius * widths.get(subject, face.width):
                candidates.append((distance, subject, face_index))
    taken: dict[str, int] = {}
    for _, subject, face_index in sorted(candidates):
        if subject not in taken and face_index not in taken.values():
            taken[subject] = face_index
    return taken


def _subject_quality(subject: str, values: list[float], checked: int) -> SubjectQuality:
    return SubjectQuality(
        subject=subject,  # type: ignore[arg-type]
        similarity_min=min(values) if values else None,
        similarity_mean=float(np.mean(values)) if values else None,
        frames_found=len(values),
        frames_checked=checked,
        visible_share=len(values) / checked if checked else 0.0,
    )


# --- contact -------------------------------------------------------------------------------------


def contact_quality(
    frame: np.ndarray,
    contact_index: int,
    expected: Mapping[str, Any],
    analyzer: DlibFaceAnalyzer | None = None,
    upsample: int | None = None,
    target: Literal["lips", "cheek"] = "lips",
) -> ContactQuality:
    """How far a's mouth is from where it should touch b at the contact frame, in face widths.

    `mouth_distance` = |mouth centre a - target on b| / mean(face width a, face width b), with the
    mouth centre the mean of landmarks 48-67, the target b's mouth centre (`lips`) or the centre of
    b's image-left cheek (`cheek`: landmarks 2, 3, 31, 48, 41) and the face width the jaw span
    (landmark 0 to 16). Range 0..~3: below ~0.3 they touch; 0.5 is half a face width apart. None
    when a face cannot be located.

    `expected[subject]` says where each face should be, one of: a box (x0, y0, x1, y1); planned
    landmarks (N, 2) (their detector-like box is used); a centre (x, y). With an `analyzer`, a HOG
    detection within 0.75 face widths of the expected place replaces it (the render may differ from
    the plan); a centre nobody was found at becomes a square of the other subject's size. The
    landmarks come from dlib's shape predictor run on each box (see `predict_landmarks`), so a
    half-hidden back face that HOG misses is still measured at its expected box.
    """
    image = _check_rgb(frame)
    boxes: dict[str, Box | None] = {}
    centres: dict[str, np.ndarray] = {}
    for subject in SUBJECTS:
        value = expected.get(subject)
        if value is None:
            boxes[subject] = None
            continue
        array = np.asarray(value, dtype=np.float64)
        if array.shape == (4,):
            boxes[subject] = tuple(float(v) for v in array)  # type: ignore[assignment]
        elif array.ndim == 2 and array.shape[1] == 2 and len(array) >= 17:
            boxes[subject] = detector_box(array)
        elif array.shape == (2,):
            boxes[subject] = None
            centres[subject] = array
        else:
            raise ValueError(
                f"`expected[{subject!r}]` has to be a box (4,), landmarks (68, 2) or a centre (2,) "
                f"but is {array.shape}"
            )
    if analyzer is not None:
        # A face HOG finds near where it is expected is measured on its own detection box: the
        # render may have put it elsewhere than the plan. Expected boxes serve the faces HOG misses.
        wanted = {
            s: centres[s] if s in centres else _box_centre(boxes[s])
            for s in SUBJECTS
            if s in centres or boxes[s]
        }
        widths = {s: boxes[s][2] - boxes[s][0] for s in wanted if boxes[s] is not None}  # type: ignore[index]
        found = [(face, np.empty(0)) for face in analyzer.detect(image, upsample)]
        for subject, face_index in _assign(found, wanted, widths, MATCH_RADIUS).items():
            boxes[subject] = found[face_index][0].box
    for subject, centre in centres.items():
        other = boxes.get("b" if subject == "a" else "a")
        if boxes[subject] is None and other is not None:
            half = (other[2] - other[0]) / 2
            boxes[subject] = (centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half)
    return ContactQuality(
        frame=int(contact_index), target=target, mouth_distance=_mouth_distance(image, boxes, target)
    )


def _mouth_distance(image: np.ndarray, boxes: Mapping[str, Box | None], target: str = "lips") -> float | None:
    if any(boxes.get(s) is None for s in SUBJECTS):
        return None
    landmarks = [predict_landmarks(image, boxes[s]) for s in SUBJECTS]  # type: ignore[arg-type]
    width = (face_width(landmarks[0]) + face_width(landmarks[1])) / 2
    if width <= 1.0:
        return None
    aim = landmarks[1][CHEEK_LEFT].mean(axis=0) if target == "cheek" else mouth_center(landmarks[1])
    return float(np.linalg.norm(mouth_center(landmarks[0]) - aim) / width)


# --- flicker -------------------------------------------------------------------------------------


def flicker_quality(frames: Sequence[np.ndarray], static_mask: np.ndarray | None = None) -> FlickerQuality:
    """Temporal stability of the regions that should not change.

    For each pair of consecutive frames: the mean absolute difference of their luma (BT.601, 0..255),
    each blurred with a Gaussian of sigma 1.5 px first so codec noise does not count, over the pixels
    where `static_mask` (H, W) is true (all pixels when None or when the mask is empty). `mean` and
    `p95` are the mean and 95th percentile of that per-pair value (0..255, 0 = perfectly stable);
    `frames` is how many frames were compared. Fewer than two frames: 0.
    """
    meter = FlickerMeter(static_mask)
    for frame in frames:
        meter.add(frame)
    return meter.result()


class FlickerMeter:
    """`flicker_quality` one frame at a time, so a renderer can measure while it streams frames out."""

    def __init__(self, static_mask: np.ndarray | None = None):
        self._static = None if static_mask is None else np.asarray(static_mask, dtype=bool)
        self._mask: np.ndarray | None = None
        self._shape: tuple[int, int] | None = None
        self._previous: np.ndarray | None = None
        self._changes: list[float] = []
        self.count = 0

    def add(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame)
        if self._shape is None:
            self._shape = (frame.shape[0], frame.shape[1])
            if self._static is not None:
                if self._static.shape != self._shape:
                    raise ValueError(f"`static_mask` has to be {self._shape} but is {self._static.shape}")
                if self._static.any() and not self._static.all():
                    self._mask = self._static.astype(np.uint8)
        elif frame.shape[:2] != self._shape:
            raise ValueError(f"all frames must be one size but frame {self.count} is {frame.shape[:2]}")
        luma = _luma(frame)
        if self._previous is not None:
            diff = cv2.absdiff(luma, self._previous)
            self._changes.append(float(cv2.mean(diff, self._mask)[0]))
        self._previous = luma
        self.count += 1

    def result(self) -> FlickerQuality:
        if not self._changes:
            return FlickerQuality(mean=0.0, p95=0.0, frames=self.count)
        values = np.asarray(self._changes)
        return FlickerQuality(
            mean=float(values.mean()), p95=float(np.percentile(values, 95)), frames=self.count
        )


def _luma(frame: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
    return cv2.GaussianBlur(gray.astype(np.float32), (0, 0), FLICKER_BLUR_SIGMA)


def static_mask_from_plan(
    plan_landmarks: Mapping[str, np.ndarray], shape: Sequence[int], margin: float = STATIC_MARGIN
) -> np.ndarray:
    """(H, W) bool, true where no face ever comes: the inverse of the union, over all frames and both
    people, of each face's landmark hull grown by `margin` of its size on every side (0.5: a hull
    twice as wide and tall, about its centre, which takes in hair, ears and neck).

    `plan_landmarks[subject]` is (T, 68, 2) (or (68, 2)) in frame pixels; `shape` is (H, W, ...).
    """
    height, width = int(shape[0]), int(shape[1])
    covered = np.zeros((height, width), dtype=np.uint8)
    scale = 1.0 + 2.0 * max(0.0, margin)
    for landmarks in plan_landmarks.values():
        track = np.asarray(landmarks, dtype=np.float64)
        if track.ndim == 2:
            track = track[None]
        for points in track:
            hull = cv2.convexHull(points.astype(np.float32))[:, 0].astype(np.float64)
            centre = hull.mean(axis=0)
            grown = centre + (hull - centre) * scale
            cv2.fillConvexPoly(covered, np.round(grown).astype(np.int32), 1)
    return covered == 0


def static_mask_from_boxes(
    boxes: Sequence[Sequence[float]], shape: Sequence[int], margin: float = STATIC_MARGIN
) -> np.ndarray:
    """(H, W) bool, true outside every box (x0, y0, x1, y1) grown by `margin` of its size per side."""
    height, width = int(shape[0]), int(shape[1])
    static = np.ones((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mx, my = (x1 - x0) * margin, (y1 - y0) * margin
        static[
            max(0, int(np.floor(y0 - my))) : max(0, int(np.ceil(y1 + my))),
            max(0, int(np.floor(x0 - mx))) : max(0, int(np.ceil(x1 + mx))),
        ] = False
    return static


# --- lighting ------------------------------------------------------------------------------------


def mean_skin_lab(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray | None:
    """Mean CIE Lab colour (L 0..100, a/b about -128..127; D65, sRGB input) of the skin region of one
    face (kiss_core.scene.lighting.skin_mask), the 10% darkest and 10% brightest pixels by L left out.
    None when under 20 skin pixels."""
    stats = skin_stats(_check_rgb(image), landmarks)
    return None if stats is None else stats.mean


def delta_e(lab_a: np.ndarray, lab_b: np.ndarray) -> float:
    """CIE76 colour difference: Euclidean distance in Lab (about 2.3 = just noticeable)."""
    return float(np.linalg.norm(np.asarray(lab_a, dtype=np.float64) - np.asarray(lab_b, dtype=np.float64)))


def lighting_delta_e(frame: np.ndarray, landmarks_a: np.ndarray, landmarks_b: np.ndarray) -> float | None:
    """CIE76 ΔE between the two people's mean skin colour in one frame (see `mean_skin_lab`).

    0 = identical skin tone and lighting; < 2 imperceptible; > 10 clearly different. None when a
    face has too little visible skin.
    """
    return photos_delta_e(frame, landmarks_a, frame, landmarks_b)


def photos_delta_e(
    photo_a: np.ndarray, landmarks_a: np.ndarray, photo_b: np.ndarray, landmarks_b: np.ndarray
) -> float | None:
    """The same ΔE between two separate photos (the `delta_e_input` of the report)."""
    lab_a = mean_skin_lab(photo_a, landmarks_a)
    lab_b = mean_skin_lab(photo_b, landmarks_b)
    if lab_a is None or lab_b is None:
        return None
    return delta_e(lab_a, lab_b)


# --- everything, for any video -------------------------------------------------------------------


def checked_frames(frame_count: int, count: int, contact_index: int | None = None) -> list[int]:
    """Evenly spaced frame indices from first to last (at most `count`), plus the contact frame."""
    if frame_count <= 0:
        return []
    spaced = np.linspace(0, frame_count - 1, max(1, min(count, frame_count))).round().astype(int)
    indices = set(spaced.tolist())
    if contact_index is not None and 0 <= contact_index < frame_count:
        indices.add(int(contact_index))
    return sorted(indices)


def video_quality_report(
    frames: Sequence[np.ndarray],
    references: dict[str, np.ndarray],
    analyzer: DlibFaceAnalyzer,
    threshold: float,
    plan_centres: Mapping[str, np.ndarray] | None = None,
    contact_index: int | None = None,
    *,
    max_checked: int = MAX_CHECKED,
    upsample: int | None = None,
    delta_e_input: float | None = None,
    margin: float = STATIC_MARGIN,
) -> QualityReport:
    """The full report (identity, contact, flicker, lighting) for a video, with or without its plan.

    - Checked frames: `max_checked` evenly spaced frames plus `contact_index`; faces are detected
      (HOG, `upsample` passes) and described in each.
    - Who is who: with `plan_centres` (per subject (T, 2) planned face centres, or (T, 68, 2) planned
      landmarks) a face belongs to the subject planned within 0.75 face widths of it. Without a plan,
      on the first checked frame with two faces the left one (of the two largest) is `a` and the
      right one `b`; both are then tracked forwards and backwards by nearest centre (within one
      face width between checked frames).
    - Contact: at `contact_index` when given, else at the frame where the two mouth centres are
      closest (the closest checked frame, then every frame between its checked neighbours); each
      face's landmarks come from the shape predictor on its detection box there, else on its
      planned box or on a box interpolated between its detections (see `contact_quality`).
    - Flicker: over all frames, inside the static mask (`static_mask_from_plan` for planned
      landmarks, else outside every tracked face box grown by `margin`).
    - Lighting: ΔE of the skin colours on the first checked frame where both faces are located;
      `delta_e_input` (of the two photos, see `photos_delta_e`) is passed through.
    """
    frame_count = len(frames)
    subjects = sorted(references)
    if frame_count == 0:
        raise ValueError("no frames to check")
    if contact_index is not None and not 0 <= contact_index < frame_count:
        raise ValueError(f"`contact_index` has to be in 0..{frame_count - 1} but is {contact_index}")
    shape = np.asarray(frames[0]).shape
    planned_landmarks: dict[str, np.ndarray] = {}
    planned_centres: dict[str, np.ndarray] = {}
    for subject, value in (plan_centres or {}).items():
        array = np.asarray(value, dtype=np.float64)
        if array.ndim == 3 and array.shape[0] == frame_count and array.shape[2] == 2:
            planned_landmarks[subject] = array
            planned_centres[subject] = array.mean(axis=1)
        elif array.shape == (frame_count, 2):
            planned_centres[subject] = array
        else:
            raise ValueError(
                f"`plan_centres[{subject!r}]` has to be ({frame_count}, 2) or ({frame_count}, 68, 2) "
                f"but is {array.shape}"
            )
    if plan_centres is not None and set(planned_centres) != set(subjects):
        raise ValueError(f"`plan_centres` has to name {subjects} but names {sorted(planned_centres)}")

    checked = checked_frames(frame_count, max_checked, contact_index)
    found = {i: analyzer.find_faces(np.asarray(frames[i]), upsample) for i in checked}
    if planned_centres:
        tracks: dict[str, dict[int, int]] = {s: {} for s in subjects}
        for i in checked:
            centres = {s: planned_centres[s][i] for s in subjects}
            for subject, face_index in _assign(found[i], centres, {}, MATCH_RADIUS).items():
                tracks[subject][i] = face_index
    else:
        tracks = _track(found, checked, subjects)

    similarities = {
        s: [cosine_similarity(found[i][f][1], references[s]) for i, f in sorted(tracks[s].items())]
        for s in subjects
    }
    detected_boxes = {s: {i: found[i][f][0].box for i, f in tracks[s].items()} for s in subjects}
    boxes = _boxes_per_frame(detected_boxes, planned_landmarks, planned_centres, frame_count)

    def located(index: int) -> dict[str, Box | None]:
        """Each face's box at a frame: its own detection there, else the planned/interpolated box."""
        return {
            s: detected_boxes[s].get(index)
            or (None if boxes[s] is None else tuple(float(v) for v in boxes[s][index]))  # type: ignore[index]
            for s in subjects
        }

    def landmarks_at(index: int, subject: str) -> np.ndarray | None:
        if index in tracks[subject]:
            return found[index][tracks[subject][index]][0].landmarks
        box = located(index)[subject]
        return None if box is None else predict_landmarks(np.asarray(frames[index]), box)

    contact = None
    if len(subjects) == 2 and all(boxes[s] is not None for s in subjects):
        if contact_index is None:
            distances = {i: _mouth_distance(_check_rgb(frames[i]), located(i)) for i in checked}
            measured = {i: d for i, d in distances.items() if d is not None}
            if measured:
                best = min(measured, key=lambda i: measured[i])
                # The closest checked frame is a coarse answer: look at every frame between its
                # neighbours too (predictor on the interpolated boxes, no detection).
                at = checked.index(best)
                lo, hi = checked[max(0, at - 1)], checked[min(len(checked) - 1, at + 1)]
                for index in range(lo + 1, hi):
                    if index not in measured:
                        distance = _mouth_distance(_check_rgb(frames[index]), located(index))
                        if distance is not None:
                            measured[index] = distance
                best = min(measured, key=lambda i: measured[i])
                contact = ContactQuality(frame=best, mouth_distance=measured[best])
        else:
            contact = contact_quality(
                np.asarray(frames[contact_index]), contact_index, located(contact_index)
            )

    if planned_landmarks:
        static = static_mask_from_plan(planned_landmarks, shape, margin)
    else:
        all_boxes = [tuple(box) for s in subjects if boxes[s] is not None for box in boxes[s]]
        static = static_mask_from_boxes(all_boxes, shape, margin) if all_boxes else None
    flicker = flicker_quality(frames, static)

    lighting = LightingQuality(delta_e_input=delta_e_input)
    for index in checked:
        marks = [landmarks_at(index, s) for s in subjects]
        if len(marks) == 2 and all(m is not None for m in marks):
            lighting.delta_e_output = lighting_delta_e(np.asarray(frames[index]), marks[0], marks[1])  # type: ignore[arg-type]
            break

    return QualityReport(
        threshold=threshold,
        subjects=[_subject_quality(s, similarities[s], len(checked)) for s in subjects],
        contact=contact,
        flicker=flicker,
        lighting=lighting,
    )


def _track(
    found: Mapping[int, Sequence[tuple[DetectedFace, np.ndarray]]],
    checked: Sequence[int],
    subjects: list[str],
) -> dict[str, dict[int, int]]:
    """Without a plan: subject -> {frame index: face index}, seeded left/right, then nearest centre."""
    tracks: dict[str, dict[int, int]] = {s: {} for s in subjects}
    start = next((n for n, i in enumerate(checked) if len(found[i]) >= 2), None)
    if start is None or len(subjects) != 2:
        return tracks  # never two faces at once: nobody can be told apart by position
    seed_frame = checked[start]
    faces = found[seed_frame]
    two = sorted(range(len(faces)), key=lambda f: faces[f][0].width, reverse=True)[:2]
    two.sort(key=lambda f: faces[f][0].center[0])
    for subject, face_index in zip(subjects, two, strict=True):
        tracks[subject][seed_frame] = face_index
    for order in (checked[start + 1 :], checked[:start][::-1]):
        last = {s: faces[f][0] for s, f in zip(subjects, two, strict=True)}
        for i in order:
            centres = {s: last[s].center for s in subjects}
            widths = {s: last[s].width for s in subjects}
            for subject, face_index in _assign(found[i], centres, widths, TRACK_RADIUS).items():
                tracks[subject][i] = face_index
                last[subject] = found[i][face_index][0]
    return tracks


def _boxes_per_frame(
    detected: Mapping[str, Mapping[int, Box]],
    planned_landmarks: Mapping[str, np.ndarray],
    planned_centres: Mapping[str, np.ndarray],
    frame_count: int,
) -> dict[str, np.ndarray | None]:
    """(T, 4) box per subject for every frame, or None where the subject was never located.

    Planned landmarks give detector-like boxes; planned centres give squares as wide as the median
    detection of that subject (or of anyone); otherwise detection boxes, linearly interpolated
    between the checked frames where the face was found and held beyond the first and last.
    """
    widths = [b[2] - b[0] for boxes in detected.values() for b in boxes.values()]
    result: dict[str, np.ndarray | None] = {}
    for subject, boxes in detected.items():
        if subject in planned_landmarks:
            result[subject] = np.array([detector_box(p) for p in planned_landmarks[subject]])
        elif subject in planned_centres:
            own = [b[2] - b[0] for b in boxes.values()]
            if not (own or widths):
                result[subject] = None
                continue
            half = float(np.median(own or widths)) / 2
            c = planned_centres[subject]
            result[subject] = np.stack(
                [c[:, 0] - half, c[:, 1] - half, c[:, 0] + half, c[:, 1] + half], axis=1
            )
        elif boxes:
            known = sorted(boxes)
            values = np.array([boxes[i] for i in known], dtype=np.float64)
            t = np.arange(frame_count)
            result[subject] = np.stack([np.interp(t, known, values[:, k]) for k in range(4)], axis=1)
        else:
            result[subject] = None
    return result


def _box_centre(box: Box | None) -> np.ndarray:
    assert box is not None
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def _check_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"`image` has to be RGB uint8 (H, W, 3) but is {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


# --- thresholds ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class QualityThresholds:
    """What a good preview scores; the README's metric table says why each number was chosen."""

    similarity_mean: float = 0.92  # = same_person_threshold: on average each face is still that person
    similarity_min: float = 0.85  # worst checked frame (pucker, turn, partial cover at the contact)
    visible_share: float = 0.4  # the back face is covered during the hold; HOG misses yaw beyond ~40°
    mouth_distance: float = 0.3  # lips (or lips and cheek) touch: under a third of a face width apart
    flicker_mean: float = 0.5  # luma levels; about 1 is where a viewer starts to see shimmer
    flicker_p95: float = 1.0
    lighting_ratio: float = 0.7  # harmonisation removes at least 30 % of a visible skin-tone gap ...
    lighting_floor: float = 2.0  # ... unless the gap is already below 2 ΔE (imperceptible)


def quality_problems(report: QualityReport, limits: QualityThresholds | None = None) -> list[str]:
    """Every way `report` falls short of `limits`, one readable line each; empty when it passes."""
    limits = limits or QualityThresholds()
    problems = []
    for subject in report.subjects:
        if subject.similarity_mean is None or subject.similarity_mean < limits.similarity_mean:
            problems.append(
                f"{subject.subject}: identity mean {subject.similarity_mean} < {limits.similarity_mean}"
            )
        if subject.similarity_min is None or subject.similarity_min < limits.similarity_min:
            problems.append(
                f"{subject.subject}: identity min {subject.similarity_min} < {limits.similarity_min}"
            )
        if subject.visible_share < limits.visible_share:
            problems.append(
                f"{subject.subject}: visible in {subject.visible_share:.2f} < {limits.visible_share}"
            )
    contact = report.contact
    if contact is None or contact.mouth_distance is None or contact.mouth_distance > limits.mouth_distance:
        distance = None if contact is None else contact.mouth_distance
        problems.append(f"contact: mouth distance {distance} > {limits.mouth_distance}")
    flicker = report.flicker
    if flicker is None or flicker.mean > limits.flicker_mean or flicker.p95 > limits.flicker_p95:
        problems.append(f"flicker: {flicker} above mean {limits.flicker_mean} / p95 {limits.flicker_p95}")
    lighting = report.lighting
    before = None if lighting is None else lighting.delta_e_input
    after = None if lighting is None else lighting.delta_e_output
    if after is None or after > max(limits.lighting_floor, limits.lighting_ratio * (before or 0.0)):
        problems.append(f"lighting: ΔE {before} -> {after}, not below {limits.lighting_ratio} x before")
    return problems
