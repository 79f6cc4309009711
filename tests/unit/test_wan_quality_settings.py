"""The quality settings real Wan checkpoints need reach diffusers: the low-noise expert's guidance scale
(Wan2.2 A14B) and the scheduler's flow shift per quality. Tiny A14B-shaped pipeline, production loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kiss_core.generation.backends.wan import WanI2VFrames
from kiss_core.generation.conditioning import IdentityEncoder
from kiss_core.schemas import VideoParams
from kiss_core.settings import Settings
from tests.support.studio import SyntheticPair
from tests.support.tiny_wan import ForwardCounter, build_a14b_root, video_frames

BASE = {"style": "peck", "seconds": 1.0, "fps": 8, "size": "160x128"}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        storage={"backend": "local", "local_root": str(tmp_path_factory.mktemp("store"))},
        generator={
            "model_root": str(build_a14b_root(tmp_path_factory.mktemp("a14b"))),
            "steps": 3,
            "fast_steps": 2,
            "guidance_scale": 5.0,
        },
    )


def _generator(settings: Settings, **changes: Any) -> WanI2VFrames:
    return WanI2VFrames(settings.generator.model_copy(update=changes))


@pytest.mark.slow
def test_guidance_scale_2_guides_the_low_noise_expert_batched_or_not(
    settings: Settings, encoder: IdentityEncoder, pair: SyntheticPair
) -> None:
    params = VideoParams(backend="wan-i2v", **BASE)
    conditioning = encoder.encode(pair.photos, pair.analyses, params)
    plain = _generator(settings)
    same = video_frames(plain, pair, conditioning, params)
    assert (plain.pipe._guidance_scale, plain.pipe._guidance_scale_2) == (5.0, 5.0), "None: guidance_scale"

    second = _generator(settings, guidance_scale_2=2.0)
    two = video_frames(second, pair, conditioning, params)
    assert (second.pipe._guidance_scale, second.pipe._guidance_scale_2) == (5.0, 2.0)
    assert np.abs(two.astype(int) - same.astype(int)).mean() > 0.2, "the low-noise steps guided less"

    batched = _generator(settings, guidance_scale_2=2.0, cfg_batched=True)
    with ForwardCounter(batched.pipe.transformer) as high, ForwardCounter(batched.pipe.transformer_2) as low:
        one_batch = video_frames(batched, pair, conditioning, params)
    assert (high.calls, low.calls) == (1, 2), "one forward per step, each expert with its own scale"
    assert np.abs(one_batch.astype(int) - two.astype(int)).max() <= 1


@pytest.mark.slow
def test_flow_shift_sets_the_scheduler_of_each_quality(
    settings: Settings, encoder: IdentityEncoder, pair: SyntheticPair
) -> None:
    shifted = _generator(settings, flow_shift=3.0, fast_flow_shift=8.0)
    standard = VideoParams(backend="wan-i2v", **BASE)
    video_frames(shifted, pair, encoder.encode(pair.photos, pair.analyses, standard), standard)
    assert shifted.pipe.scheduler.config.shift == 3.0
    standard_sigmas = shifted.pipe.scheduler.sigmas.clone()

    fast = standard.model_copy(update={"quality": "fast"})
    video_frames(shifted, pair, encoder.encode(pair.photos, pair.analyses, fast), fast)
    assert shifted.pipe.scheduler.config.shift == 8.0
    assert len(shifted.pipe.scheduler.sigmas) == 3 and len(standard_sigmas) == 4

    assert _generator(settings).schedulers[False].config.shift == 7.0, "None: the directory's scheduler"
    assert _generator(settings, flow_shift=5.0).schedulers[True].config.shift == 5.0, "fast: flow_shift"
    root = Path(settings.generator.model_root)
    assert (root / "wan-i2v" / "scheduler" / "scheduler_config.json").read_text().count('"shift": 7.0') == 1
