"""Health checks that do real work: the generator's and the encoder's stages run their models for real,
fail when a model is broken, and never wait for a video in progress (Serve would kill a working replica)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from kiss_core.jobs.stages import GenerationStage, IdentityStage
from kiss_core.settings import Settings
from kiss_core.storage import LocalDirStore
from tests.support.tiny_wan import build_model_root

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = build_model_root(tmp_path_factory.mktemp("models"))
    return Settings(generator={"model_root": str(root), "backend": "wan-i2v", "enabled": ["wan-i2v"]})


def test_the_generator_stage_runs_each_backend_and_fails_when_one_is_broken(
    settings: Settings, tmp_path: Path
) -> None:
    stage = GenerationStage(settings, LocalDirStore(tmp_path))
    assert set(stage.producer.backends) == {"preview", "wan-i2v"}
    stage.check_health()
    stage.producer.backends["wan-i2v"].pipe.transformer.to("meta")  # weights gone, as after a device loss
    with pytest.raises((RuntimeError, NotImplementedError)):
        stage.check_health()


def test_the_generator_check_does_not_wait_for_a_video_in_progress(
    settings: Settings, tmp_path: Path
) -> None:
    stage = GenerationStage(settings, LocalDirStore(tmp_path))
    frames = stage.producer.backends["wan-i2v"]
    with frames._lock:  # what frames() holds for the whole denoise
        checker = threading.Thread(target=stage.check_health)
        checker.start()
        checker.join(timeout=30)
        returned_while_busy = not checker.is_alive()
    checker.join()
    assert returned_while_busy


def test_the_encoder_stage_runs_its_text_encoder_and_fails_when_it_is_broken(
    settings: Settings, tmp_path: Path
) -> None:
    stage = IdentityStage(settings, LocalDirStore(tmp_path))
    (conditioner,) = stage.encoder.conditioners.values()
    stage.check_health()
    with torch.no_grad():
        conditioner.pipe.text_encoder.to("meta")
    with pytest.raises((RuntimeError, NotImplementedError)):
        stage.check_health()
