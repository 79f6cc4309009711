"""The lip attention bias as a generator setting of the Wan backends (tiny I2V pipeline, production loader):
0 installs nothing and gives the same frames bit for bit; a weight changes the video, only for the pipeline
call, and the plain processors are back afterwards, also when the call raises."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from kiss_core.generation.backends.lip_attention import LipAttentionBias
from kiss_core.generation.backends.wan import WanI2VFrames, WanVACEFrames
from kiss_core.generation.conditioning import IdentityEncoder
from kiss_core.scene.choreography import plan_kiss
from kiss_core.schemas import VideoParams
from kiss_core.settings import GeneratorSettings, Settings
from tests.support.studio import SyntheticPair
from tests.support.tiny_wan import build_i2v, build_vace, video_frames

pytestmark = pytest.mark.slow  # ~4 tiny pipeline runs: 15-25 s on 2 idle cores
# 8 frames at the native 8 fps, generated as 9 at 160x128: 3 x 8 x 10 = 240 tokens.
PARAMS = VideoParams(backend="wan-i2v", style="peck", seconds=1, fps=8, size="160x128")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("models")
    build_i2v(root / "wan-i2v")
    build_vace(root / "wan-vace")
    generator = {
        "model_root": str(root),
        "steps": 2,
        "enabled": ["wan-i2v", "wan-vace"],
        "native_fps": 8,
        "device": "cpu",
        "progress_preview_every_steps": 0,  # no VAE fit per load
    }
    return Settings(storage={"local_root": str(tmp_path_factory.mktemp("store"))}, generator=generator)


class Cancelled(Exception):
    pass


class ProcessorWatch:
    """The self-attention processor classes of the transformer's first block at each forward."""

    def __init__(self, transformer: torch.nn.Module):
        self.seen: list[type] = []
        self.handle = transformer.register_forward_pre_hook(
            lambda module, _args: self.seen.append(type(module.blocks[0].attn1.processor))
        )


def _processors(generator: WanI2VFrames) -> list[Any]:
    return [block.attn1.processor for block in generator.pipe.transformer.blocks]


def test_weight_0_installs_nothing_and_a_weight_biases_only_the_pipeline_call(
    settings: Settings, pair: SyntheticPair, encoder: IdentityEncoder
) -> None:
    conditioning = encoder.encode(pair.photos, pair.analyses, PARAMS)
    plain = video_frames(WanI2VFrames(settings.generator), pair, conditioning, PARAMS)

    off = WanI2VFrames(settings.generator.model_copy(update={"lip_attention_bias": 0.0}))
    watch = ProcessorWatch(off.pipe.transformer)
    assert np.array_equal(video_frames(off, pair, conditioning, PARAMS), plain), "0 is bit-identical"
    assert watch.seen and LipAttentionBias not in watch.seen, "0 installs no processor"

    biased = WanI2VFrames(settings.generator.model_copy(update={"lip_attention_bias": 2.0}))
    before = _processors(biased)
    watch = ProcessorWatch(biased.pipe.transformer)
    frames = video_frames(biased, pair, conditioning, PARAMS)
    assert watch.seen and set(watch.seen) == {LipAttentionBias}, "every step biased"
    assert frames.shape == plain.shape
    change = np.abs(frames.astype(np.int16) - plain.astype(np.int16)).mean()
    assert change > 0.01, f"the bias changes the video ({change:.3f} levels on average on the tiny model)"
    after = _processors(biased)
    assert all(a is b for a, b in zip(after, before, strict=True)), "the plain processors are back"

    def cancel(_share: float) -> None:
        raise Cancelled("job deleted")

    watch.seen.clear()
    plan = plan_kiss(pair.analyses, PARAMS)
    with pytest.raises(Cancelled):
        list(biased.frames(plan, pair.photos, pair.analyses, conditioning, PARAMS, cancel))
    assert set(watch.seen) == {LipAttentionBias}, "cancelled after the first (biased) step"
    assert all(a is b for a, b in zip(_processors(biased), before, strict=True)), "restored after an error"


def test_vace_biases_its_vace_blocks_too_with_the_reference_frames_left_out(
    settings: Settings, pair: SyntheticPair, encoder: IdentityEncoder
) -> None:
    """VACE puts one latent frame per reference image in front of the video's: (2 + 3) x 8 x 10 tokens."""
    params = PARAMS.model_copy(update={"backend": "wan-vace"})
    conditioning = encoder.encode(pair.photos, pair.analyses, params)
    plain = video_frames(WanVACEFrames(settings.generator), pair, conditioning, params)
    biased = WanVACEFrames(settings.generator.model_copy(update={"lip_attention_bias": 2.0}))
    transformer = biased.pipe.transformer
    seen: list[type] = []
    handle = transformer.register_forward_pre_hook(
        lambda module, _args: seen.extend(
            type(b.attn1.processor) for b in [*module.blocks, *module.vace_blocks]
        )
    )
    frames = video_frames(biased, pair, conditioning, params)
    handle.remove()
    assert seen and set(seen) == {LipAttentionBias}
    assert frames.shape == plain.shape and not np.array_equal(frames, plain)
    assert LipAttentionBias not in {type(b.attn1.processor) for b in transformer.vace_blocks}


def test_a_bias_needs_an_attention_backend_that_adds_the_mask() -> None:
    GeneratorSettings(lip_attention_bias=2.0, attention_backend="_native_cudnn")
    GeneratorSettings(lip_attention_bias=0.0, attention_backend="flash")
    with pytest.raises(ValidationError, match="lip_attention_bias"):
        GeneratorSettings(lip_attention_bias=2.0, attention_backend="flash")
    with pytest.raises(ValidationError):
        GeneratorSettings(lip_attention_bias=9.0)
