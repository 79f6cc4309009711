"""Identity: per-subject embeddings and aligned crops that condition the generator, and their similarity.

Similarity is the cosine of L2-normalised embeddings: dlib's 128-D descriptors by default (not
centred, so unrelated faces already score ~0.8-0.9; `FaceSettings.same_person_threshold` is calibrated
for that), or ArcFace's when an insightface pack is mounted (`FaceSettings.arcface_pack`; unrelated
faces near 0, `arcface_same_person_threshold`). `identity_model` picks the pair, so callers do not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from kiss_core.arcface import ArcFaceEmbedder
from kiss_core.faces import DlibFaceAnalyzer, aligned_crop
from kiss_core.schemas import SubjectAnalysis, VideoParams
from kiss_core.settings import FaceSettings, GeneratorSettings

if TYPE_CHECKING:
    from kiss_core.backends.models import GenerationChoice, LoraSpec


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
        return DlibFaceAnalyzer.dimension if self.embedder is None else self.embedder.dimension


def identity_model(settings: FaceSettings) -> IdentityModel:
    """ArcFace when `settings.arcface_pack` names a mounted pack (loaded here), else dlib."""
    if settings.arcface_pack is None:
        return IdentityModel(None, settings.same_person_threshold)
    return IdentityModel(ArcFaceEmbedder(settings.arcface_pack), settings.arcface_same_person_threshold)


@dataclass(frozen=True)
class SubjectCondition:
    """What the generator needs of one person: who they are (embedding) and how they look (crop)."""

    subject: str
    embedding: np.ndarray  # (128,) dlib or (512,) ArcFace, float32, unit length
    crop: np.ndarray  # (crop_size, crop_size, 3) uint8, eyes level at fixed positions
    crop_landmarks: np.ndarray  # (68, 2) float32 in crop pixels


@dataclass(frozen=True)
class ModelConditioning:
    """What a diffusion backend consumes besides the plan, computed where the text and image encoders live.

    Tensors are torch tensors on the CPU (they travel through the Ray object store to the generator,
    which holds only the denoiser and the VAE). `negative_prompt_embeds` is None when the request
    runs without classifier-free guidance (the fast quality).
    """

    prompt: str
    prompt_embeds: Any  # torch.Tensor (1, max_sequence_length, text_dim)
    negative_prompt_embeds: Any | None = None  # same shape; None: no CFG
    image_embeds: Any | None = None  # torch.Tensor (1, tokens, image_dim): CLIP of the start frame
    fast: bool = False
    lora: str | None = None
    fast_lora: str | None = None


@dataclass(frozen=True)
class Conditioning:
    subjects: dict[str, SubjectCondition] = field(default_factory=dict)
    backend: str = "preview"
    model: ModelConditioning | None = None  # set for the diffusion backends


class ModelConditioner(Protocol):
    """A diffusion backend's encoder side (kiss_core.backends.wan.WanConditioner)."""

    loras: Mapping[str, LoraSpec]
    hits: int  # prompt-embedding cache hits and misses so far (exported as metrics by the deployment)
    misses: int

    def condition(
        self,
        photos: Mapping[str, np.ndarray],
        analyses: Mapping[str, SubjectAnalysis],
        params: VideoParams,
        choice: GenerationChoice,
    ) -> ModelConditioning: ...


class IdentityEncoder:
    """Builds the conditioning from the photos and their analyses (no second detection pass).

    Identity (embedding, aligned crop) for every backend: the embedding is the analysis's dlib
    descriptor, or ArcFace's from the photo and the analysis's landmarks when a pack is mounted (loaded
    here, on this stage's GPU share). For a diffusion backend also the text and image embeddings, from
    the `conditioners` loaded for it. It decides the request's backend, quality and LoRA once, so the
    generator runs exactly what was conditioned for.
    """

    def __init__(
        self,
        settings: FaceSettings | None = None,
        generator: GeneratorSettings | None = None,
        conditioners: Mapping[str, ModelConditioner] | None = None,
    ):
        self.settings = settings or FaceSettings()
        self.generator = generator or GeneratorSettings()
        self.conditioners = dict(conditioners or {})
        self.identity = identity_model(self.settings)

    def encode(
        self,
        photos: dict[str, np.ndarray],
        analyses: dict[str, SubjectAnalysis],
        params: VideoParams | None = None,
    ) -> Conditioning:
        """`params` None: the settings' defaults (the preview backend unless configured otherwise)."""
        from kiss_core.backends.models import choose

        subjects = self._subjects(photos, analyses)
        params = params or VideoParams()
        loras = {n: s for c in self.conditioners.values() for n, s in c.loras.items()}
        choice = choose(params, self.generator, {"preview", *self.conditioners}, loras)
        if choice.backend == "preview":
            return Conditioning(subjects=subjects)
        model = self.conditioners[choice.backend].condition(photos, analyses, params, choice)
        return Conditioning(subjects=subjects, backend=choice.backend, model=model)

    def _subjects(
        self, photos: dict[str, np.ndarray], analyses: dict[str, SubjectAnalysis]
    ) -> dict[str, SubjectCondition]:
        missing = sorted(set(analyses) - set(photos))
        if missing:
            raise ValueError(f"no photo for the analysed subjects {missing}; photos are {sorted(photos)}")
        subjects = {}
        for subject, analysis in analyses.items():
            landmarks = np.asarray(analysis.landmarks, dtype=np.float32)
            crop, crop_landmarks, _ = aligned_crop(photos[subject], landmarks, self.settings.crop_size)
            embedder = self.identity.embedder
            embedding = analysis.embedding if embedder is None else embedder.embed(photos[subject], landmarks)
            subjects[subject] = SubjectCondition(
                subject=subject,
                embedding=normalize(np.asarray(embedding)),
                crop=crop,
                crop_landmarks=crop_landmarks,
            )
        return subjects

    def same_person(self, a: np.ndarray, b: np.ndarray) -> bool:
        return cosine_similarity(a, b) >= self.identity.threshold
