"""compile_blocks with LoRAs: compiled only where the LoRA set is fixed, so switching adapters per request
never recompiles. Compilations are counted with dynamo's own counters (the `eager` backend traces and
guards like inductor, without generating kernels); tiny random-weight pipelines on CPU."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch._dynamo.utils import counters

from kiss_core.generation.backends.wan import WanI2VFrames
from kiss_core.generation.conditioning import IdentityEncoder
from kiss_core.schemas import VideoParams
from kiss_core.settings import Settings
from tests.support.studio import SyntheticPair
from tests.support.tiny_wan import FAST_LORA_NAME, LORA_NAME, build_model_root, video_frames

BASE = {"style": "peck", "seconds": 1.0, "fps": 8, "size": "160x128"}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        storage={"backend": "local", "local_root": str(tmp_path_factory.mktemp("store"))},
        generator={
            "model_root": str(build_model_root(tmp_path_factory.mktemp("models"))),
            "steps": 2,
            "enabled": ["wan-i2v"],
            "compile_blocks": True,
            "compile_backend": "eager",
        },
    )


def _graphs() -> int:
    return counters["stats"]["unique_graphs"]


def _compilations_per_video(
    backend: Any, encoder: IdentityEncoder, pair: SyntheticPair, loras: list[str | None]
) -> list[int]:
    """Graphs dynamo has compiled after each video, one video per LoRA in `loras` (None: none)."""
    torch._dynamo.reset()
    counters.clear()
    params = VideoParams(backend="wan-i2v", **BASE)
    plain = encoder.encode(pair.photos, pair.analyses, params)
    assert plain.model is not None
    seen = []
    for lora in loras:
        video_frames(backend, pair, replace(plain, model=replace(plain.model, lora=lora)), params)
        seen.append(_graphs())
    return seen


@pytest.mark.slow
def test_per_request_loras_leave_the_blocks_uncompiled_and_nothing_recompiles(
    settings: Settings, encoder: IdentityEncoder, pair: SyntheticPair, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="kiss_core.generation.backends.wan"):
        backend = WanI2VFrames(settings.generator)
    assert set(backend.loras) == {LORA_NAME, FAST_LORA_NAME}
    assert not backend.compiled
    assert "compile_blocks is off for wan-i2v" in caplog.text and "fuse_lora" in caplog.text
    seen = _compilations_per_video(backend, encoder, pair, [None, LORA_NAME, None, LORA_NAME])
    assert seen[1:] == seen[:1] * 3, f"graphs compiled after each video: {seen}"


@pytest.mark.slow
def test_a_fused_lora_is_compiled_once_and_never_again(
    settings: Settings, encoder: IdentityEncoder, pair: SyntheticPair, tmp_path: Path
) -> None:
    fused = WanI2VFrames(settings.generator.model_copy(update={"fuse_lora": True, "lora": LORA_NAME}))
    assert fused.compiled
    seen = _compilations_per_video(fused, encoder, pair, [LORA_NAME, LORA_NAME])
    assert seen[0] > 0 and seen[1] == seen[0], f"graphs compiled after each video: {seen}"
