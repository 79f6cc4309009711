"""LoRAs as people publish them, loaded through the production loader into the tiny Wan I2V transformer.

Files are written here with the real key names of each layout for the tiny model's modules: diffusers/peft
(`transformer.` … `lora_A`/`lora_B`, with the image-attention `add_k_proj`/`add_v_proj`), ComfyUI
(`diffusion_model.` … `lora_down`/`lora_up`, `.alpha`, `diff_b`, `k_img`/`v_img`, a zeroed norm `diff`)
and kohya/musubi (`lora_unet_blocks_0_self_attn_q` …, `.alpha`). Each must change the video; a file that
matches nothing must stop the replica naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from kiss_core.errors import ModelDirectoryError
from kiss_core.generation.backends.wan import WanI2VFrames
from kiss_core.generation.conditioning import IdentityEncoder
from kiss_core.jobs.stages import load_conditioners
from kiss_core.schemas import VideoParams
from kiss_core.settings import Settings
from tests.support.studio import SyntheticPair, SyntheticStudio
from tests.support.tiny_wan import build_i2v, video_frames

BASE = {"style": "peck", "seconds": 1.0, "fps": 8, "size": "160x128"}
RANK = 4
# Original Wan module names -> diffusers' (per block), as diffusers' converters map them.
ATTENTION = {"q": "to_q", "k": "to_k", "v": "to_v", "o": "to_out.0"}
IMAGE_ATTENTION = {"k_img": "add_k_proj", "v_img": "add_v_proj"}
FFN = {"ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2"}


def _targets(transformer: torch.nn.Module) -> dict[str, tuple[str, torch.nn.Linear]]:
    """Original-layout name (`blocks.0.self_attn.q`) -> (diffusers name, the Linear it targets)."""
    targets = {}
    for index in range(len(transformer.blocks)):
        names = {f"self_attn.{o}": f"attn1.{c}" for o, c in ATTENTION.items()}
        names |= {f"cross_attn.{o}": f"attn2.{c}" for o, c in (ATTENTION | IMAGE_ATTENTION).items()}
        names |= FFN
        for original, ours in names.items():
            targets[f"blocks.{index}.{original}"] = (
                f"blocks.{index}.{ours}",
                transformer.get_submodule(f"blocks.{index}.{ours}"),
            )
    return targets


def _pair(layer: torch.nn.Linear, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    down = torch.randn(RANK, layer.in_features, generator=generator) * 0.5
    up = torch.randn(layer.out_features, RANK, generator=generator) * 0.5
    return down, up


def diffusers_layout(transformer: torch.nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    state = {}
    for ours, layer in _targets(transformer).values():
        down, up = _pair(layer, generator)
        state[f"transformer.{ours}.lora_A.weight"] = down
        state[f"transformer.{ours}.lora_B.weight"] = up
    return state


def comfyui_layout(transformer: torch.nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    state = {}
    for original, (_, layer) in _targets(transformer).items():
        down, up = _pair(layer, generator)
        state[f"diffusion_model.{original}.lora_down.weight"] = down
        state[f"diffusion_model.{original}.lora_up.weight"] = up
        state[f"diffusion_model.{original}.alpha"] = torch.tensor(float(RANK) / 2)
        state[f"diffusion_model.{original}.diff_b"] = (
            torch.randn(layer.out_features, generator=generator) * 0.1
        )
    for index in range(len(transformer.blocks)):  # trainers save the (zero) norm deltas too
        state[f"diffusion_model.blocks.{index}.norm3.diff"] = torch.zeros(
            transformer.blocks[index].norm2.normalized_shape
        )
    return state


def musubi_layout(transformer: torch.nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    state = {}
    for original, (_, layer) in _targets(transformer).items():
        down, up = _pair(layer, generator)
        key = "lora_unet_" + original.replace(".", "_")
        state[f"{key}.lora_down.weight"] = down
        state[f"{key}.lora_up.weight"] = up
        state[f"{key}.alpha"] = torch.tensor(float(RANK))
    return state


LAYOUTS: dict[str, Callable[[torch.nn.Module, torch.Generator], dict[str, torch.Tensor]]] = {
    "style-diffusers": diffusers_layout,
    "style-comfyui": comfyui_layout,
    "style-musubi": musubi_layout,
}


def _install(loras: Path, name: str, state: dict[str, torch.Tensor]) -> None:
    loras.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, loras / f"{name}.safetensors")
    (loras / f"{name}.yaml").write_text(yaml.safe_dump({"base": "wan-i2v"}), encoding="utf-8")


def _settings(root: Path, store: Path) -> Settings:
    return Settings(
        storage={"backend": "local", "local_root": str(store)},
        generator={"model_root": str(root), "steps": 2, "enabled": ["wan-i2v"]},
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    root = tmp_path_factory.mktemp("models")
    pipe = build_i2v(root / "wan-i2v")
    return root, pipe.transformer


@pytest.mark.slow
def test_loras_in_the_diffusers_comfyui_and_musubi_layouts_each_change_the_video(
    tiny: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    root, transformer = tiny
    generator = torch.Generator().manual_seed(3)
    for name, layout in LAYOUTS.items():
        _install(root / "loras", name, layout(transformer, generator))
    settings = _settings(root, tmp_path)
    backend = WanI2VFrames(settings.generator)
    assert set(backend.loras) == set(LAYOUTS)
    image_attention = backend.pipe.transformer.blocks[1].attn2.add_k_proj
    for name in LAYOUTS:
        assert name in image_attention.lora_A, name
    assert image_attention.lora_B["style-comfyui"].bias is not None, "diff_b arrives as the LoRA bias"

    pair: SyntheticPair = SyntheticStudio(settings, str(tmp_path)).pair(0, 1)
    encoder = IdentityEncoder(settings.faces, settings.generator, load_conditioners(settings))
    params = VideoParams(backend="wan-i2v", **BASE)
    plain = encoder.encode(pair.photos, pair.analyses, params)
    assert plain.model is not None
    without = video_frames(backend, pair, plain, params)
    for name in LAYOUTS:
        styled = video_frames(backend, pair, replace(plain, model=replace(plain.model, lora=name)), params)
        assert np.abs(styled.astype(int) - without.astype(int)).mean() > 0.2, f"{name} changes the video"


@pytest.mark.parametrize(
    "keys",
    [
        # A Flux LoRA: diffusers' prefix, modules the Wan transformer does not have (peft raises).
        {"transformer.single_transformer_blocks.0.attn.to_q": (24, 24)},
        # A text-encoder-only LoRA: nothing for the transformer (diffusers only logs it).
        {"text_encoder.encoder.block.0.layer.0.SelfAttention.q": (32, 32)},
    ],
    ids=["flux", "text-encoder-only"],
)
def test_a_lora_that_matches_nothing_stops_the_replica_naming_the_file(
    tiny: tuple[Path, torch.nn.Module], tmp_path: Path, keys: dict[str, tuple[int, int]]
) -> None:
    root = tmp_path / "models"
    root.mkdir()
    (root / "wan-i2v").symlink_to(tiny[0] / "wan-i2v")
    state = {}
    for key, (inputs, outputs) in keys.items():
        state[f"{key}.lora_A.weight"] = torch.ones(RANK, inputs)
        state[f"{key}.lora_B.weight"] = torch.ones(outputs, RANK)
    _install(root / "loras", "elsewhere", state)
    with pytest.raises(ModelDirectoryError, match=r"`elsewhere\.safetensors`") as caught:
        WanI2VFrames(_settings(root, tmp_path).generator)
    assert str(root / "loras") in str(caught.value)
