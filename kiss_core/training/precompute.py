"""Everything but the transformer, computed once: VAE latents, conditions, text and image embeddings, masks.

Training steps then run only the transformer. Records are cached in an ObjectStore (a local directory or
the service's storage, S3 included) under a key that hashes what the record depends on: the encoder's
files (configs and weight file sizes), the clip's and the tracks' bytes, the training size, the caption.
A second run, or a run with another rank or learning rate, encodes nothing again.

What a clip's record holds, as the pipelines compute it (the same diffusers methods are called):
- `latents` (1, 16, T, H/8, W/8): the VAE's posterior mode, normalised by the VAE's latents_mean/std
  (WanPipeline's `(z - mean) / std`).
- I2V `condition` (1, 20, T, H/8, W/8): WanImageToVideoPipeline.prepare_latents on the clip's first
  frame (4 first-frame mask channels + the first frame followed by zeros, VAE-encoded);
  `image_embeds` (1, 257, 1280 on the 14B): CLIP of the first frame, for image-conditioned transformers.
- VACE `control` (1, 96, T, H/8, W/8): WanVACEPipeline's conditioning latents and masks for no control
  video and no reference images (everything to generate): the LoRA learns the kiss itself, unconditioned.
- `mask` (T, H/16, W/16): the contact tokens (kiss_core.training.masks).
The caption's record holds UMT5's `prompt_embeds` (1, max_sequence_length, 4096 on the 14B).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from kiss_core.curation.manifest import Segment
from kiss_core.generation.backends.lip_attention import token_mask
from kiss_core.generation.backends.weights import PIPELINE_CLASSES, DiffusionBackend
from kiss_core.settings import StorageSettings
from kiss_core.storage import LocalDirStore, ObjectNotFound, ObjectStore, open_store
from kiss_core.training.config import TrainConfig
from kiss_core.training.dataset import clip_size, load_clip, training_caption
from kiss_core.training.masks import pixel_masks

CACHE_PREFIX = "training-cache"
RECORD_VERSION = "2"  # bump when a record's content changes meaning


def cache_location(config: TrainConfig) -> StorageSettings | None:
    """Where the cache lives, resolved once by the driver: None for `cache_dir`, else the service's storage
    (Settings().storage, local or S3) with a local root made absolute, so every worker finds the same one."""
    if config.cache_dir is not None:
        return None
    from kiss_core.settings import Settings

    storage = Settings().storage
    return storage.model_copy(update={"local_root": storage.local_root.resolve()})


def cache_store(config: TrainConfig, storage: StorageSettings | None = None) -> ObjectStore:
    """The cache: `cache_dir` when set, else `storage` (the driver's `cache_location`)."""
    if config.cache_dir is not None:
        return LocalDirStore(config.cache_dir)
    return open_store(storage if storage is not None else cache_location(config))  # type: ignore[arg-type]


def component_fingerprint(base_dir: Path, component: str) -> str:
    """A hash of a component's small files and its weight files' names and sizes (no GiB read)."""
    digest = hashlib.sha256(component.encode())
    folder = base_dir / component
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(path.name.encode())
        size = path.stat().st_size
        digest.update(path.read_bytes() if size <= 1 << 20 else str(size).encode())
    return digest.hexdigest()


def _hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps([RECORD_VERSION, *parts], default=str).encode()).hexdigest()


def _file_hash(path: Path | None) -> str | None:
    return None if path is None else hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class SampleKeys:
    """The cache keys of one training sample: its clip record and its caption's text record."""

    segment_id: str
    clip: str
    text: str


@dataclass(frozen=True)
class PrecomputedSet:
    """What the workers need to find the precomputed data (small: it travels in the train loop config)."""

    samples: tuple[SampleKeys, ...]
    validation_text: str  # the validation prompt's text record
    computed: int  # records computed by this run (the others came from the cache)
    storage: StorageSettings | None = None  # the cache's store; None: the config's `cache_dir`

    def store(self, config: TrainConfig) -> ObjectStore:
        return cache_store(config, self.storage)


def save_record(store: ObjectStore, key: str, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save

    store.put(key, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


def load_record(store: ObjectStore, key: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(store.get(key))


def load_encoders(base_dir: Path, base: DiffusionBackend, device: torch.device, image: bool) -> Any:
    """The base pipeline without its transformer: VAE (float32), UMT5, and CLIP when the model takes it."""
    import diffusers

    cls = getattr(diffusers, PIPELINE_CLASSES[base])
    text_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    skipped: dict[str, Any] = {"transformer": None}
    if base == "wan-i2v" and not image:
        skipped |= {"image_encoder": None, "image_processor": None}
    pipe = cls.from_pretrained(
        base_dir,
        **skipped,
        dtype={"default": text_dtype, "vae": torch.float32, "image_encoder": torch.float32},
    ).to(device)
    if base == "wan-vace":
        # WanVACEPipeline.prepare_masks reads the transformer's patch size: the transformer built on the meta
        # device from its config carries it without a byte of weights.
        from diffusers import WanVACETransformer3DModel

        config = json.loads((base_dir / "transformer" / "config.json").read_text(encoding="utf-8"))
        with torch.device("meta"):
            pipe.transformer = WanVACETransformer3DModel.from_config(config)
    return pipe


def _normalise(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(latents)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(latents)
    return (latents - mean) / std


@torch.no_grad()
def vace_control(pipe: Any, count: int, height: int, width: int) -> torch.Tensor:
    """WanVACEPipeline's control input for no control video and no references: the same for every clip of
    a size, so it is encoded once per run."""
    device = pipe.vae.device
    generator = torch.Generator(device="cpu").manual_seed(0)
    control, mask, references = pipe.preprocess_conditions(
        None, None, None, 1, height, width, count, torch.float32, device
    )
    latents = pipe.prepare_video_latents(control, mask, references, generator, device)
    return torch.cat([latents, pipe.prepare_masks(mask, references, generator)], dim=1)


@torch.no_grad()
def encode_clip(
    pipe: Any, base: DiffusionBackend, frames: np.ndarray, image: bool, control: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """latents and the backend's condition for (F, H, W, 3) uint8 frames (see the module docstring);
    VACE's `control` when already encoded for this size."""
    device = pipe.vae.device
    count, height, width = frames.shape[:3]
    video = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float().div(127.5).sub(1.0).to(device)
    posterior = pipe.vae.encode(video).latent_dist
    record = {"latents": _normalise(pipe.vae, posterior.mode())}
    generator = torch.Generator(device="cpu").manual_seed(0)
    if base == "wan-i2v":
        _, condition = pipe.prepare_latents(
            video[:, :, 0], 1, pipe.vae.config.z_dim, height, width, count, torch.float32, device, generator
        )
        record["condition"] = condition
        if image:
            record["image_embeds"] = pipe.encode_image(Image.fromarray(frames[0]), device)
    else:
        record["control"] = control if control is not None else vace_control(pipe, count, height, width)
    return record


@torch.no_grad()
def encode_text(pipe: Any, prompt: str, max_sequence_length: int) -> dict[str, torch.Tensor]:
    embeds, _ = pipe.encode_prompt(
        prompt=prompt,
        do_classifier_free_guidance=False,
        max_sequence_length=max_sequence_length,
        device=pipe.text_encoder.device,
    )
    return {"prompt_embeds": embeds.float()}


def precompute(
    dataset: Path,
    segments: Sequence[Segment],
    base_dir: Path,
    base: DiffusionBackend,
    config: TrainConfig,
    image_conditioned: bool,
    validation_prompt: str,
    device: torch.device | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> PrecomputedSet:
    """Every sample's clip and text record in the cache (computing only the missing ones)."""
    storage = cache_location(config)
    store = cache_store(config, storage)
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    vae_print = component_fingerprint(base_dir, "vae")
    text_print = component_fingerprint(base_dir, "text_encoder")
    image_print = component_fingerprint(base_dir, "image_encoder") if image_conditioned else None
    pipe: Any = None
    controls: dict[tuple[int, int], torch.Tensor] = {}  # VACE's control input per (height, width)
    computed = 0

    def encoders() -> Any:
        nonlocal pipe
        if pipe is None:
            pipe = load_encoders(base_dir, base, device, image_conditioned)
        return pipe

    def text_record(prompt: str) -> str:
        nonlocal computed
        key = f"{CACHE_PREFIX}/text/{_hash(text_print, prompt, config.max_sequence_length)}.safetensors"
        if not store.exists(key):
            save_record(store, key, encode_text(encoders(), prompt, config.max_sequence_length))
            computed += 1
        return key

    samples = []
    for segment in segments:
        digest = _hash(
            base,
            vae_print,
            image_print,
            _file_hash(segment.clip_path(dataset)),
            _file_hash(segment.tracks_path(dataset)),
            clip_size(segment, config.width, config.height),
            config.num_frames,
            segment.contact_frame,  # where the window sits
            config.mask_dilation,
        )
        clip_key = f"{CACHE_PREFIX}/clips/{digest}.safetensors"
        if not store.exists(clip_key):
            clip = load_clip(dataset, segment, config.width, config.height, config.num_frames)
            height, width = clip.frames.shape[1:3]
            if base == "wan-vace" and (height, width) not in controls:
                controls[height, width] = vace_control(encoders(), config.num_frames, height, width)
            record = encode_clip(
                encoders(), base, clip.frames, image_conditioned, controls.get((height, width))
            )
            masks = pixel_masks(
                clip.landmarks,
                clip.valid,
                config.num_frames,
                width,
                height,
                config.mask_dilation,
            )
            record["mask"] = torch.from_numpy(token_mask(masks))
            save_record(store, clip_key, record)
            computed += 1
            log(f"encoded {segment.clip}")
        caption = training_caption(segment.caption, config.trigger_words)
        samples.append(SampleKeys(segment.segment_id, clip_key, text_record(caption)))
    validation = text_record(validation_prompt)
    return PrecomputedSet(tuple(samples), validation, computed, storage)


def read_sample(store: ObjectStore, keys: SampleKeys) -> dict[str, torch.Tensor]:
    """A sample's tensors (clip record + prompt_embeds), batch dimension 1."""
    try:
        return load_record(store, keys.clip) | load_record(store, keys.text)
    except ObjectNotFound as exc:
        raise FileNotFoundError(f"precomputed record {exc} is missing from the training cache") from exc
