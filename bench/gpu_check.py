"""The one device check: what only a GPU shows about the diffusion path, in <= 8 minutes on one H100/H200.

    python bench/gpu_check.py          # on the GPU machine (torch + diffusers; random weights, no downloads)
    python bench/gpu_check.py --tiny   # CPU smoke check: tiny configs, the same code (timings not claimed)

Four parts, each a row of one table, each written to bench/results/gpu_check.json (gpu_check.tiny.json
for --tiny) as soon as it finishes, so a run cut short still leaves what it measured:

1. The full-size Wan2.1-I2V-14B transformer at 832x480, 81 frames, with CFG: plain diffusers (two forwards
   per step, native SDPA) against the service's levers added one by one (batched CFG through
   kiss_core.generation.backends.guidance, the best local attention backend, compile_repeated_blocks).
   Seconds per step, peak GiB, and every variant's output against plain's (relative L2 error).
2. The tiny model root through the production classes (IdentityEncoder, WanI2VFrames / WanVACEFrames) on
   the device in bfloat16 with every lever on: the dtype and device handling of the real code path.
   Needs the service's stack (pydantic, dlib, ...); skipped with a message where it is not installed.
3. Wan2.1-I2V-14B and Wan2.1-VACE-14B transformers resident together, one CFG step each at the
   default frame count: peak GiB (what two backends on one replica need).
4. Wan2.1-VACE-14B under diffusers' first-block cache at full size: a step the cache skips against the
   same step computed in full (the VACE hints are added outside the cached blocks).

Builds on bench/gpu_denoise.py (model construction, inputs, the plain and batched steps, attention
probing) and the real configs in tests/support/wan_configs.py.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gpu_denoise import (  # noqa: E402  (after the path)
    GUIDANCE,
    TEXT_TOKENS,
    TINY,
    batched_step,
    best_attention_backend,
    build_transformer,
    peak_gib,
    plain_step,
    reset_peak,
    step_inputs,
    synchronize,
    timed,
)

from tests.support.wan_configs import (  # noqa: E402
    WAN21_I2V_14B_480P_TRANSFORMER,
    WAN21_VACE_14B_TRANSFORMER,
)

TINY_VACE: dict[str, Any] = {
    **{k: v for k, v in TINY.items() if k not in ("image_dim", "added_kv_proj_dim")},
    "in_channels": 16,
    "num_layers": 3,
    "vace_layers": [0, 2],
    "vace_in_channels": 96,
}
CACHE_THRESHOLD = 0.05


def relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    """||output - reference|| / ||reference||, in float32."""
    difference = (output.float() - reference.float()).norm()
    return float(difference / reference.float().norm().clamp_min(1e-12))


def free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def vace_inputs(
    config: dict[str, Any], latent: tuple[int, int, int], device: torch.device, dtype: torch.dtype
):
    """Latents, UMT5 embeddings and the VACE control latents (96 channels) with one scale per VACE layer."""
    frames, height, width = latent
    generator = torch.Generator(device="cpu").manual_seed(2)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device, dtype)

    return {
        "hidden_states": randn(1, config["in_channels"], frames, height, width),
        "control_hidden_states": randn(1, config["vace_in_channels"], frames, height, width),
        "control_hidden_states_scale": torch.ones(len(config["vace_layers"]), device=device, dtype=dtype),
        "encoder_hidden_states": randn(1, TEXT_TOKENS, config["text_dim"]),
        "negative": randn(1, TEXT_TOKENS, config["text_dim"]),
        "timestep": torch.tensor([700.0], device=device),
    }


def vace_forward(model: Any, x: dict[str, torch.Tensor]) -> torch.Tensor:
    inputs = {k: v for k, v in x.items() if k != "negative"}
    return model(**inputs, return_dict=False)[0]


class Report:
    """Rows of the table, rewritten to the JSON file after each one."""

    def __init__(self, path: Path, header: dict[str, Any]):
        self.path = path
        self.result: dict[str, Any] = {**header, "rows": []}
        path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, row: dict[str, Any]) -> None:
        self.result["rows"].append(row)
        self.path.write_text(json.dumps(self.result, indent=2) + "\n")
        shown = {k: v for k, v in row.items() if k not in ("runs", "traceback")}
        print(json.dumps(shown), file=sys.stderr)

    def run(self, part: str, fn: Callable[[], None]) -> None:
        """Run one part; an error becomes a row (the other parts still run) and fails the check."""
        try:
            fn()
        except Exception as exc:  # a device check reports every part it can
            self.add({"part": part, "variant": "error", "error": f"{type(exc).__name__}: {exc}"[:500]})
            traceback.print_exc()
            self.result["failed"] = True
            self.path.write_text(json.dumps(self.result, indent=2) + "\n")


def part_speed(report: Report, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
    """(1) Plain diffusers vs the service's levers, one by one, on the I2V transformer."""
    config = TINY if args.tiny else WAN21_I2V_14B_480P_TRANSFORMER
    model = build_transformer(config, device, dtype)
    x = step_inputs(config, args.latent, device, dtype)
    with torch.inference_mode():
        reference = plain_step(model, x)
    synchronize(device)
    plain_s: float | None = None

    def measure(name: str, step: Callable[[Any, dict[str, torch.Tensor]], torch.Tensor], warmup: int) -> None:
        nonlocal plain_s
        reset_peak(device)
        with torch.inference_mode():
            seconds = timed(lambda: step(model, x), device, warmup, args.steps)
            error = relative_error(step(model, x), reference)
        median = statistics.median(seconds)
        plain_s = plain_s or median
        report.add(
            {
                "part": "1 speed",
                "variant": name,
                "s_per_step": round(median, 4),
                "speedup": round(plain_s / median, 2),
                "peak_gib": peak_gib(device),
                "rel_error_vs_plain": round(error, 5),
                "allclose": error <= args.tolerance,
                "runs": [round(s, 4) for s in seconds],
            }
        )
        if error > args.tolerance:
            report.result["failed"] = True

    measure("plain diffusers (2 forwards, native SDPA)", plain_step, warmup=1)
    measure("+ cfg-batched", batched_step, warmup=1)
    backend = best_attention_backend(device)
    model.set_attention_backend(backend)
    measure(f"+ cfg-batched + attention {backend}", batched_step, warmup=1)
    if args.compile:
        model.compile_repeated_blocks(fullgraph=True)
        measure(f"+ cfg-batched + {backend} + compile", batched_step, warmup=2)
    report.result["attention_backend"] = backend


def part_production(report: Report, args: argparse.Namespace, device: torch.device) -> None:
    """(2) The tiny model root through the production classes, bf16, every lever on."""
    try:
        from kiss_core.generation.conditioning import IdentityEncoder
        from kiss_core.generation.gpu import cap_gpu_memory
        from kiss_core.jobs.stages import load_backends, load_conditioners
        from kiss_core.schemas import VideoParams
        from kiss_core.settings import Settings
        from tests.support.studio import SyntheticStudio
        from tests.support.tiny_wan import LORA_NAME, build_model_root, video_frames
    except ImportError as exc:
        message = f"skipped: the service's stack is not installed here ({exc})"
        print(f"part 2 (production classes) {message}", file=sys.stderr)
        report.add({"part": "2 production", "variant": "skipped", "note": message})
        return
    attention = report.result.get("attention_backend", "native")
    with tempfile.TemporaryDirectory() as tmp:
        root = build_model_root(Path(tmp) / "models")
        for backend in ("wan-i2v", "wan-vace"):
            levers: dict[str, Any] = {
                "cfg_batched": True,
                "attention_backend": attention,
                "vae_tiling": True,
                "compile_blocks": args.compile,
                # Compiling needs a fixed LoRA set: the default LoRA fused (the tiny one is for wan-i2v).
                "fuse_lora": backend == "wan-i2v",
                # No first-block cache for VACE: its hints are added outside the cached blocks.
                "step_cache_threshold": CACHE_THRESHOLD if backend == "wan-i2v" else None,
            }
            generator = {
                "model_root": str(root),
                "enabled": [backend],
                "backend": backend,
                "device": device.type,
                "dtype": "bfloat16",
                "steps": 3,
                "lora": LORA_NAME if backend == "wan-i2v" else None,
                # Both replicas' memory caps, as the single-gpu profile sets them (nearly all of it here):
                # torch refused the bare "cuda" device they were first given (e31a4a5, 47a5847).
                "gpu_memory_fraction": 0.95,
                "encoder_memory_fraction": 0.95,
                **levers,
            }
            settings = Settings(storage={"backend": "local", "local_root": tmp}, generator=generator)
            capped = cap_gpu_memory(settings.generator.gpu_memory_fraction, settings.generator.device)
            studio = SyntheticStudio(settings, tmp)
            pair = studio.pair(0, 1)
            encoder = IdentityEncoder(settings.faces, settings.generator, load_conditioners(settings))
            frames_source = load_backends(settings)[backend]
            params = VideoParams(backend=backend, style="peck", seconds=1.0, fps=24, size="160x128")
            conditioning = encoder.encode(pair.photos, pair.analyses, params)
            start = time.perf_counter()
            frames = video_frames(frames_source, pair, conditioning, params)
            synchronize(device)
            transformer = frames_source.pipe.transformer
            report.add(
                {
                    "part": "2 production",
                    "variant": f"{backend} bf16 on {device.type}, levers: "
                    + ", ".join(k for k, v in levers.items() if v not in (None, False)),
                    "s_video": round(time.perf_counter() - start, 3),
                    "frames": int(frames.shape[0]),
                    "transformer_dtype": str(transformer.dtype).removeprefix("torch."),
                    "vae_dtype": str(frames_source.pipe.vae.dtype).removeprefix("torch."),
                    "peak_gib": peak_gib(device),
                    "ok": frames.shape == (24, 128, 160, 3) and bool(frames.std() > 0),
                    "memory_capped": capped,
                }
            )
            del frames_source, encoder
            if capped:  # the later parts need the whole device
                torch.cuda.set_per_process_memory_fraction(1.0, device.index)
            free(device)


def part_both_and_cache(
    report: Report, args: argparse.Namespace, device: torch.device, dtype: torch.dtype
) -> None:
    """(3) I2V and VACE transformers resident together, a CFG step each; (4) VACE under first-block cache."""
    from diffusers import FirstBlockCacheConfig

    i2v_config = TINY if args.tiny else WAN21_I2V_14B_480P_TRANSFORMER
    vace_config = TINY_VACE if args.tiny else WAN21_VACE_14B_TRANSFORMER
    reset_peak(device)
    i2v = build_transformer(i2v_config, device, dtype)
    vace = build_transformer(vace_config, device, dtype)
    x = step_inputs(i2v_config, args.latent, device, dtype)
    v = vace_inputs(vace_config, args.latent, device, dtype)
    start = time.perf_counter()
    with torch.inference_mode():
        batched_step(i2v, x)
        vace_forward(vace, v)
        vace_forward(vace, {**v, "encoder_hidden_states": v["negative"]})
    synchronize(device)
    report.add(
        {
            "part": "3 two backends",
            "variant": f"I2V + VACE resident, one CFG step each, {args.frames} frames",
            "s": round(time.perf_counter() - start, 3),
            "parameters": sum(p.numel() for m in (i2v, vace) for p in m.parameters()),
            "peak_gib": peak_gib(device),
        }
    )
    del i2v, x
    free(device)

    with torch.inference_mode():
        reference = vace_forward(vace, v)
        vace.enable_cache(FirstBlockCacheConfig(threshold=CACHE_THRESHOLD))
        with vace.cache_context("cond"):  # what the Wan pipelines wrap each denoiser call in
            vace_forward(vace, v)  # computed in full: the cache's first step
            synchronize(device)
            start = time.perf_counter()
            skipped = vace_forward(vace, v)  # same input: the first block changed by 0, the rest is skipped
            synchronize(device)
            seconds = time.perf_counter() - start
    error = relative_error(skipped, reference)
    report.add(
        {
            "part": "4 VACE first-block cache",
            "variant": f"skipped step vs full step, threshold {CACHE_THRESHOLD}",
            "s_skipped_step": round(seconds, 3),
            "rel_error_vs_full": round(error, 5),
            "allclose": error <= args.tolerance,
            "peak_gib": peak_gib(device),
        }
    )
    vace.disable_cache()
    del vace, v
    free(device)


def print_table(result: dict[str, Any]) -> None:
    print(
        f"\n{result['benchmark']} ({result['mode']}) on {result['device']}: {result['size']},"
        f" {result['frames']} frames, {result['tokens']} tokens, {result['dtype']}, guidance {GUIDANCE}"
    )
    print(f"{'part':<26} {'variant':<58} {'seconds':>9} {'peak GiB':>9} {'rel err':>9} {'ok':>5}")
    for row in result["rows"]:
        seconds = next((row[k] for k in ("s_per_step", "s_video", "s", "s_skipped_step") if k in row), None)
        error = row.get("rel_error_vs_plain", row.get("rel_error_vs_full"))
        ok = row.get("allclose", row.get("ok", "-" if "error" not in row else False))
        print(
            f"{row['part']:<26} {row['variant'][:58]:<58} {'-' if seconds is None else f'{seconds:.3f}':>9}"
            f" {'-' if row.get('peak_gib') is None else row['peak_gib']:>9}"
            f" {'-' if error is None else f'{error:.2e}':>9} {ok!s:>5}"
        )
        if "error" in row:
            print(f"    {row['error']}")
        if "note" in row:
            print(f"    {row['note']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny configs on CPU (smoke check)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per variant of part 1")
    parser.add_argument("--frames", type=int, default=None, help="frames, 4k+1 (81; 9 with --tiny)")
    parser.add_argument("--size", default=None, help="WIDTHxHEIGHT (default 832x480; 64x64 with --tiny)")
    parser.add_argument(
        "--no-compile", dest="compile", action="store_false", help="no compile_repeated_blocks"
    )
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: 1,2,3 (3 includes 4)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if not args.tiny and device.type != "cuda":
        sys.exit("no CUDA GPU here: run with --tiny for the CPU smoke check")
    if args.tiny:
        args.compile = False  # inductor's C++ build on CPU takes minutes; the GPU run compiles
    dtype = torch.float32 if args.tiny else torch.bfloat16
    args.tolerance = 1e-4 if args.tiny else 3e-2  # bf16 over 40 blocks vs float32 over 2
    width, height = (int(v) for v in (args.size or ("64x64" if args.tiny else "832x480")).split("x"))
    args.frames = args.frames or (9 if args.tiny else 81)
    if (args.frames - 1) % 4 or width % 16 or height % 16:
        sys.exit(f"frames must be 4k+1 and the size divisible by 16, got {args.frames} and {width}x{height}")
    args.latent = ((args.frames - 1) // 4 + 1, height // 8, width // 8)
    tokens = args.latent[0] * (args.latent[1] // 2) * (args.latent[2] // 2)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    import diffusers

    out = args.out or ROOT / "bench" / "results" / ("gpu_check.tiny.json" if args.tiny else "gpu_check.json")
    report = Report(
        out,
        {
            "benchmark": "gpu_check",
            "mode": "tiny-cpu-smoke (timings not claimed)" if args.tiny else "full",
            "date": time.strftime("%Y-%m-%d"),
            "device": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or "cpu",
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "dtype": str(dtype).removeprefix("torch."),
            "size": f"{width}x{height}",
            "frames": args.frames,
            "tokens": tokens,
            "tolerance": args.tolerance,
        },
    )
    started = time.perf_counter()
    skip = set(filter(None, args.skip.split(",")))
    if "1" not in skip:
        report.run("1 speed", lambda: part_speed(report, args, device, dtype))
        free(device)
    if "2" not in skip:
        report.run("2 production", lambda: part_production(report, args, device))
    if "3" not in skip:
        report.run("3 two backends", lambda: part_both_and_cache(report, args, device, dtype))
    report.result["total_s"] = round(time.perf_counter() - started, 1)
    report.path.write_text(json.dumps(report.result, indent=2) + "\n")
    print_table(report.result)
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    print(f"total {report.result['total_s']} s; wrote {shown}")
    if report.result.get("failed"):
        sys.exit(1)


if __name__ == "__main__":
    main()
