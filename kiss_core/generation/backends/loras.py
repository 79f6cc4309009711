"""LoRA files under `GeneratorSettings.model_root`/loras/, found and checked before anything loads.

loras/      <name>.safetensors (diffusers/peft LoRA weights) + <name>.yaml:
              base: wan-i2v | wan-vace     the pipeline it was trained for
              trigger_words: "..."         put in front of the prompt when it is active
              scale: 1.0                   adapter weight
              fast: false                  true: a step-distillation LoRA (the `fast` quality)
              low_noise_weights: <file>    Wan2.2 A14B: the low-noise expert's weights (transformer_2);
                                           without it the same file is loaded into both transformers
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kiss_core.generation.backends.weights import LORA_DIR, DiffusionBackend, model_directory_error
from kiss_core.settings import GeneratorSettings


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
            raise model_directory_error(folder, f"`{name}.safetensors` is missing beside {meta.name}")
        try:
            spec = LoraFile.model_validate(yaml.safe_load(meta.read_text(encoding="utf-8")) or {})
        except (ValidationError, yaml.YAMLError) as exc:
            raise model_directory_error(folder, f"`{meta.name}` is malformed: {exc}") from exc
        low_noise = None
        if spec.low_noise_weights is not None:
            low_noise = folder / spec.low_noise_weights
            if not low_noise.is_file():
                raise model_directory_error(
                    folder, f"`{spec.low_noise_weights}` (low_noise_weights of {meta.name}) is missing"
                )
        words = spec.trigger_words if isinstance(spec.trigger_words, str) else ", ".join(spec.trigger_words)
        specs[name] = LoraSpec(name, weights, spec.base, words.strip(), spec.scale, spec.fast, low_noise)
    named = {s.path for s in specs.values()} | {s.low_noise_path for s in specs.values()}
    for weights in sorted(folder.glob("*.safetensors")):
        if weights not in named:
            raise model_directory_error(
                folder, f"`{weights.stem}.yaml` is missing beside {weights.name} (base, trigger_words)"
            )
    return specs


def fused_lora(settings: GeneratorSettings, backend: str, loras: Mapping[str, LoraSpec]) -> str | None:
    """The LoRA fused into `backend`'s weights under `fuse_lora`: the default LoRA if it is for it."""
    name = settings.lora
    if not settings.fuse_lora or name is None or name not in loras or loras[name].base != backend:
        return None
    return name
