"""Memory arithmetic on the real Wan 14B / A14B / VACE configs, built on the meta device (no allocation)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiss_core.errors import GpuMemoryInsufficient
from kiss_core.generation.memory import (
    GIB,
    backend_memory,
    check_replica_layout,
    format_table,
    memory_table,
    read_configs,
)
from tests.support.wan_configs import CHECKPOINTS, write_config_directory

# Parameter counts of the real checkpoints' architectures (diffusers 0.42.1, transformers 5.x).
I2V_14B = 16_394_878_784  # Wan2.1-I2V-14B-480P: the 14B DiT + image cross-attention, 36 channels in
A14B_EXPERT = 14_288_901_184  # each of Wan2.2-I2V-A14B's two experts
VACE_14B = 17_337_592_896  # Wan2.1-VACE-14B: the 14B DiT + 8 VACE blocks
UMT5_XXL = 5_680_910_336
CLIP_H = 630_766_080
WAN_VAE = 126_892_531


def test_the_real_configs_have_the_published_sizes() -> None:
    i2v = backend_memory("wan-i2v", CHECKPOINTS["Wan2.1-I2V-14B-480P"]).components
    a14b = backend_memory("wan-i2v", CHECKPOINTS["Wan2.2-I2V-A14B"]).components
    vace = backend_memory("wan-vace", CHECKPOINTS["Wan2.1-VACE-14B"]).components
    assert i2v["transformer"].parameters == I2V_14B
    assert a14b["transformer"].parameters == a14b["transformer_2"].parameters == A14B_EXPERT
    assert vace["transformer"].parameters == VACE_14B
    assert i2v["text_encoder"].parameters == vace["text_encoder"].parameters == UMT5_XXL  # ~5.7 B
    assert i2v["image_encoder"].parameters == CLIP_H and i2v["vae"].parameters == WAN_VAE
    assert 14e9 < A14B_EXPERT < I2V_14B < VACE_14B < 17.5e9


def test_bytes_are_bf16_for_transformers_and_umt5_and_float32_for_the_vae_and_clip() -> None:
    i2v = backend_memory("wan-i2v", CHECKPOINTS["Wan2.1-I2V-14B-480P"]).components
    transformer = i2v["transformer"]
    assert transformer.dtype == "bfloat16" and transformer.bytes - transformer.buffer_bytes == 2 * I2V_14B
    assert transformer.buffer_bytes == 2**20  # the RoPE tables
    assert i2v["text_encoder"].bytes == 2 * UMT5_XXL
    assert i2v["vae"].dtype == i2v["image_encoder"].dtype == "float32"
    assert i2v["vae"].bytes == 4 * WAN_VAE
    assert round(transformer.gib, 1) == 30.5 and round(i2v["text_encoder"].gib, 1) == 10.6


def test_the_docs_table_per_backend() -> None:
    rows = {r["backend"]: r for r in memory_table(CHECKPOINTS)}
    assert rows["Wan2.1-I2V-14B-480P"]["generator_gib"] == 31.01
    assert rows["Wan2.1-I2V-14B-480P"]["encoder_gib"] == 12.93
    assert (rows["Wan2.2-I2V-A14B"]["transformers"], rows["Wan2.2-I2V-A14B"]["generator_gib"]) == (2, 53.7)
    assert rows["Wan2.1-VACE-14B"]["generator_gib"] == 32.77
    table = format_table(memory_table(CHECKPOINTS))
    assert "| Wan2.2-I2V-A14B | 2 x 14.29 B = 53.2 GiB |" in table and len(table.splitlines()) == 5


def test_a_layout_that_cannot_fit_is_refused_at_start_with_the_numbers(tmp_path: Path) -> None:
    write_config_directory(tmp_path / "wan-i2v", "Wan2.1-I2V-14B-480P")
    write_config_directory(tmp_path / "wan-vace", "Wan2.1-VACE-14B")
    assert set(read_configs(tmp_path / "wan-vace")) == {"transformer", "vae", "text_encoder"}
    h100 = 80 * GIB
    # One 14B backend per generator replica fits an 80 GB card; both (about 63 GiB of weights) plus a
    # 24 GiB activation reserve do not.
    held = check_replica_layout(tmp_path, ["wan-i2v"], "generator", h100, reserve_gib=24)
    assert set(held) == {"wan-i2v/transformer", "wan-i2v/vae"}
    refused = (
        r"weights take 63\.8 GiB \(wan-i2v/transformer 30\.5 GiB, .*wan-vace/transformer 32\.3 GiB.*80\.0"
    )
    with pytest.raises(GpuMemoryInsufficient, match=refused):
        check_replica_layout(tmp_path, ["wan-i2v", "wan-vace"], "generator", h100, reserve_gib=24)
    # The encoder holds one UMT5 for both backends, and CLIP for the image-conditioned one.
    encoder = check_replica_layout(tmp_path, ["wan-i2v", "wan-vace"], "encoder", 20 * GIB)
    assert set(encoder) == {"text_encoder", "wan-i2v/image_encoder"}
    with pytest.raises(GpuMemoryInsufficient, match=r"12\.9 GiB in all, but the replica has 10\.0 GiB"):
        check_replica_layout(tmp_path, ["wan-i2v"], "encoder", 10 * GIB)
