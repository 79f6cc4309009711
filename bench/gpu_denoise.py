"""Wan2.1-I2V-14B denoising step and VAE decode at full size, random bf16 weights: plain vs optimised.

    .venv/bin/python bench/gpu_denoise.py [--steps 3] [--size 832x480] [--frames 81] [--no-compile]
    .venv/bin/python bench/gpu_denoise.py --tiny          # CPU smoke check: tiny config, same code path

The cost of a step does not depend on the weight values, so the real architecture (diffusers'
WanTransformer3DModel with the Wan2.1-I2V-14B config: 40 layers, dim 5120, 40 heads, ffn 13824,
in_channels 36, image_dim 1280, text_dim 4096) is built directly on the GPU with random bf16
weights: nothing is downloaded. One run measures, on the same model and inputs:

- plain: diffusers defaults, classifier-free guidance as two forwards per step (as
  WanImageToVideoPipeline does), the default (native SDPA) attention backend;
- cfg-batched: the conditional and unconditional passes as one batch-2 forward, through the
  production hook (kiss_core.generation.backends.guidance, the `cfg_batched` setting);
- + attention: the fastest attention backend available here (FA3, flash-attn, cuDNN or SDPA-flash;
  never a hub-downloaded kernel);
- + LoRA unfused / fused: a rank-32 LoRA on every attention and feed-forward projection, loaded
  with diffusers' load_lora_adapter (the production loader's path), then fused and dropped
  (the `fuse_lora` setting);
- + compile: `compile_repeated_blocks` (torch.compile of the 40 repeated transformer blocks).

The first-block cache (`step_cache_threshold`) is not timed: how many steps it skips depends on
how trained weights change their residuals from step to step, which random weights cannot show; a
skipped step costs one block of the forty.

Seconds per step (with CFG), peak GPU memory per variant, model FLOPs per step (counted with
torch's FlopCounterMode on one forward) and MFU against the GPU's dense bf16 peak; then the Wan VAE
(its default config, random weights) decoding the 21x60x104 latent to 81 frames, float32 vs bf16 +
channels-last. Prints one table and writes bench/results/gpu_denoise.json (gpu_denoise.tiny.json
for --tiny). Anchors for this model on one H100: plain diffusers ~9.8 s/step, LightX2V ~5.2 s/step,
arithmetic floor ~4 s/step; target <= 5 s/step.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kiss_core.generation.backends.guidance import batched_guidance  # noqa: E402  (after the path)
from tests.support.wan_configs import WAN21_I2V_14B_480P_TRANSFORMER  # noqa: E402  (plain dicts)

# diffusers' Wan2.1-I2V-14B transformer (scripts/convert_wan_to_diffusers.py, "Wan-I2V-14B-480p").
WAN21_I2V_14B: dict[str, Any] = WAN21_I2V_14B_480P_TRANSFORMER
TINY: dict[str, Any] = {
    **WAN21_I2V_14B,
    "num_attention_heads": 2,
    "attention_head_dim": 12,
    "text_dim": 32,
    "ffn_dim": 32,
    "num_layers": 2,
    "image_dim": 4,
    "added_kv_proj_dim": 24,
    "rope_max_seq_len": 32,
}
TINY_VAE: dict[str, Any] = {
    "base_dim": 3,
    "z_dim": 16,
    "dim_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
    "temperal_downsample": [False, True, True],
}
TEXT_TOKENS = 512  # UMT5, padded to max_sequence_length
IMAGE_TOKENS = 257  # CLIP ViT-H/14 penultimate layer at 224 px
GUIDANCE = 5.0
# Dense bf16 tensor-core peak (no sparsity), FLOP/s.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "H800": 989e12, "GH200": 989e12, "A100": 312e12, "L40S": 362e12}
ATTENTION_BACKENDS = ("_flash_3", "flash", "_native_cudnn", "_native_flash")  # best first; no *_hub kernels


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16.items() if key in name), None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def timed(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def build_transformer(config: dict[str, Any], device: torch.device, dtype: torch.dtype) -> Any:
    """The architecture with random weights, created in place on the device in its dtype (no fp32 copy)."""
    from diffusers import WanTransformer3DModel, WanVACETransformer3DModel

    cls = WanVACETransformer3DModel if config.get("vace_layers") else WanTransformer3DModel
    default = torch.get_default_dtype()
    torch.manual_seed(0)
    try:
        torch.set_default_dtype(dtype)
        with torch.device(device):
            model = cls(**config)
    finally:
        torch.set_default_dtype(default)
    return model.eval().requires_grad_(False)


def step_inputs(
    config: dict[str, Any], latent: tuple[int, int, int], device: torch.device, dtype: torch.dtype
):
    """Latents + condition (36 channels), UMT5 text and CLIP image embeddings, for one video."""
    frames, height, width = latent
    generator = torch.Generator(device="cpu").manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device, dtype)

    return {
        "hidden_states": randn(1, config["in_channels"], frames, height, width),
        "text": randn(1, TEXT_TOKENS, config["text_dim"]),
        "negative": randn(1, TEXT_TOKENS, config["text_dim"]),
        "image": randn(1, IMAGE_TOKENS, config["image_dim"]),
        "timestep": torch.tensor([700.0], device=device),
    }


def plain_step(model: Any, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """WanImageToVideoPipeline's step: conditional and unconditional forwards, one after the other."""
    cond = model(
        x["hidden_states"],
        x["timestep"],
        x["text"],
        encoder_hidden_states_image=x["image"],
        return_dict=False,
    )[0]
    uncond = model(
        x["hidden_states"],
        x["timestep"],
        x["negative"],
        encoder_hidden_states_image=x["image"],
        return_dict=False,
    )[0]
    return uncond + GUIDANCE * (cond - uncond)


def batched_step(model: Any, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """The same step as one batch-2 forward (the production hook): weights read once, twice the rows."""
    with batched_guidance([model], x["negative"], GUIDANCE):
        return model(
            hidden_states=x["hidden_states"],
            timestep=x["timestep"],
            encoder_hidden_states=x["text"],
            encoder_hidden_states_image=x["image"],
            return_dict=False,
        )[0]


LORA_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k")
LORA_TARGETS += ("attn2.to_v", "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2")


def add_lora(model: Any, rank: int) -> int:
    """A random rank-`rank` LoRA on every attention and feed-forward projection, loaded as production does."""
    state: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    generator = torch.Generator(device="cpu").manual_seed(1)
    for index in range(len(model.blocks)):
        for target in LORA_TARGETS:
            linear = modules[f"blocks.{index}.{target}"]
            key = f"blocks.{index}.{target}"
            down = torch.randn(rank, linear.in_features, generator=generator) / linear.in_features**0.5
            state[f"{key}.lora_A.weight"] = down.to(model.dtype)
            state[f"{key}.lora_B.weight"] = (
                torch.randn(linear.out_features, rank, generator=generator) * 1e-3
            ).to(model.dtype)
    model.load_lora_adapter(state, prefix=None, adapter_name="bench")
    return sum(t.numel() for t in state.values())


def count_flops(model: Any, x: dict[str, torch.Tensor]) -> int:
    """FLOPs of one conditional forward (matmuls, attention), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model(
            x["hidden_states"],
            x["timestep"],
            x["text"],
            encoder_hidden_states_image=x["image"],
            return_dict=False,
        )
    return int(counter.get_total_flops())


def best_attention_backend(device: torch.device) -> str:
    """The first backend of ATTENTION_BACKENDS that runs here (each is tried on a small attention)."""
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    if device.type != "cuda":
        return "native"
    q = torch.randn(2, 256, 8, 128, device=device, dtype=torch.bfloat16)
    for name in ATTENTION_BACKENDS:
        try:
            dispatch_attention_fn(q, q, q, backend=name)
            torch.cuda.synchronize(device)
            return name
        except Exception as exc:  # a missing package or an unsupported GPU: try the next
            print(
                f"attention backend {name}: unavailable ({type(exc).__name__}: {str(exc)[:80]})",
                file=sys.stderr,
            )
    return "native"


def bench_vae(
    config: dict[str, Any], latent: tuple[int, int, int], device: torch.device, repeats: int
) -> list[dict[str, Any]]:
    """Decode one video's latent: float32 (diffusers' Wan default) vs bf16 + channels-last."""
    from diffusers import AutoencoderKLWan

    rows = []
    frames, height, width = latent
    for name, dtype, channels_last in (
        ("vae fp32", torch.float32, False),
        ("vae bf16+cl", torch.bfloat16, True),
    ):
        torch.manual_seed(0)
        with torch.device(device):
            vae = AutoencoderKLWan(**config).to(dtype).eval().requires_grad_(False)
        z = torch.randn(1, vae.config.z_dim, frames, height, width, device=device, dtype=dtype)
        if channels_last:  # NDHWC for the 3D convolutions (cuDNN's preferred layout)
            for module in vae.modules():
                if isinstance(module, torch.nn.Conv3d):
                    module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last_3d)
            z = z.contiguous(memory_format=torch.channels_last_3d)
        reset_peak(device)
        with torch.inference_mode():
            seconds = timed(lambda vae=vae, z=z: vae.decode(z, return_dict=False)[0], device, 1, repeats)
        rows.append(
            {
                "variant": name,
                "s": round(statistics.median(seconds), 3),
                "runs": seconds,
                "peak_gib": peak_gib(device),
            }
        )
        del vae, z
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny config on CPU (smoke check of this script)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (after warm-up)")
    parser.add_argument("--size", default=None, help="WIDTHxHEIGHT (default 832x480; 64x64 with --tiny)")
    parser.add_argument(
        "--frames", type=int, default=None, help="video frames, 4k+1 (default 81; 9 with --tiny)"
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    parser.add_argument("--no-vae", action="store_true", help="skip the VAE decode")
    parser.add_argument("--lora-rank", type=int, default=32, help="rank of the LoRA variants")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if not args.tiny and device.type != "cuda":
        sys.exit("no CUDA GPU here: run with --tiny for the CPU smoke check")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    config = TINY if args.tiny else WAN21_I2V_14B
    width, height = (int(v) for v in (args.size or ("64x64" if args.tiny else "832x480")).split("x"))
    frames = args.frames or (9 if args.tiny else 81)
    if (frames - 1) % 4 or width % 16 or height % 16:
        sys.exit(f"frames must be 4k+1 and the size divisible by 16, got {frames} and {width}x{height}")
    latent = ((frames - 1) // 4 + 1, height // 8, width // 8)
    tokens = latent[0] * (latent[1] // 2) * (latent[2] // 2)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    import diffusers

    model = build_transformer(config, device, dtype)
    params = sum(p.numel() for p in model.parameters())
    x = step_inputs(config, latent, device, dtype)
    with torch.inference_mode():
        flops_forward = count_flops(model, x)
    flops_step = 2 * flops_forward  # CFG: conditional + unconditional
    peak = peak_flops(device)

    rows: list[dict[str, Any]] = []

    def measure(name: str, step: Callable[[Any, dict[str, torch.Tensor]], torch.Tensor], warmup: int) -> None:
        reset_peak(device)
        with torch.inference_mode():
            seconds = timed(lambda: step(model, x), device, warmup, args.steps)
        median = statistics.median(seconds)
        rows.append(
            {
                "variant": name,
                "s_per_step": round(median, 4),
                "runs": [round(s, 4) for s in seconds],
                "peak_gib": peak_gib(device),
                "mfu": round(flops_step / median / peak, 3) if peak else None,
            }
        )
        print(f"{name}: {median:.3f} s/step", file=sys.stderr)

    measure("plain (2 forwards, native SDPA)", plain_step, warmup=1)
    measure("cfg-batched", batched_step, warmup=1)
    backend = best_attention_backend(device)
    model.set_attention_backend(backend)
    measure(f"cfg-batched + attention {backend}", batched_step, warmup=1)
    lora_params = add_lora(model, args.lora_rank)
    measure(f"cfg-batched + {backend} + LoRA r{args.lora_rank} unfused", batched_step, warmup=1)
    start = time.perf_counter()
    model.fuse_lora(lora_scale=1.0)
    model.unload_lora()  # the fused weights stay, the LoRA layers go (what fuse_lora does at start)
    synchronize(device)
    fuse_s = time.perf_counter() - start
    measure(f"cfg-batched + {backend} + LoRA r{args.lora_rank} fused", batched_step, warmup=1)
    if not args.no_compile:
        model.compile_repeated_blocks(fullgraph=True)
        measure(f"cfg-batched + {backend} + compile", batched_step, warmup=2)
    model = x = None  # free the transformer's memory before the VAE runs
    if device.type == "cuda":
        torch.cuda.empty_cache()
    vae_rows = (
        []
        if args.no_vae
        else bench_vae(TINY_VAE if args.tiny else {}, latent, device, max(1, args.steps - 1))
    )

    plain = rows[0]["s_per_step"]
    for row in rows:
        row["speedup"] = round(plain / row["s_per_step"], 2)
    result = {
        "benchmark": "gpu_denoise",
        "mode": "tiny-cpu-smoke" if args.tiny else "full",
        "model": "Wan2.1-I2V-14B transformer (random weights)" if not args.tiny else "tiny Wan I2V config",
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "dtype": str(dtype).removeprefix("torch."),
        "size": f"{width}x{height}",
        "frames": frames,
        "latent": list(latent),
        "tokens": tokens,
        "parameters": params,
        "flops_per_forward": flops_forward,
        "flops_per_step_cfg": flops_step,
        "peak_flops": peak,
        "floor_s_per_step": round(flops_step / peak, 3) if peak else None,
        "steps_timed": args.steps,
        "lora": {"rank": args.lora_rank, "parameters": lora_params, "fuse_s": round(fuse_s, 3)},
        "denoise": rows,
        "vae_decode": vae_rows,
    }
    out = args.out or ROOT / "bench" / "results" / (
        "gpu_denoise.tiny.json" if args.tiny else "gpu_denoise.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"\n{result['model']} on {result['device']}: {width}x{height}, {frames} frames, {tokens} tokens,"
        f" {params / 1e9:.2f} B params, {flops_step / 1e12:.1f} TFLOP/step (CFG)"
    )
    print(f"{'variant':<44} {'s/step':>9} {'speedup':>8} {'peak GiB':>9} {'MFU':>6}")
    for row in rows:
        mfu = f"{row['mfu']:.2f}" if row["mfu"] is not None else "-"
        gib = f"{row['peak_gib']:.1f}" if row["peak_gib"] is not None else "-"
        print(f"{row['variant']:<44} {row['s_per_step']:>9.3f} {row['speedup']:>7.2f}x {gib:>9} {mfu:>6}")
    for row in vae_rows:
        gib = f"{row['peak_gib']:.1f}" if row["peak_gib"] is not None else "-"
        print(f"{row['variant'] + ' decode (s)':<44} {row['s']:>9.3f} {'':>8} {gib:>9} {'-':>6}")
    print(f"LoRA r{args.lora_rank}: {lora_params / 1e6:.1f} M params, fused at start in {fuse_s:.2f} s")
    if result["floor_s_per_step"]:
        print(f"arithmetic floor at peak: {result['floor_s_per_step']} s/step")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
