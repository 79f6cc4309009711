"""Output checks: does each person in the video still look like their reference photo (identity drift)?

Faces are found in a sample of frames and matched to the person the motion plan put there, so
face merging at the lip contact or a swapped identity shows up as low similarity for that subject.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kiss_core.faces import DlibFaceAnalyzer
from kiss_core.identity import cosine_similarity
from kiss_core.schemas import QualityReport, SubjectQuality

MATCH_RADIUS = 0.75  # a detection counts for a subject if its centre is within this many face widths


def identity_report(
    frames: Sequence[np.ndarray],
    expected_centers: dict[str, np.ndarray],
    references: dict[str, np.ndarray],
    analyzer: DlibFaceAnalyzer,
    threshold: float,
    upsample: int | None = None,
) -> QualityReport:
    """Per-subject similarity of the faces found where the plan expects each person, over `frames`.

    `expected_centers[subject]` is (len(frames), 2): the planned face centre (x, y) in each frame.
    Each detection is given to at most one subject (closest pairs first), so two people whose faces
    meet at the contact cannot both claim the same face.
    """
    subjects = sorted(references)
    for subject in subjects:
        centres = np.asarray(expected_centers.get(subject, np.empty((0, 2))), dtype=np.float64)
        if centres.shape != (len(frames), 2):
            raise ValueError(
                f"`expected_centers[{subject!r}]` has to be ({len(frames)}, 2) but is {centres.shape}"
            )
    similarities: dict[str, list[float]] = {s: [] for s in subjects}
    for index, frame in enumerate(frames):
        found = analyzer.find_faces(frame, upsample)
        candidates = []
        for subject in subjects:
            centre = np.asarray(expected_centers[subject][index], dtype=np.float64)
            for face_index, (face, _) in enumerate(found):
                distance = float(np.linalg.norm(face.center - centre))
                if distance <= MATCH_RADIUS * face.width:
                    candidates.append((distance, subject, face_index))
        taken_subjects: set[str] = set()
        taken_faces: set[int] = set()
        for _, subject, face_index in sorted(candidates):
            if subject in taken_subjects or face_index in taken_faces:
                continue
            taken_subjects.add(subject)
            taken_faces.add(face_index)
            similarities[subject].append(cosine_similarity(found[face_index][1], references[subject]))
    return QualityReport(
        threshold=threshold,
        subjects=[
            SubjectQuality(
                subject=subject,  # type: ignore[arg-type]
                similarity_min=min(values) if values else None,
                similarity_mean=float(np.mean(values)) if values else None,
                frames_found=len(values),
                frames_checked=len(frames),
            )
            for subject, values in similarities.items()
        ],
    )
