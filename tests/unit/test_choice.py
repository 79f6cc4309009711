"""choose(): the backend, quality and LoRAs a request runs on, from its fields and the settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiss_core.errors import BackendUnavailable, ModelDirectoryError
from kiss_core.generation.backends.choice import choose
from kiss_core.generation.backends.loras import LoraSpec
from kiss_core.schemas import VideoParams
from kiss_core.settings import GeneratorSettings

LOADED = ("preview", "wan-i2v", "wan-vace")


def _lora(name: str, base: str, fast: bool = False) -> LoraSpec:
    return LoraSpec(name, Path(f"/models/loras/{name}.safetensors"), base, "", 1.0, fast)  # type: ignore[arg-type]


LORAS = {
    "kiss-i2v": _lora("kiss-i2v", "wan-i2v"),
    "distill-i2v": _lora("distill-i2v", "wan-i2v", fast=True),
    "distill-vace": _lora("distill-vace", "wan-vace", fast=True),
}


def test_the_fast_lora_set_for_one_backend_does_not_fail_the_other() -> None:
    """A fast request on the other backend was accepted and then failed with ModelDirectoryError; like
    the default `lora`, the setting applies where it was made for and the other backend takes its own."""
    settings = GeneratorSettings(fast_lora="distill-i2v")
    assert (
        choose(VideoParams(backend="wan-i2v", quality="fast"), settings, LOADED, LORAS).fast_lora
        == "distill-i2v"
    )
    assert (
        choose(VideoParams(backend="wan-vace", quality="fast"), settings, LOADED, LORAS).fast_lora
        == "distill-vace"
    )
    without_vace_distill = {n: s for n, s in LORAS.items() if n != "distill-vace"}
    choice = choose(VideoParams(backend="wan-vace", quality="fast"), settings, LOADED, without_vace_distill)
    assert choice.fast and choice.fast_lora is None  # the base weights, as with no fast LoRA at all
    assert choose(VideoParams(backend="wan-vace"), settings, LOADED, LORAS).fast_lora is None  # not fast


def test_a_fast_lora_installed_nowhere_is_a_configuration_error() -> None:
    settings = GeneratorSettings(fast_lora="missing")
    with pytest.raises(ModelDirectoryError, match="missing"):
        choose(VideoParams(backend="wan-i2v", quality="fast"), settings, LOADED, LORAS)


def test_the_default_lora_follows_its_base_and_a_requested_one_must_be_installed_there() -> None:
    settings = GeneratorSettings(lora="kiss-i2v")
    assert choose(VideoParams(backend="wan-i2v"), settings, LOADED, LORAS).lora == "kiss-i2v"
    assert choose(VideoParams(backend="wan-vace"), settings, LOADED, LORAS).lora is None
    with pytest.raises(BackendUnavailable, match="not installed for wan-vace"):
        choose(VideoParams(backend="wan-vace", lora="kiss-i2v"), settings, LOADED, LORAS)
