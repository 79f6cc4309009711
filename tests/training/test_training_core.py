"""The training step without Ray: masks on the latent grid, the objective, the contact weighting's gradient,
loss going down, resume reproducing the uninterrupted run, and refusals of bad input. Tiny random Wan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from kiss_core.curation.manifest import read_segments
from kiss_core.training.checks import TrainingInputError, check_base, check_dataset
from kiss_core.training.config import TrainConfig
from kiss_core.training.loop import STATE_FILE, WorkerContext, load_transformer, train_worker
from kiss_core.training.lora import add_lora, load_lora_state
from kiss_core.training.masks import contact_mask, latent_weights, pixel_masks, token_mask
from kiss_core.training.objective import flow_matching_loss, predict, stack_samples, training_scheduler
from kiss_core.training.plan import TrainPlan
from kiss_core.training.precompute import cache_store, precompute, read_sample
from kiss_core.training.validation import validation_prompt
from tests.support.training_set import draw_clip, write_training_set
from tests.training.conftest import small_config


def _plan(
    root: Path, dataset: Path, config: TrainConfig, base: str = "wan-i2v", logs: Path | None = None
) -> TrainPlan:
    directory = check_base(root / base, base)  # type: ignore[arg-type]
    segments = check_dataset(dataset, config)
    prompt = validation_prompt(config.validation, config.trigger_words)
    data = precompute(dataset, segments, directory.path, base, config, directory.image_conditioned, prompt)  # type: ignore[arg-type]
    return TrainPlan(config, base, directory.path, data, logs)  # type: ignore[arg-type]


def test_the_contact_mask_covers_the_lips_and_where_the_faces_meet_on_the_token_grid() -> None:
    _, tracks = draw_clip(0, 9, 64, 64)
    valid = np.ones((9, 2), bool)
    last = contact_mask(tracks[-1], valid[-1], 64, 64, dilation=0.0)
    lips = tracks[-1][:, 48:60]
    for person in range(2):
        x, y = lips[person].mean(axis=0).round().astype(int)
        assert last[y, x] == 1, "each mouth is inside the region"
    assert last[0, 0] == 0 and last[-1, -1] == 0, "the background corners are not"
    masks = pixel_masks(tracks, valid, 9, 64, 64, dilation=0.15)
    tokens = token_mask(masks)
    assert tokens.shape == (3, 4, 4), "9 frames -> 3 latent frames; 64 px -> 4 tokens of 16 px"
    # latent frame 2 covers frames 5..8: its tokens are those touched in any of them
    expected = masks[5:9].max(axis=0).reshape(4, 16, 4, 16).max(axis=(1, 3))
    assert np.array_equal(tokens[2], expected)
    assert 0 < tokens.sum() < tokens.size
    weights = latent_weights(tokens, contact_weight=3.0)
    assert weights.shape == (1, 3, 8, 8) and set(np.unique(weights)) <= {1.0, 3.0}
    assert np.array_equal(latent_weights(tokens, 1.0), np.ones_like(weights)), "weight 1 turns it off"


def test_contact_weighting_changes_the_gradient_only_at_contact_tokens(
    tiny_root: Path, training_set: Path, cache_dir: Path
) -> None:
    """One batch through the real tiny transformer: d loss / d prediction with contact weight 1 and 4."""
    config = small_config(cache_dir=cache_dir)
    plan = _plan(tiny_root, training_set, config)
    transformer = load_transformer("wan-i2v", plan.base_dir, torch.float32)
    add_lora(transformer, config)
    scheduler = training_scheduler(_scheduler_config(plan))
    store = cache_store(config)
    batch = stack_samples(
        [read_sample(store, plan.data.samples[i]) for i in (0, 1)], torch.device("cpu"), torch.float32
    )
    grads = {}
    for weight in (1.0, 4.0):
        out = flow_matching_loss(
            transformer,
            scheduler,
            batch,
            config.model_copy(update={"contact_weight": weight}),
            torch.Generator().manual_seed(7),
        )
        out.prediction.retain_grad()
        out.loss.backward()
        assert out.prediction.grad is not None
        grads[weight] = out.prediction.grad.clone()
        transformer.zero_grad()
    inside = (
        batch.mask.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)[:, None].expand_as(grads[1.0]) > 0
    )
    assert inside.any() and (~inside).any()
    assert torch.equal(grads[4.0][~inside], grads[1.0][~inside]), "outside the region nothing changes"
    assert torch.allclose(grads[4.0][inside], 4.0 * grads[1.0][inside], rtol=1e-5, atol=1e-12)
    assert (grads[1.0][inside] != 0).any()


def _scheduler_config(plan: TrainPlan) -> dict:
    import json

    return json.loads((plan.base_dir / "scheduler" / "scheduler_config.json").read_text())


def _fixed_loss(plan: TrainPlan, state: dict[str, torch.Tensor] | None) -> float:
    """The loss over every clip at fixed sigmas and noise: the same number before and after, for comparing."""
    config = plan.config
    transformer = load_transformer(plan.base, plan.base_dir, torch.float32)
    add_lora(transformer, config)
    if state is not None:
        load_lora_state(transformer, state)
    transformer.eval()
    store = cache_store(config)
    total = 0.0
    generator = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for keys in plan.data.samples:
            batch = stack_samples([read_sample(store, keys)], torch.device("cpu"), torch.float32)
            for sigma in (0.25, 0.5, 0.75, 0.9):
                noise = torch.randn(batch.latents.shape, generator=generator)
                noisy = (1 - sigma) * batch.latents + sigma * noise
                pred = predict(transformer, batch, noisy, torch.tensor([sigma * 1000]))
                total += float(((pred - (noise - batch.latents)) ** 2).mean())
    return total / (4 * len(plan.data.samples))


def test_the_loss_decreases_over_30_steps(
    tiny_root: Path, training_set: Path, cache_dir: Path, tmp_path: Path
) -> None:
    config = small_config(steps=30, checkpoint_every=30, validate_every=0, cache_dir=cache_dir)
    plan = _plan(tiny_root, training_set, config)
    reported: list[tuple[dict[str, float], Path | None]] = []
    final = train_worker(
        plan, WorkerContext(scratch=tmp_path / "run", report=lambda m, c: reported.append((m, c)))
    )
    assert final["step"] == 30 and len(reported) == 30 and reported[-1][1] is not None
    trained = torch.load(reported[-1][1] / STATE_FILE, weights_only=False)["lora"]
    before, after = _fixed_loss(plan, None), _fixed_loss(plan, trained)
    print(f"fixed-sigma loss before {before:.4f} after 30 steps {after:.4f}")
    assert after < 0.97 * before
    losses = [m["loss"] for m, _ in reported]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_a_resumed_run_ends_with_the_lora_of_the_uninterrupted_one(
    tiny_root: Path, training_set: Path, cache_dir: Path, tmp_path: Path
) -> None:
    config = small_config(steps=6, checkpoint_every=3, validate_every=0, cache_dir=cache_dir)
    plan = _plan(tiny_root, training_set, config)
    checkpoints: list[Path] = []
    whole = train_worker(
        plan,
        WorkerContext(scratch=tmp_path / "whole", report=lambda m, c: checkpoints.append(c) if c else None),
    )
    first = TrainPlan(config.model_copy(update={"steps": 3}), plan.base, plan.base_dir, plan.data)
    halves: list[Path] = []
    train_worker(
        first, WorkerContext(scratch=tmp_path / "a", report=lambda m, c: halves.append(c) if c else None)
    )
    rest = train_worker(
        plan,
        WorkerContext(
            scratch=tmp_path / "b", resume=halves[-1], report=lambda m, c: halves.append(c) if c else None
        ),
    )
    assert rest["resumed_from"] == 3 and rest["step"] == whole["step"] == 6
    a = torch.load(checkpoints[-1] / STATE_FILE, weights_only=False)["lora"]
    b = torch.load(halves[-1] / STATE_FILE, weights_only=False)["lora"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_rank_zero_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="rank-0 LoRA has no weights"):
        TrainConfig(rank=0)


def test_an_empty_dataset_is_refused(tmp_path: Path) -> None:
    dataset = write_training_set(tmp_path / "empty", clips=0)
    assert read_segments(dataset) == []
    with pytest.raises(TrainingInputError, match="no kept segment"):
        check_dataset(dataset, small_config())


def test_a_manifest_without_captions_is_refused(tmp_path: Path) -> None:
    dataset = write_training_set(tmp_path / "mute", clips=2, captions=False)
    with pytest.raises(TrainingInputError, match="2 of 2 kept segments have no caption"):
        check_dataset(dataset, small_config())


def test_a_base_directory_of_the_wrong_pipeline_class_is_refused(tiny_root: Path) -> None:
    with pytest.raises(TrainingInputError, match="'WanImageToVideoPipeline' but is 'WanVACEPipeline'"):
        check_base(tiny_root / "wan-vace", "wan-i2v")


def test_the_lora_parameter_count_of_the_memory_arithmetic_is_what_peft_adds() -> None:
    from kiss_core.training.memory import lora_parameters, training_memory
    from tests.support.tiny_wan import TINY_TRANSFORMER, _i2v_transformer

    config = small_config(rank=3)
    transformer = _i2v_transformer(0, image_dim=4)
    added = sum(p.numel() for p in add_lora(transformer, config))
    tiny = {**TINY_TRANSFORMER, "in_channels": 36, "num_layers": 2, "image_dim": 4, "added_kv_proj_dim": 24}
    assert lora_parameters(tiny, config.targets, 3) == added
    row = training_memory("tiny", tiny, config.targets, 3, frames=9, width=64, height=64)
    assert row.tokens == 3 * 4 * 4 and row.lora_parameters == added


def test_a_vace_lora_trains_validates_and_loads_into_the_vace_generator(
    tiny_root: Path, training_set: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """The VACE base in one process: 3 steps, a validation render, the export, the production loader."""
    import shutil

    from kiss_core.generation.backends.wan import WanVACEFrames, adapter_name
    from kiss_core.settings import Settings
    from kiss_core.training.loop import LORA_SUBDIR

    config = small_config(
        name="kiss-vace", steps=3, checkpoint_every=3, validate_every=3, cache_dir=cache_dir
    )
    plan = _plan(tiny_root, training_set, config, base="wan-vace", logs=tmp_path / "logs")
    checkpoints: list[Path] = []
    final = train_worker(
        plan, WorkerContext(scratch=tmp_path / "run", report=lambda m, c: checkpoints.append(c))
    )
    assert final["step"] == 3 and "val/mouth_distance" in final
    assert (tmp_path / "logs" / "validation" / "step_0000003.mp4").stat().st_size > 0
    root = tmp_path / "models"
    shutil.copytree(tiny_root, root)
    for suffix in (".safetensors", ".yaml"):
        shutil.copyfile(
            checkpoints[-1] / LORA_SUBDIR / f"kiss-vace{suffix}", root / "loras" / f"kiss-vace{suffix}"
        )
    settings = Settings(generator={"model_root": str(root), "enabled": ["wan-vace"], "backend": "wan-vace"})
    backend = WanVACEFrames(settings.generator)
    assert set(backend.loras) == {"kiss-vace"}, "only the VACE LoRA is for this backend"
    g = torch.Generator().manual_seed(0)
    inputs = {
        "hidden_states": torch.randn(1, 16, 3, 8, 8, generator=g),
        "timestep": torch.tensor([500.0]),
        "encoder_hidden_states": torch.randn(1, 8, 32, generator=g),
        "control_hidden_states": torch.randn(1, 96, 3, 8, 8, generator=g),
        "control_hidden_states_scale": torch.ones(2),
        "return_dict": False,
    }
    with torch.no_grad():
        backend.pipe.disable_lora()
        plain = backend.pipe.transformer(**inputs)[0]
        backend.pipe.enable_lora()
        backend.pipe.set_adapters([adapter_name("kiss-vace")], [1.0])
        styled = backend.pipe.transformer(**inputs)[0]
    assert (styled - plain).abs().mean() > 1e-4


def test_clips_are_cut_around_their_contact_frame_at_their_own_orientation(tmp_path: Path) -> None:
    from kiss_core.media.video import decode_mp4
    from kiss_core.training.dataset import load_clip

    dataset = write_training_set(tmp_path / "portrait", clips=1, frames=13, width=48, height=64)
    (segment,) = read_segments(dataset)
    assert segment.contact_frame == 12
    clip = load_clip(dataset, segment, width=64, height=48, num_frames=9)
    assert clip.frames.shape == (9, 64, 48, 3), "a portrait clip trains in portrait"
    decoded, _ = decode_mp4(segment.clip_path(dataset).read_bytes())
    np.testing.assert_array_equal(clip.frames, decoded[4:13], "the 9 frames ending at the contact (12)")
    _, tracks = draw_clip(0, 13, 48, 64)
    assert clip.landmarks is not None
    np.testing.assert_allclose(clip.landmarks, tracks[4:13], atol=1e-4)
    mixed = write_training_set(tmp_path / "mixed", clips=1, width=64, height=48)
    (landscape,) = read_segments(mixed)
    for name in ("clips", "tracks"):
        for path in (mixed / name).iterdir():
            (dataset / name / path.name).write_bytes(path.read_bytes())
    from kiss_core.curation.manifest import read_rows, write_manifest

    write_manifest(dataset, read_rows(dataset) + read_rows(mixed))
    assert len(check_dataset(dataset, small_config(batch=1))) == 2
    with pytest.raises(TrainingInputError, match="cannot mix them"):
        check_dataset(dataset, small_config(batch=2))
    assert landscape.width > landscape.height
