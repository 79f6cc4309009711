"""VACE under diffusers' first-block cache: why the wan-vace backend refuses `step_cache_threshold`.

The cache hooks `transformer.blocks` only; WanVACETransformer3DModel adds its control hints after those
blocks in its own loop. A skipped step must reproduce the computed step exactly when the inputs repeat;
for the plain Wan transformer it does, for VACE the hints are added a second time. Tiny random weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from kiss_core.errors import ModelDirectoryError
from kiss_core.generation.backends.wan import WanVACEFrames
from kiss_core.jobs.stages import load_backends, load_conditioners
from kiss_core.settings import GeneratorSettings, Settings
from tests.support.tiny_wan import TINY_TRANSFORMER


def _inputs(transformer: Any) -> dict[str, torch.Tensor]:
    config = transformer.config
    generator = torch.Generator().manual_seed(0)

    def noise(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    inputs = {
        "hidden_states": noise(1, config.in_channels, 2, 8, 8),
        "timestep": torch.tensor([500]),
        "encoder_hidden_states": noise(1, 4, config.text_dim),
    }
    if getattr(config, "vace_layers", None):
        inputs["control_hidden_states"] = noise(1, config.vace_in_channels, 2, 8, 8)
    return inputs


def _cached_twice(transformer: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(uncached output, first cached call, second cached call: same inputs, so the rest is skipped)."""
    from diffusers import FirstBlockCacheConfig

    inputs = _inputs(transformer)
    with torch.inference_mode():
        reference = transformer(**inputs, return_dict=False)[0]
        transformer.enable_cache(FirstBlockCacheConfig(threshold=0.5))
        with transformer.cache_context("cond"):  # as the Wan pipelines wrap each denoiser call
            computed = transformer(**inputs, return_dict=False)[0]
        with transformer.cache_context("cond"):
            skipped = transformer(**inputs, return_dict=False)[0]
    return reference, computed, skipped


def test_the_first_block_cache_reproduces_a_repeated_step_of_the_plain_wan_transformer() -> None:
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(**TINY_TRANSFORMER, in_channels=16, num_layers=3)
    tail = transformer.blocks[-1].ffn
    calls: list[int] = []
    tail.register_forward_hook(lambda *_: calls.append(1))
    reference, computed, skipped = _cached_twice(transformer)
    assert len(calls) == 2, "the uncached and the first cached call run the tail block; the second skips it"
    torch.testing.assert_close(computed, reference)
    torch.testing.assert_close(skipped, reference, msg="the skipped step reuses the residual exactly")


def test_the_first_block_cache_adds_the_vace_hints_twice_on_a_skipped_step() -> None:
    """The diffusers behaviour the wan-vace refusal rests on; if this ever fails, the refusal can go."""
    from diffusers import WanVACETransformer3DModel

    torch.manual_seed(0)
    transformer = WanVACETransformer3DModel(
        **TINY_TRANSFORMER, in_channels=16, num_layers=3, vace_layers=[0, 2], vace_in_channels=96
    )
    reference, computed, skipped = _cached_twice(transformer)
    torch.testing.assert_close(computed, reference)
    assert (skipped - reference).abs().max() > 1e-3, "the layer-0 hint is in the residual and added again"


@pytest.mark.parametrize("enabled", [["wan-vace"], ["wan-i2v", "wan-vace"]])
def test_wan_vace_refuses_the_first_block_cache_at_start_naming_the_setting(
    tmp_path: Path, enabled: list[str]
) -> None:
    settings = Settings(
        generator={"model_root": str(tmp_path), "enabled": enabled, "step_cache_threshold": 0.05}
    )
    message = r"`step_cache_threshold` \(0\.05\) is not supported by the wan-vace backend"
    for load in (load_conditioners, load_backends):
        with pytest.raises(ModelDirectoryError, match=message):
            load(settings)
    with pytest.raises(ModelDirectoryError, match=message):
        WanVACEFrames(GeneratorSettings(model_root=tmp_path, step_cache_threshold=0.05))
