"""The opt-in CPU offload of the generator: the same video with the transformer's blocks streamed from
host memory (group offload, here onto the CPU itself: the hooks run, the arithmetic is unchanged), and
model offload refused where there is no accelerator to offload from."""

from __future__ import annotations

import numpy as np
import pytest

from kiss_core.errors import ModelDirectoryError
from kiss_core.generation.backends.wan import WanI2VFrames
from kiss_core.generation.conditioning import IdentityEncoder
from kiss_core.schemas import VideoParams
from kiss_core.settings import Settings
from tests.support.studio import SyntheticPair
from tests.support.tiny_wan import build_model_root, video_frames

pytestmark = pytest.mark.slow
PARAMS = VideoParams(backend="wan-i2v", style="peck", seconds=1, fps=8, size="160x128")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = build_model_root(tmp_path_factory.mktemp("models"))
    generator = {
        "model_root": str(root),
        "steps": 2,
        "enabled": ["wan-i2v"],
        "native_fps": 8,
        "device": "cpu",
    }
    return Settings(storage={"local_root": str(tmp_path_factory.mktemp("store"))}, generator=generator)


def test_group_offload_streams_the_blocks_and_gives_the_same_video(
    settings: Settings, pair: SyntheticPair, encoder: IdentityEncoder
) -> None:
    conditioning = encoder.encode(pair.photos, pair.analyses, PARAMS)
    plain = WanI2VFrames(settings.generator)
    offloaded = WanI2VFrames(settings.generator.model_copy(update={"offload": "group"}))
    registry = getattr(offloaded.pipe.transformer.blocks[0], "_diffusers_hook", None)
    assert registry is not None and registry.get_hook("group_offloading") is not None
    assert getattr(plain.pipe.transformer.blocks[0], "_diffusers_hook", None) is None
    reference = video_frames(plain, pair, conditioning, PARAMS)
    frames = video_frames(offloaded, pair, conditioning, PARAMS)
    assert frames.shape == reference.shape
    assert np.abs(frames.astype(np.int16) - reference.astype(np.int16)).max() <= 1


def test_model_offload_needs_an_accelerator(settings: Settings) -> None:
    with pytest.raises(ModelDirectoryError, match="offload: model"):
        WanI2VFrames(settings.generator.model_copy(update={"offload": "model"}))
