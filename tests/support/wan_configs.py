"""The real configs of the Wan checkpoints the service runs, as plain dicts (torch-free, for the GPU bench).

Sources:
- transformers: diffusers' scripts/convert_wan_to_diffusers.py (`get_transformer_config`,
  huggingface/diffusers at 7d56827), model types "Wan-I2V-14B-480p", "Wan2.2-I2V-14B-720p"
  (Wan-AI/Wan2.2-I2V-A14B, converted twice: high_noise_model → transformer, low_noise_model →
  transformer_2, boundary_ratio 0.9) and "Wan-VACE-14B".
- VAE: the Wan2.1 VAE, which is AutoencoderKLWan's default config in diffusers 0.42 (the conversion
  script builds it with no arguments); Wan2.1 and Wan2.2 A14B share it.
- text encoder: google/umt5-xxl (UMT5EncoderModel), which the conversion script loads for every Wan model.
- image encoder: laion/CLIP-ViT-H-14-laion2B-s32B-b79K's vision tower (CLIPVisionModel), Wan2.1 I2V only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_WAN_14B: dict[str, Any] = {
    "added_kv_proj_dim": None,
    "attention_head_dim": 128,
    "cross_attn_norm": True,
    "eps": 1e-06,
    "ffn_dim": 13824,
    "freq_dim": 256,
    "in_channels": 16,
    "num_attention_heads": 40,
    "num_layers": 40,
    "out_channels": 16,
    "patch_size": [1, 2, 2],
    "qk_norm": "rms_norm_across_heads",
    "text_dim": 4096,
}
WAN21_I2V_14B_480P_TRANSFORMER: dict[str, Any] = {
    **_WAN_14B,
    "image_dim": 1280,
    "added_kv_proj_dim": 5120,
    "in_channels": 36,
}
WAN22_I2V_A14B_TRANSFORMER: dict[str, Any] = {**_WAN_14B, "in_channels": 36}  # each of the two experts
WAN21_VACE_14B_TRANSFORMER: dict[str, Any] = {
    **_WAN_14B,
    "vace_layers": [0, 5, 10, 15, 20, 25, 30, 35],
    "vace_in_channels": 96,
}
WAN21_VAE: dict[str, Any] = {
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
}
UMT5_XXL: dict[str, Any] = {
    "vocab_size": 256384,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_decoder_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "dropout_rate": 0.1,
    "layer_norm_epsilon": 1e-06,
    "feed_forward_proj": "gated-gelu",
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}
CLIP_VIT_H_14_VISION: dict[str, Any] = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "projection_dim": 1024,
    "num_hidden_layers": 32,
    "num_attention_heads": 16,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 14,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-05,
}

# Per checkpoint: component → config, as `read_configs` returns them from a model directory.
CHECKPOINTS: dict[str, dict[str, dict[str, Any]]] = {
    "Wan2.1-I2V-14B-480P": {
        "transformer": WAN21_I2V_14B_480P_TRANSFORMER,
        "vae": WAN21_VAE,
        "text_encoder": UMT5_XXL,
        "image_encoder": CLIP_VIT_H_14_VISION,
    },
    "Wan2.2-I2V-A14B": {
        "transformer": WAN22_I2V_A14B_TRANSFORMER,
        "transformer_2": WAN22_I2V_A14B_TRANSFORMER,
        "vae": WAN21_VAE,
        "text_encoder": UMT5_XXL,
    },
    "Wan2.1-VACE-14B": {
        "transformer": WAN21_VACE_14B_TRANSFORMER,
        "vae": WAN21_VAE,
        "text_encoder": UMT5_XXL,
    },
}


def write_config_directory(path: Path, checkpoint: str) -> Path:
    """A pipeline directory with only the components' config.json files (what memory arithmetic reads)."""
    for component, config in CHECKPOINTS[checkpoint].items():
        (path / component).mkdir(parents=True, exist_ok=True)
        (path / component / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return path
