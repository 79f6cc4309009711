"""Wan weights in the dtypes real checkpoints need, loaded straight onto the device, on tiny pipelines.

bfloat16 transformers and UMT5 (what Wan runs in on a GPU), the VAE and the CLIP image encoder in float32
(as diffusers' Wan I2V example loads them), float16 never applied to UMT5. Built through the production
loaders, run end to end on CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from kiss_core.generation.backends.wan import WanConditioner
from kiss_core.generation.conditioning import IdentityEncoder
from kiss_core.jobs.stages import load_backends, load_conditioners
from kiss_core.schemas import VideoParams
from kiss_core.settings import GeneratorSettings, Settings
from tests.support.studio import SyntheticPair
from tests.support.tiny_wan import build_model_root, video_frames

BASE = {"style": "peck", "seconds": 1.0, "fps": 8, "size": "160x128"}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        storage={"backend": "local", "local_root": str(tmp_path_factory.mktemp("store"))},
        generator={
            "model_root": str(build_model_root(tmp_path_factory.mktemp("models"))),
            "steps": 2,
            "dtype": "bfloat16",
            "device": "cpu",
        },
    )


@pytest.mark.slow
def test_the_tiny_pipelines_run_end_to_end_in_bfloat16_with_the_vae_and_clip_in_float32(
    settings: Settings, pair: SyntheticPair
) -> None:
    conditioners = load_conditioners(settings)
    encoder = IdentityEncoder(settings.faces, settings.generator, conditioners)
    backends: dict[str, Any] = load_backends(settings)
    encoders = conditioners["wan-i2v"].pipe
    assert encoders.text_encoder.dtype == torch.bfloat16
    assert encoders.image_encoder.dtype == torch.float32
    for name in ("wan-i2v", "wan-vace"):
        pipe = backends[name].pipe
        assert (pipe.transformer.dtype, pipe.vae.dtype) == (torch.bfloat16, torch.float32), name
        # Loaded through accelerate's device map: the weights were placed on the device as they were read.
        assert pipe.transformer.hf_device_map == pipe.vae.hf_device_map == {"": torch.device("cpu")}
        params = VideoParams(backend=name, **BASE)
        conditioning = encoder.encode(pair.photos, pair.analyses, params)
        assert conditioning.model is not None
        assert conditioning.model.prompt_embeds.dtype == torch.bfloat16
        if name == "wan-i2v":
            assert conditioning.model.image_embeds is not None
            assert conditioning.model.image_embeds.dtype == torch.float32
        frames = video_frames(backends[name], pair, conditioning, params)
        assert frames.shape == (8, 128, 160, 3) and frames.dtype == np.uint8
        assert frames.std() > 1.0, f"{name}: a decoded video, not a flat frame"


def test_float16_is_never_applied_to_umt5_and_clip_stays_float32(settings: Settings) -> None:
    half = GeneratorSettings(model_root=settings.generator.model_root, dtype="float16", device="cpu")
    conditioner = WanConditioner("wan-i2v", half)
    assert conditioner.pipe.text_encoder.dtype == torch.bfloat16
    assert conditioner.pipe.image_encoder.dtype == torch.float32
    positive, negative = conditioner.prompt_embeds("a kiss", "blurry")
    assert negative is not None and torch.isfinite(positive).all() and torch.isfinite(negative).all()
