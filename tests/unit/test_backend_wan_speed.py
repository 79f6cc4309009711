"""The Wan generator's speed settings and LoRA variants on CPU, with tiny random-weight pipelines.

Batched guidance and a fused LoRA must give the video the plain path gives; the first-block cache
must skip work and start every video afresh; a Wan2.2 A14B LoRA must reach both experts. Speed
itself is measured on a GPU by bench/gpu_denoise.py, never asserted here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from safetensors.torch import load_file

from kiss_core.errors import BackendUnavailable, JobNotFound, ModelDirectoryError
from kiss_core.generation.backends.loras import discover_loras
from kiss_core.generation.backends.wan import WanFrames, WanI2VFrames, WanVACEFrames
from kiss_core.generation.conditioning import IdentityEncoder
from kiss_core.jobs.stages import load_backends, load_conditioners
from kiss_core.scene.choreography import plan_kiss
from kiss_core.schemas import VideoParams
from kiss_core.settings import GeneratorSettings, Settings
from tests.support.studio import SyntheticPair
from tests.support.tiny_wan import (
    FAST_LORA_NAME,
    LORA_NAME,
    ForwardCounter,
    build_a14b_root,
    build_model_root,
    video_frames,
)

STEPS = 3
BASE = {"style": "peck", "seconds": 1.5, "fps": 8, "size": "160x128"}
FRAME_CLASSES: dict[str, type[WanFrames]] = {"wan-i2v": WanI2VFrames, "wan-vace": WanVACEFrames}


def _settings(model_root: Path, store: Path, **generator: Any) -> Settings:
    """native_fps 8: the levers are compared on the 8 fps requests' own 13 frames. At the default 16 fps
    (25 frames) the random-weight VACE model grows the float noise of a batch-2 GEMM to 7 levels in its
    last frame (mean 0.0003 levels), which says nothing about the lever (test_backend_wan covers the
    native rate)."""
    generator = {"model_root": str(model_root), "steps": STEPS, "fast_steps": 2, "native_fps": 8, **generator}
    return Settings(storage={"backend": "local", "local_root": str(store)}, generator=generator)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return _settings(build_model_root(tmp_path_factory.mktemp("models")), tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def plain(settings: Settings) -> dict[str, WanFrames]:
    return load_backends(settings)


def _tuned(settings: Settings, backend: str, **changes: Any) -> WanFrames:
    return FRAME_CLASSES[backend](settings.generator.model_copy(update=changes))


def _levels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


@pytest.mark.parametrize("backend", ["wan-i2v", "wan-vace"])
def test_batched_guidance_gives_the_same_video_with_one_forward_per_step(
    settings: Settings,
    encoder: IdentityEncoder,
    plain: dict[str, WanFrames],
    pair: SyntheticPair,
    backend: str,
) -> None:
    params = VideoParams(backend=backend, **BASE)
    conditioning = encoder.encode(pair.photos, pair.analyses, params)
    batched = _tuned(settings, backend, cfg_batched=True)
    with ForwardCounter(plain[backend].pipe.transformer) as forwards:
        reference = video_frames(plain[backend], pair, conditioning, params)
    assert forwards.calls == 2 * STEPS
    with ForwardCounter(batched.pipe.transformer) as forwards:
        frames = video_frames(batched, pair, conditioning, params)
    assert forwards.calls == STEPS, "conditional and unconditional in one forward per step"
    assert frames.shape == reference.shape == (12, 128, 160, 3)
    assert _levels(frames, reference).max() <= 1, "the same arithmetic, batched"


def test_the_first_block_cache_skips_work_and_starts_each_video_afresh(
    settings: Settings, encoder: IdentityEncoder, plain: dict[str, WanFrames], pair: SyntheticPair
) -> None:
    params = VideoParams(backend="wan-i2v", **BASE)
    conditioning = encoder.encode(pair.photos, pair.analyses, params)
    reference = video_frames(plain["wan-i2v"], pair, conditioning, params)

    never = _tuned(settings, "wan-i2v", step_cache_threshold=1e-6, cfg_batched=True)
    with ForwardCounter(never.pipe.transformer.blocks[-1].ffn) as tail:
        assert _levels(video_frames(never, pair, conditioning, params), reference).max() <= 1
    assert tail.calls == STEPS, "below the threshold nothing is skipped"

    cached = _tuned(settings, "wan-i2v", step_cache_threshold=0.5, cfg_batched=True)
    with (
        ForwardCounter(cached.pipe.transformer) as forwards,
        ForwardCounter(cached.pipe.transformer.blocks[-1].ffn) as tail,
    ):
        first = video_frames(cached, pair, conditioning, params)
    assert forwards.calls == STEPS and tail.calls < STEPS, "later steps reuse the cached residual"
    assert _levels(first, reference).mean() < 5, "an approximation of the same video, not noise"

    # A video cancelled after its first step leaves cached residuals behind; the next starts afresh.
    plan = plan_kiss(pair.analyses, params)

    def deleted(_: float) -> None:
        raise JobNotFound("job deleted", None)

    with pytest.raises(JobNotFound):
        list(cached.frames(plan, pair.photos, pair.analyses, conditioning, params, deleted))
    np.testing.assert_array_equal(video_frames(cached, pair, conditioning, params), first)


def test_a_fused_lora_gives_the_unfused_video_and_is_the_only_one_served(
    settings: Settings, encoder: IdentityEncoder, plain: dict[str, WanFrames], pair: SyntheticPair
) -> None:
    params = VideoParams(backend="wan-i2v", lora=LORA_NAME, **BASE)
    conditioning = encoder.encode(pair.photos, pair.analyses, params)
    fused = _tuned(settings, "wan-i2v", fuse_lora=True, lora=LORA_NAME)
    assert not [n for n, _ in fused.pipe.transformer.named_modules() if "lora_" in n], "no LoRA layers left"
    unfused = video_frames(plain["wan-i2v"], pair, conditioning, params)
    assert _levels(video_frames(fused, pair, conditioning, params), unfused).max() <= 2

    fused_settings = settings.generator.model_copy(update={"fuse_lora": True, "lora": LORA_NAME})
    fused_encoder = IdentityEncoder(settings.faces, fused_settings, encoder.conditioners)
    assert fused_encoder.encode(pair.photos, pair.analyses, params.model_copy(update={"lora": None})).model
    for lora in ("none", None):  # the default LoRA is for wan-i2v: wan-vace runs without
        vace = fused_encoder.encode(
            pair.photos, pair.analyses, params.model_copy(update={"backend": "wan-vace", "lora": lora})
        )
        assert vace.model is not None and vace.model.lora is None
    for refused in ({"lora": "none"}, {"quality": "fast"}):
        with pytest.raises(BackendUnavailable, match="fuse_lora"):
            fused_encoder.encode(pair.photos, pair.analyses, params.model_copy(update=refused))
    assert FAST_LORA_NAME in plain["wan-i2v"].loras, "the fast quality would need its distillation LoRA"
    vace = _tuned(settings, "wan-vace", fuse_lora=True, lora=LORA_NAME)
    assert vace.fused is None and vace.loras == {}, "the default LoRA is for wan-i2v: nothing to fuse"
    with pytest.raises(ValidationError, match="`fuse_lora` needs `lora`"):
        GeneratorSettings(fuse_lora=True)


@pytest.fixture(scope="module")
def a14b_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return _settings(build_a14b_root(tmp_path_factory.mktemp("a14b")), tmp_path_factory.mktemp("a14b-store"))


def test_a_wan22_a14b_lora_reaches_both_experts_from_their_own_files(
    a14b_settings: Settings, pair: SyntheticPair
) -> None:
    root = a14b_settings.generator.model_root
    encoder = IdentityEncoder(a14b_settings.faces, a14b_settings.generator, load_conditioners(a14b_settings))
    generator = load_backends(a14b_settings)["wan-i2v"]
    pipe = generator.pipe
    assert pipe.get_list_adapters() == {"transformer": [LORA_NAME], "transformer_2": [LORA_NAME]}
    for component, file in (
        ("transformer", f"{LORA_NAME}.safetensors"),
        ("transformer_2", f"{LORA_NAME}-low-noise.safetensors"),
    ):
        saved = load_file(root / "loras" / file)["transformer.blocks.0.attn1.to_q.lora_A.weight"]
        loaded = getattr(pipe, component).blocks[0].attn1.to_q.lora_A[LORA_NAME].weight
        np.testing.assert_array_equal(loaded.detach().numpy(), saved.numpy(), err_msg=component)

    params = VideoParams(backend="wan-i2v", **BASE)
    conditioning = encoder.encode(pair.photos, pair.analyses, params)
    assert conditioning.model is not None and conditioning.model.image_embeds is None, "no CLIP in A14B"
    with ForwardCounter(pipe.transformer) as high, ForwardCounter(pipe.transformer_2) as low:
        without = video_frames(generator, pair, conditioning, params)
    assert (high.calls, low.calls) == (2, 4), (
        "step 1 on the high-noise expert, steps 2-3 on the low-noise one"
    )
    styled_params = params.model_copy(update={"lora": LORA_NAME})
    styled = video_frames(
        generator, pair, encoder.encode(pair.photos, pair.analyses, styled_params), styled_params
    )
    assert _levels(styled, without).mean() > 0.2, "the LoRA changes the video"

    fused = WanI2VFrames(a14b_settings.generator.model_copy(update={"fuse_lora": True, "lora": LORA_NAME}))
    lora_conditioning = encoder.encode(pair.photos, pair.analyses, styled_params)
    assert _levels(video_frames(fused, pair, lora_conditioning, styled_params), styled).max() <= 2


def test_a_missing_low_noise_file_fails_at_start_naming_it(a14b_settings: Settings, tmp_path: Path) -> None:
    loras = tmp_path / "loras"
    loras.mkdir()
    source = a14b_settings.generator.model_root / "loras"
    for name in (f"{LORA_NAME}.safetensors", f"{LORA_NAME}.yaml"):
        (loras / name).write_bytes((source / name).read_bytes())
    with pytest.raises(ModelDirectoryError, match=f"`{LORA_NAME}-low-noise.safetensors` .* is missing"):
        discover_loras(tmp_path)
    (loras / "stray.safetensors").write_bytes((source / f"{LORA_NAME}-low-noise.safetensors").read_bytes())
    (loras / f"{LORA_NAME}-low-noise.safetensors").write_bytes(b"")
    with pytest.raises(ModelDirectoryError, match=r"`stray\.yaml` is missing"):
        discover_loras(tmp_path)
