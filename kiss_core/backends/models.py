"""The diffusion model directory, checked before anything is loaded, and what a request chooses from it.

No torch here: the checks run at replica start (and in the ingress-cheap code paths) without the
model stack. `kiss_core.backends.wan` loads what these checks allow.

Layout of `GeneratorSettings.model_root`:

    wan-i2v/    a WanImageToVideoPipeline directory (save_pretrained / the Hub layout): model_index.json,
                transformer/ (transformer_2/ for Wan2.2 A14B), vae/, scheduler/, tokenizer/,
                text_encoder/, and image_encoder/ + image_processor/ when the transformer takes CLIP
                image embeddings (Wan2.1 I2V 14B)
    wan-vace/   a WanVACEPipeline directory: model_index.json, transformer/, vae/, scheduler/,
                tokenizer/, text_encoder/
    loras/      <name>.safetensors (diffusers/peft LoRA weights) + <name>.yaml:
                  base: wan-i2v | wan-vace     the pipeline it was trained for
                  trigger_words: "..."         put in front of the prompt when it is active
                  scale: 1.0                   adapter weight
                  fast: false                  true: a step-distillation LoRA (the `fast` quality)
                  low_noise_weights: <file>    Wan2.2 A14B: the low-noise expert's weights (transformer_2);
                                               without it the same file is loaded into both transformers

Frame count: Wan generates 4k+1 frames (its VAE compresses time by 4). A plan of N frames is
generated as the smallest 4k+1 >= N and the extra tail (at most 3 frames) is dropped, so the plan,
its contact frame and the clip length stay exactly what was asked for.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kiss_core.errors import BackendUnavailable, ModelDirectoryError
from kiss_core.safety.prompt import build_prompt
from kiss_core.schemas import VideoParams
from kiss_core.settings import GeneratorSettings

DiffusionBackend = Literal["wan-i2v", "wan-vace"]
DIFFUSION_BACKENDS: tuple[DiffusionBackend, ...] = ("wan-i2v", "wan-vace")
PIPELINE_CLASSES: dict[str, str] = {"wan-i2v": "WanImageToVideoPipeline", "wan-vace": "WanVACEPipeline"}
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


def _fail(path: Path, what: str) -> ModelDirectoryError:
    return ModelDirectoryError(f"model directory {path}: {what}")


def _check_part(root: Path, name: str) -> None:
    folder = root / name
    if not folder.is_dir():
        raise _fail(root, f"the `{name}/` subfolder is missing (model_index.json lists it)")
    files = {p.name for p in folder.iterdir()}
    expected = _CONFIG_FILES.get(name)
    if expected is not None:
        if not files.intersection(expected):
            raise _fail(root, f"`{name}/` has none of {', '.join(expected)}")
        return
    if "config.json" not in files:
        raise _fail(root, f"`{name}/config.json` is missing")
    if not any(f.endswith(_WEIGHT_SUFFIXES) for f in files):
        raise _fail(root, f"`{name}/` has no weights (*.safetensors)")
    if "diffusion_pytorch_model.safetensors.index.json" in files or "model.safetensors.index.json" in files:
        index_name = next(f for f in files if f.endswith(".safetensors.index.json"))
        shards = set(json.loads((folder / index_name).read_text())["weight_map"].values())
        missing = sorted(s for s in shards if s not in files)
        if missing:
            raise _fail(root, f"`{name}/` is missing weight shards {missing}")


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
        raise _fail(root, f"not a directory (the {backend} backend needs a {PIPELINE_CLASSES[backend]} here)")
    index_path = root / "model_index.json"
    if not index_path.is_file():
        raise _fail(root, "model_index.json is missing (write the pipeline with save_pretrained)")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _fail(root, f"model_index.json is not valid JSON: {exc}") from exc
    if not isinstance(index, dict):
        raise _fail(root, "model_index.json is not a JSON object")
    expected_class = PIPELINE_CLASSES[backend]
    if index.get("_class_name") != expected_class:
        raise _fail(
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
            raise _fail(root, f"model_index.json has no `{name}` component")
    image_conditioned = False
    if backend == "wan-i2v":
        transformer_config = root / "transformer" / "config.json"
        if transformer_config.is_file():
            try:
                image_conditioned = json.loads(transformer_config.read_text()).get("image_dim") is not None
            except ValueError as exc:
                raise _fail(root, f"`transformer/config.json` is not valid JSON: {exc}") from exc
        elif "transformer" in wanted:
            raise _fail(root, "`transformer/config.json` is missing")
        else:  # an encoder replica without the transformer mounted: the index says whether CLIP is used
            image_conditioned = "image_encoder" in components
        if image_conditioned and wanted.intersection(CONDITIONER_PARTS):
            for name in IMAGE_PARTS:
                if name not in components:
                    raise _fail(
                        root, f"the transformer takes image embeddings but model_index.json has no `{name}`"
                    )
            wanted.update(IMAGE_PARTS)
    for name in sorted(wanted):
        _check_part(root, name)
    return ModelDirectory(backend, root, components, image_conditioned)


class LoraFile(BaseModel):
    """The YAML beside a LoRA's safetensors."""

    model_config = ConfigDict(extra="forbid")

    base: DiffusionBackend = Field(description="The pipeline the LoRA was trained for.")
    trigger_words: str | list[str] = Field("", description="Put in front of the prompt when active.")
    scale: float = Field(1.0, ge=0.0, le=4.0, description="Adapter weight.")
    fast: bool = Field(False, description="A step-distillation LoRA, activated by the fast quality.")
    low_noise_weights: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\.safetensors$",
        description="For a pipeline with two transformers (Wan2.2 A14B): the file in loras/ with the weights"
        " for the low-noise expert (transformer_2). None: the LoRA's own file goes into both.",
    )


@dataclass(frozen=True)
class LoraSpec:
    name: str
    path: Path  # the .safetensors
    base: DiffusionBackend
    trigger_words: str
    scale: float
    fast: bool
    low_noise_path: Path | None = None  # transformer_2's weights (Wan2.2 A14B); None: `path`


def discover_loras(model_root: Path) -> dict[str, LoraSpec]:
    """Every LoRA under model_root/loras/: <name>.yaml with <name>.safetensors (either alone is an error).

    A safetensors file without its YAML is an error unless a YAML names it as `low_noise_weights`.
    """
    folder = model_root / LORA_DIR
    if not folder.is_dir():
        return {}
    specs: dict[str, LoraSpec] = {}
    for meta in sorted(folder.glob("*.yaml")):
        name = meta.stem
        weights = folder / f"{name}.safetensors"
        if not weights.is_file():
            raise _fail(folder, f"`{name}.safetensors` is missing beside {meta.name}")
        try:
            spec = LoraFile.model_validate(yaml.safe_load(meta.read_text(encoding="utf-8")) or {})
        except (ValidationError, yaml.YAMLError) as exc:
            raise _fail(folder, f"`{meta.name}` is malformed: {exc}") from exc
        low_noise = None
        if spec.low_noise_weights is not None:
            low_noise = folder / spec.low_noise_weights
            if not low_noise.is_file():
                raise _fail(
                    folder, f"`{spec.low_noise_weights}` (low_noise_weights of {meta.name}) is missing"
                )
        words = spec.trigger_words if isinstance(spec.trigger_words, str) else ", ".join(spec.trigger_words)
        specs[name] = LoraSpec(name, weights, spec.base, words.strip(), spec.scale, spec.fast, low_noise)
    named = {s.path for s in specs.values()} | {s.low_noise_path for s in specs.values()}
    for weights in sorted(folder.glob("*.safetensors")):
        if weights not in named:
            raise _fail(
                folder, f"`{weights.stem}.yaml` is missing beside {weights.name} (base, trigger_words)"
            )
    return specs


def fused_lora(settings: GeneratorSettings, backend: str, loras: Mapping[str, LoraSpec]) -> str | None:
    """The LoRA fused into `backend`'s weights under `fuse_lora`: the default LoRA if it is for it."""
    name = settings.lora
    if not settings.fuse_lora or name is None or name not in loras or loras[name].base != backend:
        return None
    return name


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
    return names


@dataclass(frozen=True)
class GenerationChoice:
    """What a request runs on, decided once by the IdentityEncoder and carried in the Conditioning."""

    backend: str
    fast: bool = False
    lora: str | None = None
    fast_lora: str | None = None

    def adapters(self, loras: Mapping[str, LoraSpec]) -> list[LoraSpec]:
        return [loras[n] for n in (self.lora, self.fast_lora) if n is not None]


def choose(
    params: VideoParams,
    settings: GeneratorSettings,
    loaded: Collection[str],
    loras: Mapping[str, LoraSpec],
) -> GenerationChoice:
    """Backend, quality and LoRAs for a request: its own choices, else the settings' defaults.

    Raises BackendUnavailable (a client error) naming what is not available here.
    """
    backend = params.backend or settings.backend
    if backend not in loaded:
        raise BackendUnavailable(f"backend {backend!r} is not available; available: {sorted(loaded)}")
    if backend == "preview":
        if params.lora not in (None, "none"):
            raise BackendUnavailable(f"lora {params.lora!r} needs a diffusion backend, not 'preview'")
        return GenerationChoice("preview")
    fast = (params.quality or settings.quality) == "fast"
    name = params.lora if params.lora is not None else settings.lora
    if params.lora is None and name in loras and loras[name].base != backend:
        name = None  # the default LoRA is for the other backend: this one runs without
    lora = None if name in (None, "none") else name
    installed = sorted(n for n, s in loras.items() if s.base == backend and not s.fast)
    if lora is not None and lora not in installed:
        raise BackendUnavailable(f"lora {lora!r} is not installed for {backend}; installed: {installed}")
    fast_lora = None
    if fast:
        fast_lora = settings.fast_lora or next(
            (n for n, s in sorted(loras.items()) if s.base == backend and s.fast), None
        )
        if fast_lora is not None and (fast_lora not in loras or loras[fast_lora].base != backend):
            raise ModelDirectoryError(f"fast_lora {fast_lora!r} is not installed for {backend} under loras/")
    fused = fused_lora(settings, backend, loras)
    if settings.fuse_lora and (lora != fused or fast_lora is not None):
        raise BackendUnavailable(
            f"{backend} here has {'LoRA ' + repr(fused) if fused else 'no LoRA'} fused into its weights"
            f" (fuse_lora) and runs only that; asked for lora {lora!r}"
            + (f" with the fast quality's {fast_lora!r}" if fast_lora else "")
        )
    return GenerationChoice(backend, fast, lora, fast_lora)


def model_prompt(
    params: VideoParams, choice: GenerationChoice, loras: Mapping[str, LoraSpec]
) -> tuple[str, str]:
    """(prompt, negative prompt) for the model: the safety template, intensity, the LoRAs' trigger words."""
    built = build_prompt(params.style, params.prompt, params.intensity)
    triggers = [spec.trigger_words for spec in choice.adapters(loras) if spec.trigger_words]
    prompt = ", ".join(triggers) + ". " + built.prompt if triggers else built.prompt
    return prompt, built.negative_prompt
