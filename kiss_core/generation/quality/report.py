"""The whole report (identity, contact, flicker, lighting) for any video, with or without its plan."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from kiss_core.faces.analysis import DetectedFace, DlibFaceAnalyzer
from kiss_core.faces.embedding import cosine_similarity
from kiss_core.generation.quality.contact import contact_landmarks, contact_quality, mouth_distance
from kiss_core.generation.quality.faces import (
    MATCH_RADIUS,
    Box,
    assign_faces,
    boxes_per_frame,
    faces_alone,
    predict_landmarks,
    track_faces,
    with_turned_faces,
)
from kiss_core.generation.quality.flicker import (
    STATIC_MARGIN,
    flicker_quality,
    static_mask_from_boxes,
    static_mask_from_plan,
)
from kiss_core.generation.quality.identity import both_share, subject_quality
from kiss_core.generation.quality.lighting import lighting_delta_e
from kiss_core.generation.quality.seam import seam_ratio
from kiss_core.media.images import require_rgb
from kiss_core.schemas import ContactQuality, LightingQuality, QualityReport

MAX_CHECKED = 32  # frames checked for faces by video_quality_report unless told otherwise


def box_at(track: np.ndarray | None, index: int) -> Box | None:
    """One frame's box of a (T, 4) per-frame track, or None where the subject was never located."""
    if track is None:
        return None
    x0, y0, x1, y1 = (float(v) for v in track[index])
    return (x0, y0, x1, y1)


def faces_of(
    frame: np.ndarray,
    analyzer: DlibFaceAnalyzer,
    upsample: int | None,
    turned_faces: bool = True,
    centres: Mapping[str, np.ndarray] | None = None,
) -> list[DetectedFace]:
    """The faces of one frame: HOG's, plus (if asked) the turned ones the full-range detector finds
    (near one planned person only, when `centres` are known: see `with_turned_faces`)."""
    faces = analyzer.detect(frame, upsample)
    return with_turned_faces(frame, faces, centres) if turned_faces else faces


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
    turned_faces: bool = True,
) -> QualityReport:
    """The full report (identity, contact, flicker, lighting) for a video, with or without its plan.

    - Checked frames: `max_checked` evenly spaced frames plus `contact_index`; faces are detected
      in each (HOG, `upsample` passes, plus with `turned_faces` the full-range detector's faces HOG
      missed: `with_turned_faces`) and those measured are described.
    - Who is who: with `plan_centres` (per subject (T, 2) planned face centres, or (T, 68, 2) planned
      landmarks) a face belongs to the subject planned within 0.75 face widths of it; with planned
      landmarks, a checked frame where that leaves someone without a face is looked at one person at
      a time (`faces_alone`, as `identity_report` does). Without a plan,
      on the first checked frame with two faces the left one (of the two largest) is `a` and the
      right one `b`; both are then tracked forwards and backwards by nearest centre (within one
      face width between checked frames).
    - Contact: at `contact_index` when given, else at the frame where the two mouth centres are
      closest (the closest checked frame, then every frame between its checked neighbours); each
      face's landmarks come from the shape predictor on its detection box there, else on its
      planned box or on a box interpolated between its detections (see `contact_quality`). The seam
      there is measured on the planned landmarks when given, else on those predicted landmarks.
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
    # HOG's faces plus the turned ones it misses, each with the image it was seen in; described only
    # once someone is measured on them.
    found = {
        i: [
            (face, np.asarray(frames[i]))
            for face in faces_of(
                np.asarray(frames[i]),
                analyzer,
                upsample,
                turned_faces,
                {s: c[i] for s, c in planned_centres.items()} if planned_centres else None,
            )
        ]
        for i in checked
    }
    if planned_centres:
        tracks: dict[str, dict[int, int]] = {s: {} for s in subjects}
        for i in checked:
            centres = {s: planned_centres[s][i] for s in subjects}
            for subject, face_index in assign_faces(found[i], centres, {}, MATCH_RADIUS).items():
                tracks[subject][i] = face_index
            if turned_faces and len(planned_landmarks) == 2 and sum(i in tracks[s] for s in subjects) < 2:
                for subject, seen in faces_alone(
                    np.asarray(frames[i]), {s: planned_landmarks[s][i] for s in subjects}
                ).items():
                    found[i].append(seen)
                    tracks[subject][i] = len(found[i]) - 1
    else:
        tracks = track_faces(found, checked, subjects)

    similarities = {
        s: [
            cosine_similarity(analyzer.embed(found[i][f][1], found[i][f][0].landmarks), references[s])
            for i, f in sorted(tracks[s].items())
        ]
        for s in subjects
    }
    detected_boxes = {s: {i: found[i][f][0].box for i, f in tracks[s].items()} for s in subjects}
    boxes = boxes_per_frame(detected_boxes, planned_landmarks, planned_centres, frame_count)

    def located(index: int) -> dict[str, Box | None]:
        """Each face's box at a frame: its own detection there, else the planned/interpolated box."""
        return {s: detected_boxes[s].get(index) or box_at(boxes[s], index) for s in subjects}

    def landmarks_at(index: int, subject: str) -> np.ndarray | None:
        if index in tracks[subject]:
            return found[index][tracks[subject][index]][0].landmarks
        box = located(index)[subject]
        return None if box is None else predict_landmarks(np.asarray(frames[index]), box)

    def seam_at(index: int) -> float | None:
        """The seam on the planned faces when the plan has landmarks, else on the predicted ones."""
        image = require_rgb(frames[index])
        outlines = (
            (planned_landmarks[subjects[0]][index], planned_landmarks[subjects[1]][index])
            if len(planned_landmarks) == 2
            else contact_landmarks(image, located(index))
        )
        return None if outlines is None else seam_ratio(image, *outlines)

    contact = None
    if len(subjects) == 2 and all(boxes[s] is not None for s in subjects):
        if contact_index is None:
            distances = {i: mouth_distance(require_rgb(frames[i]), located(i)) for i in checked}
            measured = {i: d for i, d in distances.items() if d is not None}
            if measured:
                best = min(measured, key=lambda i: measured[i])
                # The closest checked frame is a coarse answer: look at every frame between its
                # neighbours too (predictor on the interpolated boxes, no detection).
                at = checked.index(best)
                lo, hi = checked[max(0, at - 1)], checked[min(len(checked) - 1, at + 1)]
                for index in range(lo + 1, hi):
                    if index not in measured:
                        distance = mouth_distance(require_rgb(frames[index]), located(index))
                        if distance is not None:
                            measured[index] = distance
                best = min(measured, key=lambda i: measured[i])
                contact = ContactQuality(frame=best, mouth_distance=measured[best], seam=seam_at(best))
        else:
            contact = contact_quality(
                np.asarray(frames[contact_index]), contact_index, located(contact_index)
            )
            contact.seam = seam_at(contact_index)

    static: np.ndarray | None
    if planned_landmarks:
        static = static_mask_from_plan(planned_landmarks, shape, margin)
    else:
        all_boxes = [tuple(box) for s in subjects if (per_frame := boxes[s]) is not None for box in per_frame]
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
        subjects=[subject_quality(s, similarities[s], len(checked)) for s in subjects],
        both_found=both_share(
            sum(all(i in tracks[s] for s in subjects) for i in checked), len(checked), len(subjects)
        ),
        contact=contact,
        flicker=flicker,
        lighting=lighting,
    )
