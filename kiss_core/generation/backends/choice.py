"""What a request runs on: backend, quality and LoRAs decided once, and the prompt the model gets."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from kiss_core.errors import BackendUnavailable, ModelDirectoryError
from kiss_core.generation.backends.loras import LoraSpec, fused_lora
from kiss_core.safety.prompt import build_prompt
from kiss_core.schemas import VideoParams
from kiss_core.settings import GeneratorSettings


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
    if params.lora is None and name is not None and name in loras and loras[name].base != backend:
        name = None  # the default LoRA is for the other backend: this one runs without
    lora = None if name in (None, "none") else name
    installed = sorted(n for n, s in loras.items() if s.base == backend and not s.fast)
    if lora is not None and lora not in installed:
        raise BackendUnavailable(f"lora {lora!r} is not installed for {backend}; installed: {installed}")
    fast_lora = None
    if fast:
        named = settings.fast_lora
        if named is not None and named in loras and loras[named].base != backend:
            named = None  # as with `lora`: the one set is for the other backend, this one takes its own
        fast_lora = named or next((n for n, s in sorted(loras.items()) if s.base == backend and s.fast), None)
        if fast_lora is not None and fast_lora not in loras:
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
