"""Tiny random-weight Wan pipelines, built from configs and written as a `model_root` (seconds on CPU).

The same diffusers and transformers classes as the real checkpoints, with a few dozen channels:
a 2-layer WanTransformer3DModel (image-conditioned, like Wan2.1 I2V 14B) and a 3-layer
WanVACETransformer3DModel, the Wan VAE at base_dim 3, a 2-layer UMT5 encoder, a tiny CLIP vision
tower, and a T5 (Unigram) tokenizer whose vocabulary is built here from the words of our prompt
template — nothing is downloaded. Layout as in kiss_core.generation.backends.weights:

    root/wan-i2v/  root/wan-vace/  root/loras/kiss-tiny.{safetensors,yaml}  root/loras/fast-tiny.{...}

`build_a14b_root` writes a Wan2.2 A14B-shaped wan-i2v instead: two transformers (high- and
low-noise experts, switched at `boundary_ratio`), no CLIP, and a LoRA with a low-noise file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from kiss_core.generation.conditioning import Conditioning
from kiss_core.safety.prompt import NEGATIVE_PROMPT, STYLE_PROMPTS, TEMPLATE, intensity_phrase
from kiss_core.scene.choreography import plan_kiss
from kiss_core.schemas import VideoParams
from tests.support.studio import SyntheticPair

TEXT_DIM = 32
LORA_NAME = "kiss-tiny"
LORA_TRIGGER = "kiss-tiny-style"
FAST_LORA_NAME = "fast-tiny"


def tiny_tokenizer() -> object:
    """A T5 tokenizer (Unigram, as UMT5's) over our prompt words and single characters."""
    from transformers import T5Tokenizer

    text = " ".join(
        [TEMPLATE, NEGATIVE_PROMPT, *STYLE_PROMPTS.values(), intensity_phrase(0), intensity_phrase(1)]
    )
    words = sorted({w for w in re.findall(r"[A-Za-z]+", text)} | {LORA_TRIGGER})
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(f"▁{w}", -1.0) for w in words]
    vocab += [(c, -8.0) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,.:;!?'-"]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def _text_encoder(vocab_size: int) -> object:
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    config = UMT5Config(
        vocab_size=vocab_size,
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
    )
    return UMT5EncoderModel(config)


def _vae() -> object:
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    return AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )


def _scheduler() -> object:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(shift=7.0)


# What the tiny I2V and VACE transformers share: two 12-wide heads, Wan's norms and patching.
TINY_TRANSFORMER: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 2,
    "attention_head_dim": 12,
    "out_channels": 16,
    "text_dim": TEXT_DIM,
    "freq_dim": 256,
    "ffn_dim": 32,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 32,
}


def _i2v_transformer(seed: int, image_dim: int | None) -> object:
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    # With image embeddings, cross-attention gets its image key/value projections (`add_k_proj`, `add_v_proj`)
    # at the inner width, as Wan2.1 I2V 14B's config (added_kv_proj_dim 5120) has them.
    inner = TINY_TRANSFORMER["num_attention_heads"] * TINY_TRANSFORMER["attention_head_dim"]
    return WanTransformer3DModel(
        **TINY_TRANSFORMER,
        in_channels=36,
        num_layers=2,
        image_dim=image_dim,
        added_kv_proj_dim=None if image_dim is None else inner,
    )


def build_i2v(path: Path) -> object:
    """A WanImageToVideoPipeline with a CLIP image encoder (image_dim set, as Wan2.1 I2V 14B)."""
    from diffusers import WanImageToVideoPipeline
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    tokenizer = tiny_tokenizer()
    transformer = _i2v_transformer(0, image_dim=4)
    torch.manual_seed(0)
    image_encoder = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=4,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            intermediate_size=16,
            patch_size=4,
        )
    )
    pipe = WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=_text_encoder(len(tokenizer)),
        vae=_vae(),
        scheduler=_scheduler(),
        image_processor=CLIPImageProcessor(crop_size=32, size=32),
        image_encoder=image_encoder,
        transformer=transformer,
    )
    pipe.save_pretrained(path)
    return pipe


def build_vace(path: Path) -> object:
    from diffusers import WanVACEPipeline, WanVACETransformer3DModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    transformer = WanVACETransformer3DModel(
        **TINY_TRANSFORMER, in_channels=16, num_layers=3, vace_layers=[0, 2], vace_in_channels=96
    )
    pipe = WanVACEPipeline(
        tokenizer=tokenizer,
        text_encoder=_text_encoder(len(tokenizer)),
        vae=_vae(),
        scheduler=_scheduler(),
        transformer=transformer,
    )
    pipe.save_pretrained(path)
    return pipe


def build_a14b(path: Path) -> object:
    """A Wan2.2 I2V A14B-shaped pipeline: a high-noise and a low-noise transformer, no image encoder."""
    from diffusers import WanImageToVideoPipeline

    tokenizer = tiny_tokenizer()
    pipe = WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=_text_encoder(len(tokenizer)),
        vae=_vae(),
        scheduler=_scheduler(),
        transformer=_i2v_transformer(0, image_dim=None),
        transformer_2=_i2v_transformer(1, image_dim=None),
        boundary_ratio=0.95,  # with shift 7 and 3 steps: the first step high-noise, the other two low-noise
    )
    pipe.save_pretrained(path)
    return pipe


def save_lora(
    pipe: object,
    folder: Path,
    name: str,
    meta: dict[str, object],
    seed: int,
    component: str = "transformer",
    weight_name: str | None = None,
) -> None:
    """A random (non-zero) LoRA on a transformer's attention, saved with save_lora_weights.

    `component` "transformer_2" trains it on the low-noise expert; the file has the same layout
    either way (diffusers loads it into transformer_2 when asked to). `meta` None: no YAML.
    """
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    transformer = getattr(pipe, component)
    torch.manual_seed(seed)
    config = LoraConfig(
        r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False
    )
    transformer.add_adapter(config, adapter_name=name)
    layers = get_peft_model_state_dict(transformer, adapter_name=name)
    type(pipe).save_lora_weights(
        folder, transformer_lora_layers=layers, weight_name=weight_name or f"{name}.safetensors"
    )
    transformer.delete_adapters(name)
    if meta is not None:
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(meta), encoding="utf-8")


def build_model_root(root: Path) -> Path:
    """wan-i2v/, wan-vace/ and loras/ (a style LoRA and a step-distillation one, both for wan-i2v)."""
    root.mkdir(parents=True, exist_ok=True)
    i2v = build_i2v(root / "wan-i2v")
    build_vace(root / "wan-vace")
    loras = root / "loras"
    loras.mkdir(exist_ok=True)
    save_lora(i2v, loras, LORA_NAME, {"base": "wan-i2v", "trigger_words": LORA_TRIGGER, "scale": 1.0}, seed=1)
    save_lora(i2v, loras, FAST_LORA_NAME, {"base": "wan-i2v", "fast": True, "scale": 1.0}, seed=2)
    return root


def build_a14b_root(root: Path) -> Path:
    """wan-i2v/ as Wan2.2 A14B, and a LoRA whose low-noise expert has its own file."""
    root.mkdir(parents=True, exist_ok=True)
    pipe = build_a14b(root / "wan-i2v")
    loras = root / "loras"
    loras.mkdir(exist_ok=True)
    low_noise = f"{LORA_NAME}-low-noise.safetensors"
    meta = {"base": "wan-i2v", "trigger_words": LORA_TRIGGER, "low_noise_weights": low_noise}
    save_lora(pipe, loras, LORA_NAME, meta, seed=1)
    save_lora(pipe, loras, LORA_NAME, None, seed=2, component="transformer_2", weight_name=low_noise)
    return root


class ForwardCounter:
    """Counts forward passes of a module (a transformer: one per step, two with unbatched CFG)."""

    def __init__(self, module: torch.nn.Module):
        self.calls = 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, *_: Any) -> None:
        self.calls += 1

    def __enter__(self) -> ForwardCounter:
        return self

    def __exit__(self, *_: Any) -> None:
        self.handle.remove()


def video_frames(
    backend: Any, pair: SyntheticPair, conditioning: Conditioning, params: VideoParams
) -> np.ndarray:
    """All frames a backend makes for the pair's plan, as one (frames, H, W, 3) uint8 array."""
    plan = plan_kiss(pair.analyses, params)
    return np.stack(
        list(backend.frames(plan, pair.photos, pair.analyses, conditioning, params, lambda _: None))
    )


if __name__ == "__main__":
    import sys
    import time

    start = time.perf_counter()
    print(build_model_root(Path(sys.argv[1])), f"{time.perf_counter() - start:.1f}s")
