"""Identity: per-subject embeddings and aligned crops that condition the generator, and their similarity.

Similarity is the cosine of L2-normalised dlib descriptors. dlib descriptors are not centred, so
unrelated faces already score ~0.8-0.9; `FaceSettings.same_person_threshold` is calibrated for that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kiss_core.faces import aligned_crop
from kiss_core.schemas import SubjectAnalysis
from kiss_core.settings import FaceSettings


def normalize(vector: np.ndarray) -> np.ndarray:
    """The vector scaled to unit length (float32); a zero vector stays zero."""
    v = np.asarray(vector, dtype=np.float32).ravel()
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two descriptors, in [-1, 1]."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"descriptors must have the same shape but are {a.shape} and {b.shape}")
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / denominator) if denominator > 0 else 0.0


@dataclass(frozen=True)
class SubjectCondition:
    """What the generator needs of one person: who they are (embedding) and how they look (crop)."""

    subject: str
    embedding: np.ndarray  # (128,) float32, unit length
    crop: np.ndarray  # (crop_size, crop_size, 3) uint8, eyes level at fixed positions
    crop_landmarks: np.ndarray  # (68, 2) float32 in crop pixels


@dataclass(frozen=True)
class Conditioning:
    subjects: dict[str, SubjectCondition] = field(default_factory=dict)
    backend: str = "preview"


class IdentityEncoder:
    """Builds the identity conditioning from the photos and their analyses (no second detection pass)."""

    def __init__(self, settings: FaceSettings | None = None):
        self.settings = settings or FaceSettings()

    def encode(self, photos: dict[str, np.ndarray], analyses: dict[str, SubjectAnalysis]) -> Conditioning:
        missing = sorted(set(analyses) - set(photos))
        if missing:
            raise ValueError(f"no photo for the analysed subjects {missing}; photos are {sorted(photos)}")
        subjects = {}
        for subject, analysis in analyses.items():
            landmarks = np.asarray(analysis.landmarks, dtype=np.float32)
            crop, crop_landmarks, _ = aligned_crop(photos[subject], landmarks, self.settings.crop_size)
            subjects[subject] = SubjectCondition(
                subject=subject,
                embedding=normalize(np.asarray(analysis.embedding)),
                crop=crop,
                crop_landmarks=crop_landmarks,
            )
        return Conditioning(subjects=subjects)

    def same_person(self, a: np.ndarray, b: np.ndarray) -> bool:
        return cosine_similarity(a, b) >= self.settings.same_person_threshold
