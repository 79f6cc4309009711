"""Identity: is each person in the video still the person in their photo, frame by frame."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from kiss_core.faces.analysis import DetectedFace, DlibFaceAnalyzer
from kiss_core.faces.embedding import FaceEmbedder, cosine_similarity
from kiss_core.generation.quality.faces import MATCH_RADIUS, assign_faces, faces_alone, with_turned_faces
from kiss_core.schemas import QualityReport, SubjectQuality


def identity_report(
    frames: Sequence[np.ndarray],
    expected_centers: dict[str, np.ndarray],
    references: dict[str, np.ndarray],
    analyzer: DlibFaceAnalyzer,
    threshold: float,
    upsample: int | None = None,
    embedder: FaceEmbedder | None = None,
    detections: Sequence[Sequence[DetectedFace]] | None = None,
    *,
    turned_faces: bool = True,
    planned_landmarks: Mapping[str, np.ndarray] | None = None,
) -> QualityReport:
    """Per-subject similarity of the faces found where the plan expects each person, over `frames`.

    `expected_centers[subject]` is (len(frames), 2): the planned face centre (x, y) in each frame.
    Each detection is given to at most one subject (closest pairs first), so two people whose faces
    meet at the contact cannot both claim the same face. Faces are found by `analyzer`; similarities
    are cosines (-1..1) of `embedder`'s embeddings (None: the analyzer's dlib descriptors), so the
    `references` must come from the same embedder; `visible_share` = frames_found / frames_checked (0..1).
    `detections[i]`, when given, are the faces HOG already found in `frames[i]` (the producer detects
    once for the output check and this report); else HOG runs here. With `turned_faces` the full-range
    detector adds the faces HOG missed that are near one planned person only (`with_turned_faces`).
    With `planned_landmarks` too (subject -> (len(frames), 68, 2)), a frame where that still leaves
    someone without a face is looked at one person at a time (`faces_alone`): each person found alone
    is measured on that face, the others keep the face found in the whole frame, if any.
    """
    subjects = sorted(references)
    for subject in subjects:
        centres = np.asarray(expected_centers.get(subject, np.empty((0, 2))), dtype=np.float64)
        if centres.shape != (len(frames), 2):
            raise ValueError(
                f"`expected_centers[{subject!r}]` has to be ({len(frames)}, 2) but is {centres.shape}"
            )
        if planned_landmarks is not None:
            marks = np.asarray(planned_landmarks.get(subject, np.empty((0, 68, 2))))
            if marks.shape != (len(frames), 68, 2):
                raise ValueError(
                    f"`planned_landmarks[{subject!r}]` has to be ({len(frames)}, 68, 2) but is {marks.shape}"
                )
    embedder = embedder or analyzer
    per_frame = []
    for index, frame in enumerate(frames):
        faces = analyzer.detect(frame, upsample) if detections is None else detections[index]
        expected = {s: np.asarray(expected_centers[s][index], dtype=np.float64) for s in subjects}
        planned = None if planned_landmarks is None else {s: planned_landmarks[s][index] for s in subjects}
        per_frame.append(frame_identity(frame, faces, expected, references, embedder, planned, turned_faces))
    return identity_from_frames(per_frame, subjects, embedder.description, threshold)


def frame_identity(
    frame: np.ndarray,
    faces: Sequence[DetectedFace],
    expected: Mapping[str, np.ndarray],
    references: Mapping[str, np.ndarray],
    embedder: FaceEmbedder,
    planned: Mapping[str, np.ndarray] | None = None,
    turned_faces: bool = True,
) -> dict[str, float]:
    """One checked frame's part of `identity_report`: subject -> similarity, for those found in it.

    A frame at a time, so a producer can measure each one as it is rendered (kiss_core.generation.
    producer) and `identity_from_frames` put them together.
    """
    return {
        # Only the faces someone is measured on are described: a descriptor costs ~6 ms on one core.
        subject: cosine_similarity(embedder.embed(image, face.landmarks), references[subject])
        for subject, (face, image) in faces_seen(frame, faces, expected, planned, turned_faces).items()
    }


def identity_from_frames(
    per_frame: Sequence[Mapping[str, float]], subjects: Sequence[str], description: str, threshold: float
) -> QualityReport:
    """The identity report from each checked frame's `frame_identity`, in frame order."""
    return QualityReport(
        similarity=description,
        threshold=threshold,
        subjects=[
            subject_quality(s, [frame[s] for frame in per_frame if s in frame], len(per_frame))
            for s in subjects
        ],
        both_found=both_share(
            sum(all(s in frame for s in subjects) for frame in per_frame), len(per_frame), len(subjects)
        ),
    )


def faces_seen(
    frame: np.ndarray,
    faces: Sequence[DetectedFace],
    expected: Mapping[str, np.ndarray],
    planned: Mapping[str, np.ndarray] | None = None,
    turned_faces: bool = True,
) -> dict[str, tuple[DetectedFace, np.ndarray]]:
    """subject -> (their face in one frame, the image to describe it on), as `identity_report` counts.

    `faces` are HOG's, `expected` the planned centres (2,) and `planned` the planned landmarks
    (68, 2) of each subject in this frame.
    """
    if turned_faces:
        faces = with_turned_faces(frame, faces, expected)
    found = [(face, np.empty(0)) for face in faces]
    seen = {s: (faces[f], frame) for s, f in assign_faces(found, expected, {}, MATCH_RADIUS).items()}
    if turned_faces and planned is not None and len(seen) < len(expected):
        seen.update(faces_alone(frame, planned))
    return seen


def both_share(both: int, checked: int, subjects: int) -> float | None:
    """`QualityReport.both_found`: the share of checked frames where both people were found."""
    return both / checked if subjects == 2 and checked else None


def subject_quality(subject: str, values: list[float], checked: int) -> SubjectQuality:
    """One subject's identity numbers from the similarities of the frames where it was found."""
    return SubjectQuality(
        subject=subject,  # type: ignore[arg-type]
        similarity_min=min(values) if values else None,
        similarity_mean=float(np.mean(values)) if values else None,
        frames_found=len(values),
        frames_checked=checked,
        visible_share=len(values) / checked if checked else 0.0,
    )
