"""Several photos of one person: are they one person, which composes the scene, who is the reference.

A request may give up to `limits.max_photos_per_subject` photos of each subject. From their analyses:

- `check_same_person`: every pair of photos must score at least the same-person threshold (the cosine of
  the analyses' embeddings, `FaceSettings.same_person_threshold` for dlib's descriptors), else
  SubjectPhotosMismatch names the pairs that do not, by form field and number in the order sent.
- `best_photo`: the photo the scene is composed from, the highest `photo_score`: frontal, sharp, large,
  eyes open (see there); ties go to the photo sent first.
- `mean_embedding`: the identity reference, the L2-normalised mean of the photos' unit embeddings.

Works on the analyses alone (no pixels), so admission decides before anything is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np

from kiss_core.errors import SubjectPhotosMismatch
from kiss_core.faces.embedding import cosine_similarity, normalize
from kiss_core.schemas import SubjectAnalysis

# The score's knees (see photo_score).
SHARPNESS_HALF = 50.0  # Laplacian variance on the aligned crop that earns half the sharpness credit
FULL_SIZE_PX = 256.0  # face width from which size earns full credit (the aligned crop's side)
EYES_CLOSED_EAR = 0.12  # eye aspect ratio at or below which an eye counts as shut
EYES_OPEN_EAR = 0.22  # ... at or above which it counts as open
CLOSED_EYES_FACTOR = 0.1  # what shut eyes leave of the score


def eye_aspect_ratio(landmarks: Sequence[Sequence[float]] | np.ndarray) -> float:
    """Mean eye aspect ratio (Soukupová and Čech, 2016) of the two eyes of 68 iBUG landmarks: the lids'
    two vertical distances over twice the corner-to-corner width. ~0.25-0.35 open, under ~0.12 shut."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"`landmarks` has to be (68, 2) but is {points.shape}")
    ratios = []
    for start in (36, 42):
        p = points[start : start + 6]
        width = float(np.linalg.norm(p[0] - p[3]))
        height = float(np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4]))
        ratios.append(height / (2.0 * width) if width > 0 else 0.0)
    return float(np.mean(ratios))


def photo_score(analysis: SubjectAnalysis) -> float:
    """How well a photo serves as the one the scene is composed from, 0..1: the product of

    - frontal: `quality.frontalness`, cos(yaw) x cos(pitch) of the head pose;
    - sharp: blur / (blur + 50), `quality.blur` the Laplacian variance on the aligned crop (half credit
      at 50; the test photos' sharp faces reach 100-300, a 2.5-pixel Gaussian blur brings them under 5);
    - large: face width / 256 px, at most 1 (the aligned crop's side: more pixels add no detail);
    - eyes open: 1 at an eye aspect ratio of 0.22 or more, 0.1 at 0.12 or less, linear between, so a
      blink costs a photo nearly everything but still ranks it among other blinks.

    A product, so one bad property is not made up by the others.
    """
    quality = analysis.quality
    frontal = max(0.0, min(1.0, quality.frontalness))
    sharp = max(0.0, quality.blur) / (max(0.0, quality.blur) + SHARPNESS_HALF)
    large = min(1.0, max(0.0, quality.face_width_px) / FULL_SIZE_PX)
    openness = (eye_aspect_ratio(analysis.landmarks) - EYES_CLOSED_EAR) / (EYES_OPEN_EAR - EYES_CLOSED_EAR)
    eyes = CLOSED_EYES_FACTOR + (1.0 - CLOSED_EYES_FACTOR) * min(1.0, max(0.0, openness))
    return frontal * sharp * large * eyes


def best_photo(analyses: Sequence[SubjectAnalysis]) -> int:
    """Index of the photo with the highest `photo_score`; the first of equals."""
    if not analyses:
        raise ValueError("`analyses` is empty: a subject has at least one photo")
    scores = [photo_score(a) for a in analyses]
    return scores.index(max(scores))


def mean_embedding(embeddings: Sequence[Sequence[float] | np.ndarray]) -> np.ndarray:
    """The L2-normalised mean of the unit-length embeddings (float32): one photo's own, normalised."""
    if not embeddings:
        raise ValueError("`embeddings` is empty")
    return normalize(np.mean([normalize(np.asarray(e)) for e in embeddings], axis=0))


def check_same_person(subject: str, analyses: Sequence[SubjectAnalysis], threshold: float) -> None:
    """Raise SubjectPhotosMismatch unless every pair of the subject's photos scores `threshold` or more.

    Photos are named as the client sent them: the form field `subject_{subject}` and the photo's number,
    1-based, in the order sent. `errors` holds one entry per pair below the threshold.
    """
    field = f"subject_{subject}"
    embeddings = [np.asarray(a.embedding, dtype=np.float64) for a in analyses]
    apart = []
    for i, j in combinations(range(len(embeddings)), 2):
        similarity = cosine_similarity(embeddings[i], embeddings[j])
        if similarity < threshold:
            apart.append((i + 1, j + 1, similarity))
    if not apart:
        return
    errors = [
        {
            "field": field,
            "photos": [i, j],
            "similarity": round(s, 4),
            "threshold": threshold,
            "message": f"photos {i} and {j} of {field} are not the same person",
        }
        for i, j, s in apart
    ]
    pairs = ", ".join(f"{i} and {j} ({s:.3f})" for i, j, s in apart)
    raise SubjectPhotosMismatch(
        f"the photos of {field} must all show the same person, but photos {pairs} score under the"
        f" same-person threshold {threshold}",
        subject,
        errors,
    )
