"""The training tier's shared inputs: the tiny Wan model root, a tiny synthetic curated set, a config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kiss_core.training.config import TrainConfig

# 64x64, 9 frames: 3 latent frames of 8x8 (4x4 tokens); a 2-step 5-frame validation render.
SMALL: dict[str, Any] = {
    "rank": 4,
    "alpha": 4,
    "lr": 2e-3,
    "width": 64,
    "height": 64,
    "num_frames": 9,
    "max_sequence_length": 32,
    "bf16": False,
    "gradient_checkpointing": True,
    "validation": {"width": 64, "height": 64, "num_frames": 5, "steps": 2},
}


def small_config(**overrides: Any) -> TrainConfig:
    return TrainConfig.model_validate(SMALL | overrides)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One precompute cache for the tier: records are keyed by content, so every test may share it."""
    return tmp_path_factory.mktemp("train-cache")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """wan-i2v/, wan-vace/ and loras/ with random tiny weights (tests/support/tiny_wan.py)."""
    from tests.support.tiny_wan import build_model_root

    return build_model_root(tmp_path_factory.mktemp("train-models"))


@pytest.fixture(scope="session")
def training_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four kept 64x64 9-frame clips with tracks and captions, in the curated layout."""
    from tests.support.training_set import write_training_set

    return write_training_set(tmp_path_factory.mktemp("train-set"))
