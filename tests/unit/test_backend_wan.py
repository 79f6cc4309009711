"""The Wan diffusion backends on CPU: tiny random-weight pipelines, the production loader, real diffusers.

The model root is built once per module from configs (tests.support.tiny_wan) and loaded the way a
replica loads it, through Settings. Subjects are synthetic composites, never a real person.
"""

from __future__ import annotations

import asyncio
import io
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch

from kiss_core.errors import BackendUnavailable, ClipTooLong, JobNotFound, ModelDirectoryError
from kiss_core.generation.backends.base import StepProgress
from kiss_core.generation.backends.loras import discover_loras
from kiss_core.generation.backends.wan import WanI2VFrames
from kiss_core.generation.backends.weights import frames_to_generate, validate_model_directory
from kiss_core.generation.conditioning import IdentityEncoder
from kiss_core.generation.producer import VideoProducer
from kiss_core.jobs.admission import JobAdmission
from kiss_core.jobs.runner import JobRunner
from kiss_core.jobs.stages import InProcessStages, load_backends, load_conditioners
from kiss_core.jobs.store import JobStore
from kiss_core.keys import new_job_id
from kiss_core.scene.choreography import plan_kiss
from kiss_core.schemas import Attestation, StageRequest, SubjectConsent, VideoParams
from kiss_core.settings import GeneratorSettings, Settings
from tests.support.studio import SyntheticPair, SyntheticStudio
from tests.support.tiny_wan import (
    FAST_LORA_NAME,
    LORA_NAME,
    LORA_TRIGGER,
    ForwardCounter,
    build_model_root,
    video_frames,
)

STEPS = 3
BASE = {"style": "peck", "seconds": 1.5, "fps": 8, "size": "160x128"}  # 12 frames: not 4k+1


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_root(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def settings(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        storage={"backend": "local", "local_root": str(tmp_path_factory.mktemp("store"))},
        generator={"model_root": str(model_root), "steps": STEPS, "fast_steps": 2},
    )


@pytest.fixture(scope="module")
def studio(settings: Settings) -> SyntheticStudio:
    return SyntheticStudio(settings, str(settings.storage.local_root))


@pytest.fixture(scope="module")
def pair(studio: SyntheticStudio) -> SyntheticPair:
    return studio.pair(0, 1)


@pytest.fixture(scope="module")
def backends(settings: Settings) -> dict[str, Any]:
    return load_backends(settings)


@pytest.fixture(scope="module")
def producer(settings: Settings, studio: SyntheticStudio, backends: dict[str, Any]) -> VideoProducer:
    return VideoProducer(settings, studio.store, studio.analyzer, backends)


def _decode(data: bytes) -> tuple[int, int, int]:
    """(frames, width, height) of an MP4, decoded with PyAV."""
    with av.open(io.BytesIO(data)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return len(frames), frames[0].shape[1], frames[0].shape[0]


@pytest.mark.parametrize(
    ("frame_count", "generated"), [(1, 1), (2, 5), (5, 5), (8, 9), (12, 13), (81, 81), (120, 121)]
)
def test_wan_generates_the_smallest_4k_plus_1_frames_that_cover_the_plan(
    frame_count: int, generated: int
) -> None:
    assert frames_to_generate(frame_count) == generated


def test_the_loader_splits_the_pipelines_between_encoder_and_generator(
    encoder: IdentityEncoder, backends: dict[str, Any]
) -> None:
    assert set(backends) == {"preview", "wan-i2v", "wan-vace"}
    for name in ("wan-i2v", "wan-vace"):
        generator, conditioner = backends[name].pipe, encoder.conditioners[name].pipe
        assert (
            generator.transformer is not None
            and generator.vae is not None
            and generator.scheduler is not None
        )
        assert generator.text_encoder is None and generator.tokenizer is None
        assert (
            conditioner.text_encoder is not None
            and conditioner.transformer is None
            and conditioner.vae is None
        )
        assert generator.vae.dtype == torch.float32
        backends[name].check_health()
    assert backends["wan-i2v"].pipe.image_encoder is None
    assert encoder.conditioners["wan-i2v"].pipe.image_encoder is not None
    assert set(backends["wan-i2v"].loras) == {LORA_NAME, FAST_LORA_NAME} and not backends["wan-vace"].loras


@pytest.mark.parametrize("backend", ["wan-i2v", "wan-vace"])
def test_a_job_through_the_producer_gives_an_mp4_of_the_requested_frames_and_size(
    backend: str,
    encoder: IdentityEncoder,
    producer: VideoProducer,
    pair: SyntheticPair,
    studio: SyntheticStudio,
) -> None:
    params = VideoParams(backend=backend, **BASE)
    conditioning = encoder.encode(pair.photos, pair.analyses, params)
    assert conditioning.backend == backend and conditioning.model is not None
    assert (conditioning.model.image_embeds is not None) == (backend == "wan-i2v")
    keys = {s: f"inputs/{backend}/{s}.png" for s in pair.pngs}
    for subject, key in keys.items():
        studio.store.put(key, pair.pngs[subject], "image/png")
    reported: list[int] = []
    steps_before = producer.backends[backend].steps_done
    request = StageRequest(
        job_id=new_job_id(), params=params, input_keys=keys, analyses=[pair.analyses["a"], pair.analyses["b"]]
    )
    result = producer.produce(request, conditioning, lambda _stage, percent: reported.append(percent))
    assert producer.backends[backend].steps_done - steps_before == STEPS
    assert (result.frames, result.width, result.height) == (12, 160, 128)
    assert _decode(studio.store.get(result.keys["video"])) == (12, 160, 128)
    assert reported == sorted(reported) and len([p for p in reported if 10 < p <= 80]) >= STEPS


def test_prompt_embeddings_are_cached_per_prompt(encoder: IdentityEncoder, pair: SyntheticPair) -> None:
    conditioner = encoder.conditioners["wan-vace"]
    romantic = VideoParams(backend="wan-vace", **{**BASE, "style": "romantic", "intensity": 0.1})
    first = encoder.encode(pair.photos, pair.analyses, romantic)
    hits, misses = conditioner.hits, conditioner.misses
    second = encoder.encode(pair.photos, pair.analyses, romantic.model_copy(update={"seed": 7}))
    assert (conditioner.hits, conditioner.misses) == (hits + 1, misses)
    assert first.model is not None and second.model is not None
    assert torch.equal(first.model.prompt_embeds, second.model.prompt_embeds)
    encoder.encode(pair.photos, pair.analyses, romantic.model_copy(update={"style": "cheek"}))
    assert (conditioner.hits, conditioner.misses) == (hits + 1, misses + 1)
    assert first.model.prompt_embeds.device.type == "cpu" and first.model.negative_prompt_embeds is not None
    assert "Restrained and brief" in first.model.prompt


def test_cancelling_mid_denoise_stops_within_one_step_and_leaves_the_pipeline_usable(
    encoder: IdentityEncoder, backends: dict[str, Any], pair: SyntheticPair
) -> None:
    backend = backends["wan-vace"]
    params = VideoParams(backend="wan-vace", **BASE)
    conditioning = encoder.encode(pair.photos, pair.analyses, params)
    plan = plan_kiss(pair.analyses, params)
    shares: list[float] = []

    def deleted_after_first_step(share: float) -> None:
        shares.append(share)
        raise JobNotFound("job deleted", None)

    with ForwardCounter(backend.pipe.transformer) as forwards, pytest.raises(JobNotFound):
        list(backend.frames(plan, pair.photos, pair.analyses, conditioning, params, deleted_after_first_step))
    assert forwards.calls == 2, "one step (conditional + unconditional forward), then stopped"
    assert len(shares) == 1

    with ForwardCounter(backend.pipe.transformer) as forwards:
        again = list(backend.frames(plan, pair.photos, pair.analyses, conditioning, params, lambda _: None))
    assert forwards.calls == 2 * STEPS and len(again) == 12


def test_a_lora_changes_the_output_and_is_chosen_per_request(
    encoder: IdentityEncoder, backends: dict[str, Any], pair: SyntheticPair
) -> None:
    backend = backends["wan-i2v"]
    plain = VideoParams(backend="wan-i2v", **{**BASE, "seconds": 1.0})
    with_lora = plain.model_copy(update={"lora": LORA_NAME})
    plain_conditioning = encoder.encode(pair.photos, pair.analyses, plain)
    lora_conditioning = encoder.encode(pair.photos, pair.analyses, with_lora)
    assert lora_conditioning.model is not None and lora_conditioning.model.lora == LORA_NAME
    assert lora_conditioning.model.prompt.startswith(LORA_TRIGGER)

    # The adapter alone (same embeddings, LoRA on) changes the video; switching it off restores it.
    assert plain_conditioning.model is not None
    adapter_only = replace(plain_conditioning, model=replace(plain_conditioning.model, lora=LORA_NAME))
    before = video_frames(backend, pair, plain_conditioning, plain)
    styled = video_frames(backend, pair, adapter_only, with_lora)
    after = video_frames(backend, pair, plain_conditioning, plain)
    assert before.shape == styled.shape == (8, 128, 160, 3) and before.dtype == np.uint8
    assert np.abs(before[1:].astype(int) - styled[1:].astype(int)).mean() > 0.2, "the LoRA changes the video"
    np.testing.assert_array_equal(before, after)  # seeded, and the adapter is off again
    with_trigger = video_frames(backend, pair, lora_conditioning, with_lora)
    assert not np.array_equal(with_trigger, styled), "the trigger words reach the model"

    with pytest.raises(BackendUnavailable, match="not installed for wan-vace"):
        encoder.encode(
            pair.photos, pair.analyses, plain.model_copy(update={"backend": "wan-vace", "lora": LORA_NAME})
        )
    with pytest.raises(BackendUnavailable, match="'missing'"):
        encoder.encode(pair.photos, pair.analyses, plain.model_copy(update={"lora": "missing"}))


def test_the_fast_quality_runs_the_distilled_steps_without_guidance(
    encoder: IdentityEncoder, backends: dict[str, Any], pair: SyntheticPair
) -> None:
    params = VideoParams(backend="wan-i2v", quality="fast", **{**BASE, "seconds": 1.0})
    conditioning = encoder.encode(pair.photos, pair.analyses, params)
    assert conditioning.model is not None and conditioning.model.fast
    assert conditioning.model.negative_prompt_embeds is None
    assert conditioning.model.fast_lora == FAST_LORA_NAME
    with ForwardCounter(backends["wan-i2v"].pipe.transformer) as forwards:
        frames = video_frames(backends["wan-i2v"], pair, conditioning, params)
    assert forwards.calls == 2 and frames.shape == (8, 128, 160, 3), "2 fast steps, one forward each"


def test_a_backend_that_is_not_loaded_is_refused_as_a_client_error(pair: SyntheticPair) -> None:
    encoder = IdentityEncoder()
    with pytest.raises(BackendUnavailable, match="'wan-vace' is not available; available: \\['preview'\\]"):
        encoder.encode(pair.photos, pair.analyses, VideoParams(backend="wan-vace", **BASE))
    assert encoder.encode(pair.photos, pair.analyses, VideoParams(**BASE)).backend == "preview"


def test_a_job_runs_on_the_requested_backend_through_the_in_process_stages(
    settings: Settings, studio: SyntheticStudio, pair: SyntheticPair
) -> None:
    """The IdentityStage conditions for the backend the job's parameters name."""
    local = settings.model_copy(
        update={"generator": settings.generator.model_copy(update={"enabled": ["wan-vace"]})}
    )
    stages = InProcessStages(local, studio.store)
    admission = JobAdmission(JobStore(studio.store), stages, local.limits)
    runner = JobRunner(JobStore(studio.store), stages, local.jobs.model_copy(update={"max_attempts": 1}))
    attested = Attestation(a=SubjectConsent(consented=True), b=SubjectConsent(consented=True))
    params = VideoParams(backend="wan-vace", **{**BASE, "seconds": 1.0})
    manifest = asyncio.run(admission.submit(params, pair.pngs, attested))
    done = asyncio.run(runner.run(manifest.id))
    assert done.status == "completed", done.error
    assert done.result is not None and (done.result.frames, done.result.width) == (8, 160)
    refused = asyncio.run(
        admission.submit(params.model_copy(update={"backend": "wan-i2v"}), pair.pngs, attested)
    )
    failed = asyncio.run(runner.run(refused.id))
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.code == "backend_unavailable" and "wan-i2v" in failed.error.detail


@pytest.fixture
def broken(model_root: Path, tmp_path: Path) -> Iterator[Path]:
    """A copy of the tiny model root to break."""
    root = tmp_path / "models"
    shutil.copytree(model_root, root)
    yield root


@pytest.mark.parametrize(
    ("breakage", "backend", "message"),
    [
        (lambda r: (r / "wan-vace" / "model_index.json").unlink(), "wan-vace", "model_index.json is missing"),
        (
            lambda r: shutil.rmtree(r / "wan-vace" / "transformer"),
            "wan-vace",
            "`transformer/` subfolder is missing",
        ),
        (
            lambda r: (r / "wan-vace" / "vae" / "diffusion_pytorch_model.safetensors").unlink(),
            "wan-vace",
            "`vae/` has no weights",
        ),
        (
            lambda r: (r / "wan-vace" / "text_encoder" / "config.json").unlink(),
            "wan-vace",
            "text_encoder/config.json",
        ),
        (lambda r: (r / "wan-i2v" / "model_index.json").write_text("{"), "wan-i2v", "not valid JSON"),
        (
            lambda r: shutil.rmtree(r / "wan-i2v" / "image_encoder"),
            "wan-i2v",
            "`image_encoder/` subfolder is missing",
        ),
        (lambda r: shutil.rmtree(r / "wan-i2v"), "wan-i2v", "not a directory"),
        (
            lambda r: shutil.copy(r / "wan-vace" / "model_index.json", r / "wan-i2v" / "model_index.json"),
            "wan-i2v",
            "must be 'WanImageToVideoPipeline' but is 'WanVACEPipeline'",
        ),
    ],
)
def test_a_missing_or_malformed_model_directory_fails_at_start_naming_the_piece(
    broken: Path, breakage: Any, backend: str, message: str
) -> None:
    breakage(broken)
    settings = Settings(generator={"model_root": str(broken), "enabled": [backend]})
    with pytest.raises(ModelDirectoryError, match=message.replace("(", r"\(").replace("[", r"\[")) as caught:
        load_conditioners(settings)
        load_backends(settings)
    assert str(broken / backend) in str(caught.value)


def test_broken_loras_and_an_unloadable_default_backend_fail_at_start(broken: Path) -> None:
    (broken / "loras" / f"{FAST_LORA_NAME}.safetensors").unlink()
    with pytest.raises(ModelDirectoryError, match=f"`{FAST_LORA_NAME}.safetensors` is missing"):
        discover_loras(broken)
    (broken / "loras" / f"{FAST_LORA_NAME}.yaml").unlink()
    assert set(discover_loras(broken)) == {LORA_NAME}
    (broken / "loras" / f"{LORA_NAME}.yaml").write_text("base: wan-t2v\n")
    with pytest.raises(ModelDirectoryError, match=f"`{LORA_NAME}.yaml` is malformed"):
        discover_loras(broken)
    with pytest.raises(ModelDirectoryError, match="default backend 'wan-vace' is not loaded"):
        load_backends(Settings(generator={"model_root": str(broken / "nowhere"), "backend": "wan-vace"}))
    # Each side checks only what it loads: the generator does not need the text encoder.
    shutil.rmtree(broken / "wan-vace" / "text_encoder")
    assert validate_model_directory(broken / "wan-vace", "wan-vace", ("transformer", "vae", "scheduler"))
    assert GeneratorSettings(model_root=broken).enabled is None


def test_speed_settings_reach_the_pipeline_and_keep_the_output(
    settings: Settings, encoder: IdentityEncoder, backends: dict[str, Any], pair: SyntheticPair
) -> None:
    """attention_backend and vae_tiling are applied at load; on this tiny model the math is the same,
    so the seeded video matches the default pipeline's to float precision."""
    tuned = settings.generator.model_copy(update={"attention_backend": "_native_math", "vae_tiling": True})
    fast = WanI2VFrames(tuned)
    assert fast.pipe.vae.use_tiling and not backends["wan-i2v"].pipe.vae.use_tiling
    processor = fast.pipe.transformer.blocks[0].attn1.processor
    assert getattr(processor, "_attention_backend", None) == "_native_math"
    params = VideoParams(backend="wan-i2v", **BASE)
    conditioning = encoder.encode(pair.photos, pair.analyses, params)
    reference = video_frames(backends["wan-i2v"], pair, conditioning, params).astype(np.int16)
    assert np.abs(video_frames(fast, pair, conditioning, params).astype(np.int16) - reference).max() <= 2


def test_the_latent_preview_is_fitted_from_the_vae_at_load_and_a_failed_fit_only_costs_the_previews(
    settings: Settings,
    encoder: IdentityEncoder,
    backends: dict[str, Any],
    pair: SyntheticPair,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With progress previews on (the default, every 4 steps), each Wan backend fits its latent-to-RGB map
    from its own VAE at load and sends previews at twice the latent grid; if the fit fails the backend
    loads, logs a warning and makes its videos without previews."""
    params = VideoParams(backend="wan-i2v", **BASE)
    conditioning = encoder.encode(pair.photos, pair.analyses, params)
    plan = plan_kiss(pair.analyses, params)
    for name in ("wan-i2v", "wan-vace"):
        projection = backends[name].preview_projection
        assert projection is not None and projection.channels == backends[name].pipe.vae.config.z_dim
        assert projection.residual_rms < projection.target_rms
    every_step = settings.generator.model_copy(update={"progress_preview_every_steps": 1})
    backend = WanI2VFrames(every_step)
    previews: list[np.ndarray] = []
    progress = StepProgress(lambda _share: None, previews.append)
    assert len(list(backend.frames(plan, pair.photos, pair.analyses, conditioning, params, progress))) == 12
    assert len(previews) == STEPS
    assert all(p.shape == (128 // 8 * 2, 160 // 8 * 2, 3) and p.dtype == np.uint8 for p in previews)

    def broken_fit(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("no memory for the fit")

    monkeypatch.setattr("kiss_core.generation.backends.wan.fit_latent_rgb", broken_fit)
    with caplog.at_level("WARNING", logger="kiss_core.generation.backends.wan"):
        unfitted = WanI2VFrames(every_step)
    assert unfitted.preview_projection is None
    assert any("fitting the latent preview failed" in r.getMessage() for r in caplog.records)
    previews.clear()
    assert len(list(unfitted.frames(plan, pair.photos, pair.analyses, conditioning, params, progress))) == 12
    assert previews == []


def test_wan_generates_at_its_native_rate_and_interpolates_to_the_requested_fps(
    encoder: IdentityEncoder, backends: dict[str, Any], pair: SyntheticPair
) -> None:
    """1 s at 24 fps: 17 frames generated at 16 fps (5 latent frames), 24 delivered; where an output time
    falls on a generated frame it is that frame, the same one a 16 fps request gets."""
    backend = backends["wan-vace"]
    at_24 = VideoParams(backend="wan-vace", **{**BASE, "seconds": 1.0, "fps": 24})
    at_16 = at_24.model_copy(update={"fps": 16})
    conditioning = encoder.encode(pair.photos, pair.analyses, at_24)
    latent_frames: list[int] = []
    hook = backend.pipe.transformer.register_forward_pre_hook(
        lambda _m, _a, kw: latent_frames.append(kw["hidden_states"].shape[2]), with_kwargs=True
    )
    try:
        delivered = video_frames(backend, pair, conditioning, at_24)
        native = video_frames(backend, pair, conditioning, at_16)
    finally:
        hook.remove()
    # VACE puts the two reference images' latents before the video's: 2 + 5 (17 frames at 16 fps).
    assert set(latent_frames) == {2 + 5}, "17 frames at 16 fps, whatever fps is asked"
    assert delivered.shape == (plan_kiss(pair.analyses, at_24).frame_count, 128, 160, 3) == (24, 128, 160, 3)
    assert native.shape[0] == 16
    np.testing.assert_array_equal(delivered[::3], native[::2])  # t = 0, 1/8, 2/8 ... s
    with pytest.raises(ClipTooLong, match="one window holds 81"):
        video_frames(backend, pair, conditioning, at_24.model_copy(update={"seconds": 6.0}))
