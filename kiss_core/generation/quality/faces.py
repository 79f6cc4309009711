"""Where each person's face is in a video's frames: detection boxes, landmarks on a known box, and
which detection belongs to whom.

Faces are found in a sample of frames and matched to the person the motion plan put there (or, for
any video without a plan, to the person tracked there since the first frame with two faces), so
face merging at the lip contact or a swapped identity shows up as low similarity for that subject.

HOG is a frontal detector: it misses faces turned past ~40°, which the kiss styles reach. So the
faces of a frame are HOG's plus every face MediaPipe's full-range detector finds where HOG found
none (`with_turned_faces`), framed as HOG would frame it and with dlib's landmarks on that box: the
report's identity numbers stay dlib's descriptor on dlib's landmarks whichever detector found it.
Where the two faces meet nose to nose, both detectors read them as one face between the two people;
with the plan's landmarks each person is then looked for alone, the partner's side filled flat
(`faces_alone`).

At the contact the back face is partly hidden and HOG often misses it, so measurements there do
not depend on detection: dlib's 68-point shape predictor (the process's one copy, shared with the
face analyzer) runs directly on the rectangle where the face is expected (planned, or interpolated
from the frames where it was found), refined once on its own answer.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np

from kiss_core.faces.analysis import DetectedFace
from kiss_core.faces.dlib_models import shape_predictor
from kiss_core.faces.full_range_detector import FullRangeFace, FullRangeFaceDetector, full_range_detector, iou
from kiss_core.media.geometry import face_width
from kiss_core.media.images import require_rgb

K = TypeVar("K", bound=str)  # subject keys: "a"/"b" literals or plain strings

MATCH_RADIUS = 0.75  # a detection counts for a subject if its centre is within this many face widths
TRACK_RADIUS = 1.0  # without a plan: a detection continues a track within this many face widths

# dlib's HOG boxes relative to the 68 landmarks (measured on the test faces, 83 detections): a square
# of side 1.06 jaw spans, centred 0.05 jaw spans above the landmark centroid.
_BOX_SIDE = 1.06
_BOX_RAISE = 0.05
# dlib's HOG box relative to MediaPipe's full-range box of the same face (fitted on 146 faces both
# found: the wheels' photos and frontal preview frames): the same centre (offsets -0.003/+0.007 of
# the width, sd 0.05), a square 0.929 of its width (sd 0.09). The predictor's refinement does the rest.
_FULL_RANGE_SIDE = 0.929
SAME_FACE_IOU = 0.3  # a full-range box overlapping a HOG box by more is the same face
# The full-range detector's score threshold for a person looked for alone (`faces_alone`): MediaPipe's
# own default min_detection_confidence rather than its graph's 0.6. The search is confined to where
# the plan puts one person (the position gate guards it); a back face seen past the front face's
# edge scores 0.55-0.6 (synthetic subjects 0 and 2, french).
ALONE_MIN_SCORE = 0.5
# Two faces found alone whose boxes overlap by more are one face seen in halves from either side of the
# contact: a single face pasted where the two meet gives IoU 0.72-0.96 (median 0.86), two faces nose
# to nose 0.23-0.77 (bench/quality_detectors.py --every-pair, the 36 mouth kisses of 12 pairs).
ALONE_SAME_FACE_IOU = 0.75

Box = tuple[float, float, float, float]


def detector_box(landmarks: np.ndarray) -> Box:
    """The rectangle dlib's HOG detector would give for a face with these 68 landmarks.

    The shape predictor was trained on HOG boxes, so it is fed boxes of the same framing.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    side = _BOX_SIDE * face_width(points)
    cx, cy = points.mean(axis=0)
    cy -= _BOX_RAISE * face_width(points)
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def hog_like_box(face: FullRangeFace) -> Box:
    """The box HOG would give for a face the full-range detector found (see `_FULL_RANGE_SIDE`)."""
    cx, cy = face.center
    half = _FULL_RANGE_SIDE * face.width / 2
    return (cx - half, cy - half, cx + half, cy + half)


def turned_faces(
    frame: np.ndarray,
    faces: Sequence[DetectedFace],
    centres: Mapping[str, np.ndarray] | None = None,
    detector: FullRangeFaceDetector | None = None,
) -> list[DetectedFace]:
    """The faces the full-range detector finds in `frame` that overlap none of `faces` (HOG's).

    HOG misses turned faces and the full-range detector merges two faces that overlap by more than
    its suppression IoU into one, so neither alone finds what both do. Each face returned has a
    HOG-like box, dlib's landmarks predicted on it (refined once) and the detector's score.

    With planned `centres`: nothing when HOG already has a face near each person (the detector is
    not run), and only faces within `MATCH_RADIUS` of one person's centre, not of two. Where both
    people are planned within reach of one face (the hold: the front face covers the back one)
    position cannot say whose it is, and the front face, turned towards the partner, sits nearer the
    *back* person's planned centre: counted, it would measure one person against the other's photo.
    """
    if centres is not None and all(
        any(_within_reach(face, centre) for face in faces) for centre in centres.values()
    ):
        return []
    image = require_rgb(frame)
    boxes = np.array([face.box for face in faces], dtype=np.float64).reshape(-1, 4)
    added: list[DetectedFace] = []
    for turned in (detector or full_range_detector()).detect(image):
        if len(boxes) and float(iou(np.array(turned.box), boxes).max()) > SAME_FACE_IOU:
            continue
        box = hog_like_box(turned)
        candidate = DetectedFace(box=box, landmarks=np.empty((0, 2), np.float32), score=turned.score)
        if centres is not None and sum(_within_reach(candidate, c) for c in centres.values()) != 1:
            continue
        landmarks = predict_landmarks(image, box).astype(np.float32)
        added.append(DetectedFace(box=box, landmarks=landmarks, score=turned.score))
    return added


def with_turned_faces(
    frame: np.ndarray, faces: Sequence[DetectedFace], centres: Mapping[str, np.ndarray] | None = None
) -> list[DetectedFace]:
    """`faces` (HOG's, as they are: they keep the nearest-centre rule they always had) plus
    `turned_faces` (with planned `centres`: only those near one person)."""
    return [*faces, *turned_faces(frame, faces, centres)]


def alone(frame: np.ndarray, own: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """`frame` with everything beyond this person's planned face towards the partner filled flat.

    `own` and `partner` are the two people's planned landmarks (68, 2) in this frame. The cut runs
    vertically through `own`'s furthest landmark towards the partner (the nose tip, lips or chin, where
    the two meet), so the person's own profile stays whole; the fill is the frame's median colour.
    """
    image = require_rgb(frame).copy()
    fill = np.median(image[::8, ::8].reshape(-1, 3), axis=0).astype(image.dtype)
    own = np.asarray(own, dtype=np.float64)
    if float(np.asarray(partner, dtype=np.float64)[:, 0].mean()) >= float(own[:, 0].mean()):
        image[:, max(0, int(np.ceil(own[:, 0].max())) + 1) :] = fill
    else:
        image[:, : max(0, int(np.floor(own[:, 0].min())))] = fill
    return image


def faces_alone(
    frame: np.ndarray, planned: Mapping[K, np.ndarray], detector: FullRangeFaceDetector | None = None
) -> dict[K, tuple[DetectedFace, np.ndarray]]:
    """Each of two planned people looked for alone: subject -> (face, the image it was seen in).

    Where the two faces meet nose to nose (the hold of a mouth kiss, both turned 40-52° towards each
    other), every detector reads one half of each as a single frontal face between them: HOG and the
    full-range detector alike. Shown `alone` (the partner's side filled flat), the full-range detector
    finds each person's own turned face. A face counts if its centre is within `MATCH_RADIUS` of that
    person's planned centre; its landmarks are predicted, and it is to be described, on the image it
    was seen in, so the partner's pixels do not pull the landmarks or the descriptor.

    One face straddling the contact (two people merged into one) also shows a face to either side;
    seen so, the two boxes lie on nearly the same square, so two found with boxes overlapping by more
    than `ALONE_SAME_FACE_IOU` are taken for one face and nobody is found alone.
    """
    if len(planned) != 2:
        return {}
    (first, own_first), (second, own_second) = planned.items()
    found: dict[K, tuple[FullRangeFace, np.ndarray]] = {}
    for subject, own, partner in ((first, own_first, own_second), (second, own_second, own_first)):
        image = alone(frame, own, partner)
        centre = np.asarray(own, dtype=np.float64).mean(axis=0)
        near = [face for face in (detector or alone_detector()).detect(image) if _within_reach(face, centre)]
        if near:
            found[subject] = (min(near, key=lambda face: float(np.linalg.norm(face.center - centre))), image)
    if len(found) == 2:
        (one, _), (other, _) = found.values()
        if float(iou(np.array(one.box), np.array([other.box]))[0]) > ALONE_SAME_FACE_IOU:
            return {}
    seen: dict[K, tuple[DetectedFace, np.ndarray]] = {}
    for subject, (face, image) in found.items():
        box = hog_like_box(face)
        landmarks = predict_landmarks(image, box).astype(np.float32)
        seen[subject] = (DetectedFace(box=box, landmarks=landmarks, score=face.score), image)
    return seen


@functools.cache
def alone_detector() -> FullRangeFaceDetector:
    """The full-range detector at `ALONE_MIN_SCORE`, on the process's one interpreter."""
    return FullRangeFaceDetector(min_score=ALONE_MIN_SCORE)


def _within_reach(face: DetectedFace | FullRangeFace, centre: np.ndarray) -> bool:
    return float(np.linalg.norm(face.center - centre)) <= MATCH_RADIUS * face.width


def predict_landmarks(frame: np.ndarray, box: Sequence[float], refine: int = 1) -> np.ndarray:
    """68 landmarks (float64, (68, 2)) from dlib's shape predictor run on `box` (x0, y0, x1, y1).

    No detection: this works where HOG misses a half-hidden face. With `refine` > 0 the predictor
    runs again on the detector-like box of its own answer, which pulls a box that is somewhat off
    (plan vs. render, interpolation between checked frames) onto the face that is really there.
    """
    image = require_rgb(frame)
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"`box` has to be (x0, y0, x1, y1) with x1 > x0 and y1 > y0 but is {tuple(box)}")
    predictor = shape_predictor()
    points = np.empty((68, 2))
    for _ in range(1 + max(0, refine)):
        points = predictor.landmarks(image, (round(x0), round(y0), round(x1) - 1, round(y1) - 1))
        x0, y0, x1, y1 = detector_box(points)
    return points


def assign_faces(
    found: Sequence[tuple[DetectedFace, np.ndarray]],
    centres: Mapping[K, np.ndarray],
    widths: Mapping[K, float],
    radius: float,
) -> dict[K, int]:
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
    taken: dict[K, int] = {}
    for _, subject, face_index in sorted(candidates):
        if subject not in taken and face_index not in taken.values():
            taken[subject] = face_index
    return taken


def track_faces(
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
            for subject, face_index in assign_faces(found[i], centres, widths, TRACK_RADIUS).items():
                tracks[subject][i] = face_index
                last[subject] = found[i][face_index][0]
    return tracks


def boxes_per_frame(
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


def box_centre(box: Box | None) -> np.ndarray:
    """The (x, y) centre of a box its caller knows is there."""
    assert box is not None
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
