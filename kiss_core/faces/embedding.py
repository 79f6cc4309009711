"""Who a face is: the embedding protocol, cosine similarity, and which embedder the service uses.

Similarity is the cosine of L2-normalised embeddings: dlib's 128-D descriptors by default (not
centred, so unrelated faces already score ~0.8-0.9; `FaceSettings.same_person_threshold` is calibrated
for that), or ArcFace's when an insightface pack is mounted (`FaceSettings.arcface_pack`; unrelated
faces near 0, `arcface_same_person_threshold`). `identity_model` picks the pair, so callers do not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from kiss_core.settings import FaceSettings

DLIB_DIMENSION = 128  # length of dlib's face descriptors (DlibFaceAnalyzer.dimension)


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


class FaceEmbedder(Protocol):
    """Says who a face is: a unit-length vector from the photo and the face's 68 landmarks."""

    description: str  # how similarity is measured, for the quality report
    dimension: int  # length of the embeddings

    def embed(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class IdentityModel:
    """The embedder identity is measured with and the cosine above which two faces are one person.

    `embedder` None: dlib's descriptors, which each SubjectAnalysis already carries and the dlib
    analyzer computes for faces it finds (nothing more to load).
    """

    embedder: FaceEmbedder | None
    threshold: float

    @property
    def dimension(self) -> int:
        return DLIB_DIMENSION if self.embedder is None else self.embedder.dimension


def identity_model(settings: FaceSettings) -> IdentityModel:
    """ArcFace when `settings.arcface_pack` names a mounted pack (loaded here), else dlib."""
    if settings.arcface_pack is None:
        return IdentityModel(None, settings.same_person_threshold)
    from kiss_core.faces.arcface import ArcFaceEmbedder  # onnxruntime session: only when a pack is set

    return IdentityModel(ArcFaceEmbedder(settings.arcface_pack), settings.arcface_same_person_threshold)
