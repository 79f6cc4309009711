"""The diffusion model directory, checked before anything is loaded, and which backends a replica loads.

No torch here: the checks run at replica start (and in the ingress-cheap code paths) without the
model stack. `kiss_core.generation.backends.wan` loads what these checks allow; LoRA files are loras.py's, the
per-request choice choice.py's.

Layout of `GeneratorSettings.model_root`:

    wan-i2v/    a WanImageToVideoPipeline directory (save_pretrained / the Hub layout): model_index.json,
                transformer/ (transformer_2/ for Wan2.2 A14B), vae/, scheduler/, tokenizer/,
                text_encoder/, and image_encoder/ + image_processor/ when the transformer takes CLIP
                image embeddings (Wan2.1 I2V 14B)
    wan-vace/   a WanVACEPipeline directory: model_index.json, transformer/, vae/, scheduler/,
                tokenizer/, text_encoder/

Frame count: Wan generates 4k+1 frames (its VAE compresses time by 4). A plan of N frames is
generated as the smallest 4k+1 >= N and the extra tail (at most 3 frames) is dropped, so the plan,
its contact frame and the clip length stay exactly what was asked for.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kiss_core.errors import ModelDirectoryError
from kiss_core.settings import GeneratorSettings

DiffusionBackend = Literal["wan-i2v", "wan-vace"]
DIFFUSION_BACKENDS: tuple[DiffusionBackend, ...] = ("wan-i2v", "wan-vace")


@dataclass(frozen=True)
class BackendSpec:
    """What the service knows of a diffusion backend without loading it."""

    pipeline_class: str  # the diffusers pipeline its model directory holds
    # The pipeline takes `reference_images` (every face crop: one per photo of each person) and puts one
    # latent frame per image in front of the video's, so they cost transformer tokens like video frames
    # (kiss_core.generation.budget counts them).
    reference_images: bool = False


BACKEND_SPECS: dict[str, BackendSpec] = {
    "wan-i2v": BackendSpec("WanImageToVideoPipeline"),
    "wan-vace": BackendSpec("WanVACEPipeline", reference_images=True),
}
PIPELINE_CLASSES: dict[str, str] = {name: spec.pipeline_class for name, spec in BACKEND_SPECS.items()}
LORA_DIR = "loras"
VAE_TEMPORAL_FACTOR = 4

# What each side of the graph loads: the VideoGenerator the denoiser, the IdentityEncoder the encoders.
GENERATOR_PARTS = ("transformer", "vae", "scheduler")
CONDITIONER_PARTS = ("tokenizer", "text_encoder")
IMAGE_PARTS = ("image_encoder", "image_processor")

_CONFIG_FILES = {
    "scheduler": ("scheduler_config.json",),
    "tokenizer": ("tokenizer.json", "spiece.model", "tokenizer_config.json"),
    "image_processor": ("preprocessor_config.json",),
}
_WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json")


def frames_to_generate(frame_count: int, temporal_factor: int = VAE_TEMPORAL_FACTOR) -> int:
    """The smallest k*temporal_factor + 1 >= frame_count: the frames a Wan model is asked for."""
    if frame_count < 1:
        raise ValueError(f"`frame_count` must be >= 1 but is {frame_count}")
    return -(-(frame_count - 1) // temporal_factor) * temporal_factor + 1


@dataclass(frozen=True)
class ModelDirectory:
    """A pipeline directory whose parts were checked: what is there and whether it takes image embeddings."""

    backend: DiffusionBackend
    path: Path
    components: dict[str, tuple[str, str]]  # name -> (library, class) for the non-null entries
    image_conditioned: bool  # the transformer takes CLIP image embeddings (Wan2.1 I2V 14B)

    @property
    def has_transformer_2(self) -> bool:
        return "transformer_2" in self.components


def model_directory_error(path: Path, what: str) -> ModelDirectoryError:
    return ModelDirectoryError(f"model directory {path}: {what}")


def _check_part(root: Path, name: str) -> None:
    folder = root / name
    if not folder.is_dir():
        raise model_directory_error(root, f"the `{name}/` subfolder is missing (model_index.json lists it)")
    files = {p.name for p in folder.iterdir()}
    expected = _CONFIG_FILES.get(name)
    if expected is not None:
        if not files.intersection(expected):
            raise model_directory_error(root, f"`{name}/` has none of {', '.join(expected)}")
        return
    if "config.json" not in files:
        raise model_directory_error(root, f"`{name}/config.json` is missing")
    if not any(f.endswith(_WEIGHT_SUFFIXES) for f in files):
        raise model_directory_error(root, f"`{name}/` has no weights (*.safetensors)")
    if "diffusion_pytorch_model.safetensors.index.json" in files or "model.safetensors.index.json" in files:
        index_name = next(f for f in files if f.endswith(".safetensors.index.json"))
        shards = set(json.loads((folder / index_name).read_text())["weight_map"].values())
        missing = sorted(s for s in shards if s not in files)
        if missing:
            raise model_directory_error(root, f"`{name}/` is missing weight shards {missing}")


def validate_model_directory(
    root: Path, backend: DiffusionBackend, parts: Collection[str] = GENERATOR_PARTS + CONDITIONER_PARTS
) -> ModelDirectory:
    """Check `root` for `backend` before loading: model_index.json, its class, and each of `parts`.

    Raises ModelDirectoryError naming the missing or malformed piece. `parts` are the components the
    caller loads (the generator and the encoder replicas need different ones); `transformer_2/` is
    checked with `transformer/` when the index lists it, and the image encoder parts with the
    conditioner's when the transformer takes image embeddings.
    """
    if backend not in PIPELINE_CLASSES:
        raise ValueError(f"`backend` must be one of {sorted(PIPELINE_CLASSES)} but is {backend!r}")
    if not root.is_dir():
        raise model_directory_error(
            root, f"not a directory (the {backend} backend needs a {PIPELINE_CLASSES[backend]} here)"
        )
    index_path = root / "model_index.json"
    if not index_path.is_file():
        raise model_directory_error(
            root, "model_index.json is missing (write the pipeline with save_pretrained)"
        )
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise model_directory_error(root, f"model_index.json is not valid JSON: {exc}") from exc
    if not isinstance(index, dict):
        raise model_directory_error(root, "model_index.json is not a JSON object")
    expected_class = PIPELINE_CLASSES[backend]
    if index.get("_class_name") != expected_class:
        raise model_directory_error(
            root,
            f"model_index.json `_class_name` must be {expected_class!r} but is {index.get('_class_name')!r}",
        )
    components = {
        name: (value[0], value[1])
        for name, value in index.items()
        if not name.startswith("_") and isinstance(value, list) and len(value) == 2 and value[0] is not None
    }
    wanted = set(parts)
    if "transformer" in wanted and "transformer_2" in components:
        wanted.add("transformer_2")
    for name in ("transformer", "vae", "scheduler", "tokenizer", "text_encoder"):
        if name in wanted and name not in components:
            raise model_directory_error(root, f"model_index.json has no `{name}` component")
    image_conditioned = False
    if backend == "wan-i2v":
        transformer_config = root / "transformer" / "config.json"
        if transformer_config.is_file():
            try:
                image_conditioned = json.loads(transformer_config.read_text()).get("image_dim") is not None
            except ValueError as exc:
                raise model_directory_error(
                    root, f"`transformer/config.json` is not valid JSON: {exc}"
                ) from exc
        elif "transformer" in wanted:
            raise model_directory_error(root, "`transformer/config.json` is missing")
        else:  # an encoder replica without the transformer mounted: the index says whether CLIP is used
            image_conditioned = "image_encoder" in components
        if image_conditioned and wanted.intersection(CONDITIONER_PARTS):
            for name in IMAGE_PARTS:
                if name not in components:
                    raise model_directory_error(
                        root, f"the transformer takes image embeddings but model_index.json has no `{name}`"
                    )
            wanted.update(IMAGE_PARTS)
    for name in sorted(wanted):
        _check_part(root, name)
    return ModelDirectory(backend, root, components, image_conditioned)


def configured_backends(settings: GeneratorSettings) -> list[DiffusionBackend]:
    """The diffusion backends this replica loads: `enabled`, or each whose directory exists.

    The default backend must be among them (ModelDirectoryError otherwise).
    """
    if settings.enabled is not None:
        names = list(dict.fromkeys(settings.enabled))
    else:
        names = [b for b in DIFFUSION_BACKENDS if (settings.model_root / b).exists()]
    if settings.backend != "preview" and settings.backend not in names:
        raise ModelDirectoryError(
            f"the default backend {settings.backend!r} is not loaded:"
            f" {settings.model_root / settings.backend} does not exist and `enabled` does not list it"
        )
    for name in names:
        refuse_unsupported_settings(settings, name)
    return names


def refuse_unsupported_settings(settings: GeneratorSettings, backend: DiffusionBackend) -> None:
    """Settings a backend cannot honour stop the replica at start, before anything loads.

    `step_cache_threshold` on wan-vace: diffusers' first-block cache hooks only `transformer.blocks`, while
    WanVACETransformer3DModel adds the VACE control hints after those blocks in its own loop. The cached
    residual of a skipped step already holds the hints of every VACE layer but the last, and the loop adds
    them again, so each skipped step doubles the control signal.
    """
    if settings.offload == "model" and (settings.device or "cuda").startswith("cpu"):
        raise ModelDirectoryError(
            "`offload: model` moves components between the host and an accelerator; this replica's device"
            f" is {settings.device!r}. Use it on a GPU replica, or `offload: group`"
        )
    if backend == "wan-vace" and settings.step_cache_threshold is not None:
        raise ModelDirectoryError(
            f"`step_cache_threshold` ({settings.step_cache_threshold}) is not supported by the wan-vace"
            " backend: diffusers' first-block cache adds the VACE control hints twice on a skipped step."
            " Unset it, or set `enabled` to the backends that support it (wan-i2v)"
        )


_COMPARED_BYTES = 1 << 20  # files up to this size (configs, tokenizers) are compared byte for byte


def same_component_files(first: Path, second: Path, components: Collection[str]) -> bool:
    """Whether two model directories hold the same `components`: the same file names and sizes, and the
    same bytes for the small files (configs, tokenizer files). Weight shards are compared by size only:
    reading tens of GiB to prove equality would cost more at start than loading a second copy."""
    for component in components:
        a, b = first / component, second / component
        if not (a.is_dir() and b.is_dir()):
            return False
        files_a = {p.name: p.stat().st_size for p in a.iterdir() if p.is_file()}
        files_b = {p.name: p.stat().st_size for p in b.iterdir() if p.is_file()}
        if files_a != files_b:
            return False
        small = [name for name, size in files_a.items() if size <= _COMPARED_BYTES]
        if any((a / name).read_bytes() != (b / name).read_bytes() for name in small):
            return False
    return True


def shares_text_encoder(first: Path, other: Path, share: bool = True) -> bool:
    """Whether the conditioner for the model directory `other` reuses the UMT5 and tokenizer loaded for
    `first` (WanConditioner's `share_with`) rather than loading its own: only under `share`
    (`generator.share_text_encoder`) and when both are the same files. The encoder's start-up memory
    check counts a UMT5 for every conditioner that does not (kiss_core.generation.memory). Compared where
    either directory has the folder (a conditioner's directories have both: validate_model_directory)."""
    parts = [p for p in CONDITIONER_PARTS if (first / p).is_dir() or (other / p).is_dir()]
    return share and same_component_files(first, other, parts)
