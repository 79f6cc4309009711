"""Conditioning: what the generator consumes besides the plan, built by the IdentityEncoder stage.

Per subject the identity (embedding, aligned crop); for a diffusion backend also the prompt and
start-image embeddings of its text/image encoders. Similarity itself is kiss_core.faces.embedding's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from kiss_core.faces.analysis import aligned_crop
from kiss_core.faces.embedding import cosine_similarity, identity_model, normalize
from kiss_core.faces.subject_photos import mean_embedding
from kiss_core.schemas import SubjectAnalysis, VideoParams
from kiss_core.settings import FaceSettings, GeneratorSettings

if TYPE_CHECKING:
    from kiss_core.generation.backends.choice import GenerationChoice
    from kiss_core.generation.backends.loras import LoraSpec


@dataclass(frozen=True)
class SubjectCondition:
    """What the generator needs of one person: who they are (embedding) and how they look (crop)."""

    subject: str
    embedding: np.ndarray  # (128,) dlib or (512,) ArcFace, float32, unit length
    crop: np.ndarray  # (crop_size, crop_size, 3) uint8, eyes level at fixed positions
    crop_landmarks: np.ndarray  # (68, 2) float32 in crop pixels
    # The aligned crops of the subject's other photos (a request may give several of one person), in the
    # order sent; `embedding` is then the mean over all of them (kiss_core.faces.subject_photos).
    reference_crops: tuple[np.ndarray, ...] = ()

    @property
    def crops(self) -> list[np.ndarray]:
        """Every crop of this person: the composed photo's first, then the others'."""
        return [self.crop, *self.reference_crops]


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
    """A diffusion backend's encoder side (kiss_core.generation.backends.wan.WanConditioner)."""

    @property
    def loras(self) -> Mapping[str, LoraSpec]:
        """The LoRAs installed for this backend, by name."""
        ...

    hits: int  # prompt-embedding cache hits and misses so far (exported as metrics by the deployment)
    misses: int

    def condition(
        self,
        photos: Mapping[str, np.ndarray],
        analyses: Mapping[str, SubjectAnalysis],
        params: VideoParams,
        choice: GenerationChoice,
    ) -> ModelConditioning: ...

    def check_health(self) -> None:
        """Raise if the encoders can no longer run (a dead device, a broken model)."""
        ...


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
        references: Mapping[str, Sequence[tuple[np.ndarray, SubjectAnalysis]]] | None = None,
    ) -> Conditioning:
        """`params` None: the settings' defaults (the preview backend unless configured otherwise).
        `references`: each subject's other photos and their analyses, when it has several: its identity
        is then the mean embedding of all of them, and their crops are reference crops too."""
        from kiss_core.generation.backends.choice import choose

        subjects = self._subjects(photos, analyses, references or {})
        params = params or VideoParams()
        loras = {n: s for c in self.conditioners.values() for n, s in c.loras.items()}
        choice = choose(params, self.generator, {"preview", *self.conditioners}, loras)
        if choice.backend == "preview":
            return Conditioning(subjects=subjects)
        model = self.conditioners[choice.backend].condition(photos, analyses, params, choice)
        return Conditioning(subjects=subjects, backend=choice.backend, model=model)

    def _subjects(
        self,
        photos: dict[str, np.ndarray],
        analyses: dict[str, SubjectAnalysis],
        references: Mapping[str, Sequence[tuple[np.ndarray, SubjectAnalysis]]],
    ) -> dict[str, SubjectCondition]:
        missing = sorted(set(analyses) - set(photos))
        if missing:
            raise ValueError(f"no photo for the analysed subjects {missing}; photos are {sorted(photos)}")
        subjects = {}
        for subject, analysis in analyses.items():
            landmarks = np.asarray(analysis.landmarks, dtype=np.float32)
            crop, crop_landmarks, _ = aligned_crop(photos[subject], landmarks, self.settings.crop_size)
            embeddings = [self._embedding(photos[subject], analysis)]
            reference_crops = []
            for photo, other in references.get(subject, ()):
                embeddings.append(self._embedding(photo, other))
                other_landmarks = np.asarray(other.landmarks, dtype=np.float32)
                reference_crops.append(aligned_crop(photo, other_landmarks, self.settings.crop_size)[0])
            subjects[subject] = SubjectCondition(
                subject=subject,
                embedding=mean_embedding(embeddings),
                crop=crop,
                crop_landmarks=crop_landmarks,
                reference_crops=tuple(reference_crops),
            )
        return subjects

    def _embedding(self, photo: np.ndarray, analysis: SubjectAnalysis) -> np.ndarray:
        """The analysis's dlib descriptor, or the mounted embedder's of the photo, unit length."""
        embedder = self.identity.embedder
        if embedder is None:
            return normalize(np.asarray(analysis.embedding))
        return normalize(np.asarray(embedder.embed(photo, np.asarray(analysis.landmarks, dtype=np.float32))))

    def same_person(self, a: np.ndarray, b: np.ndarray) -> bool:
        return cosine_similarity(a, b) >= self.identity.threshold
