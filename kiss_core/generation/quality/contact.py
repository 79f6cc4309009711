"""Contact: how close the mouth of one person comes to where it should touch the other."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from kiss_core.faces.analysis import DetectedFace, DlibFaceAnalyzer
from kiss_core.generation.quality.faces import (
    MATCH_RADIUS,
    Box,
    assign_faces,
    box_centre,
    detector_box,
    predict_landmarks,
)
from kiss_core.generation.quality.seam import seam_ratio
from kiss_core.media.geometry import CHEEK_LEFT, MOUTH, face_width
from kiss_core.media.images import require_rgb
from kiss_core.schemas import SUBJECTS, ContactQuality


def mouth_center(landmarks: np.ndarray) -> np.ndarray:
    """Mean of the 20 mouth landmarks (48-67)."""
    return np.asarray(landmarks, dtype=np.float64)[MOUTH].mean(axis=0)


def contact_quality(
    frame: np.ndarray,
    contact_index: int,
    expected: Mapping[str, Any],
    analyzer: DlibFaceAnalyzer | None = None,
    upsample: int | None = None,
    target: Literal["lips", "cheek"] = "lips",
    detections: Sequence[DetectedFace] | None = None,
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
    half-hidden back face that HOG misses is still measured at its expected box. `detections`, when
    given, are the analyzer's faces of this frame already found (the producer detects once).

    `seam` (kiss_core.generation.quality.seam): the luma gradient along the boundary between the two
    faces over that inside them, on the planned landmarks when `expected` gives both (where the
    renderer was told to put the faces: the predictor on a half-hidden back face is a guess), else on
    the predicted ones; None when a face is not located or the faces do not meet.
    """
    image = require_rgb(frame)
    boxes: dict[str, Box | None] = {}
    centres: dict[str, np.ndarray] = {}
    planned: list[np.ndarray] = []  # 68 planned landmarks per subject, in SUBJECTS order
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
            if len(array) == 68:
                planned.append(array)
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
            s: centres[s] if s in centres else box_centre(boxes[s])
            for s in SUBJECTS
            if s in centres or boxes[s]
        }
        widths = {s: boxes[s][2] - boxes[s][0] for s in wanted if boxes[s] is not None}  # type: ignore[index]
        faces = analyzer.detect(image, upsample) if detections is None else detections
        found = [(face, np.empty(0)) for face in faces]
        for matched, face_index in assign_faces(found, wanted, widths, MATCH_RADIUS).items():
            boxes[matched] = found[face_index][0].box
    for placed, centre in centres.items():
        other = boxes.get("b" if placed == "a" else "a")
        if boxes[placed] is None and other is not None:
            half = (other[2] - other[0]) / 2
            boxes[placed] = (centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half)
    landmarks = contact_landmarks(image, boxes)
    outlines = planned if len(planned) == 2 else landmarks  # the seam on the plan's faces when known
    return ContactQuality(
        frame=int(contact_index),
        target=target,
        mouth_distance=None if landmarks is None else landmarks_distance(*landmarks, target),
        seam=None if outlines is None else seam_ratio(image, outlines[0], outlines[1]),
    )


def contact_landmarks(
    image: np.ndarray, boxes: Mapping[str, Box | None]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Each face's 68 landmarks at the contact: the shape predictor on its box (no detection)."""
    if any(boxes.get(s) is None for s in SUBJECTS):
        return None
    a, b = (predict_landmarks(image, boxes[s]) for s in SUBJECTS)  # type: ignore[arg-type]
    return a, b


def landmarks_distance(
    landmarks_a: np.ndarray, landmarks_b: np.ndarray, target: str = "lips"
) -> float | None:
    """a's mouth centre to the target on b, in mean face widths (see `contact_quality`)."""
    width = (face_width(landmarks_a) + face_width(landmarks_b)) / 2
    if width <= 1.0:
        return None
    aim = landmarks_b[CHEEK_LEFT].mean(axis=0) if target == "cheek" else mouth_center(landmarks_b)
    return float(np.linalg.norm(mouth_center(landmarks_a) - aim) / width)


def mouth_distance(image: np.ndarray, boxes: Mapping[str, Box | None], target: str = "lips") -> float | None:
    """`contact_quality`'s number for faces at known boxes: landmarks predicted on each, no detection."""
    landmarks = contact_landmarks(image, boxes)
    return None if landmarks is None else landmarks_distance(*landmarks, target)
