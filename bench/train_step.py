"""The LoRA training step at full size on one GPU: step time and peak memory; and the computed memory table.

    .venv/bin/python bench/train_step.py memory                 # per-GPU memory from the 14B configs (no GPU)
    .venv/bin/python bench/train_step.py step                   # on a CUDA GPU: Wan2.1 I2V 14B, 33 x 832x480
    .venv/bin/python bench/train_step.py step --base wan-vace --frames 81 --steps 10
    .venv/bin/python bench/train_step.py step --tiny            # the tiny config on CPU: checks the script

`step` builds the transformer from the real config with random weights straight on the GPU in bfloat16
(no checkpoint download: step time does not depend on the weights' values), adds the LoRA
(kiss_core.training.lora), turns on gradient checkpointing, and times `--steps` optimizer steps of
kiss_core.training's own step (flow_matching_loss under bf16 autocast, backward, clipping, AdamW) on a
random batch of the clip's shape, after `--warmup` steps. Prints one table row and writes
bench/results/train_step.json (train_step.tiny.json with --tiny) with the peak CUDA memory beside the
computed estimate. `memory` prints the table docs/training.md shows and writes train_memory.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kiss_core.training.config import DEFAULT_TARGETS, TrainConfig  # noqa: E402
from kiss_core.training.memory import as_dict, format_memory_table, training_memory  # noqa: E402
from tests.support.wan_configs import CHECKPOINTS  # noqa: E402

BASES = {"wan-i2v": "Wan2.1-I2V-14B-480P", "wan-vace": "Wan2.1-VACE-14B"}
RESULTS = ROOT / "bench" / "results"


def memory(_: argparse.Namespace) -> int:
    rows = [
        training_memory(
            name, CHECKPOINTS[name]["transformer"], DEFAULT_TARGETS, 32, frames, 832, 480, 1, ckpt
        )
        for name in BASES.values()
        for frames, ckpt in ((33, True), (81, True), (81, False))
    ]
    print(format_memory_table(rows))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "train_memory.json"
    out.write_text(
        json.dumps({"benchmark": "train_memory", "rows": [as_dict(r) for r in rows]}, indent=2) + "\n"
    )
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


def _tiny_config() -> dict[str, Any]:
    from tests.support.tiny_wan import TINY_TRANSFORMER

    return {**TINY_TRANSFORMER, "in_channels": 36, "num_layers": 2, "image_dim": 4, "added_kv_proj_dim": 24}


def _batch(config: dict[str, Any], frames: int, width: int, height: int, device: Any, dtype: Any) -> Any:
    import torch

    from kiss_core.training.objective import Batch

    t, h, w = (frames - 1) // 4 + 1, height // 8, width // 8
    g = torch.Generator().manual_seed(0)

    def randn(*shape: int, to: Any = dtype) -> Any:
        return torch.randn(*shape, generator=g).to(device=device, dtype=to)

    image = config.get("image_dim")
    return Batch(
        latents=randn(1, 16, t, h, w, to=torch.float32),
        prompt_embeds=randn(1, 512, int(config["text_dim"])),
        mask=(torch.rand(1, t, h // 2, w // 2, generator=g) < 0.1).float().to(device),
        condition=randn(1, 20, t, h, w) if int(config["in_channels"]) == 36 else None,
        image_embeds=randn(1, 257, int(image)) if image else None,
        control=randn(1, int(config["vace_in_channels"]), t, h, w) if config.get("vace_layers") else None,
    )


def step(args: argparse.Namespace) -> int:
    import torch
    from diffusers import WanTransformer3DModel, WanVACETransformer3DModel

    from kiss_core.training.lora import add_lora
    from kiss_core.training.objective import flow_matching_loss, training_scheduler

    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        print(
            "no CUDA GPU here: `step` measures the full-size step on a GPU (use --tiny to check the script)"
        )
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    name = "tiny" if args.tiny else BASES[args.base]
    config = _tiny_config() if args.tiny else dict(CHECKPOINTS[name]["transformer"])
    cls = WanVACETransformer3DModel if config.get("vace_layers") else WanTransformer3DModel
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # random weights built where they run, in the dtype they run in
    try:
        with device:
            model = cls.from_config(config)
    finally:
        torch.set_default_dtype(default)
    width, height = (int(v) for v in args.size.split("x"))
    train = TrainConfig(rank=args.rank, alpha=args.rank, width=width, height=height, num_frames=args.frames)
    params = add_lora(model, train)
    if not args.no_checkpointing:
        model.enable_gradient_checkpointing()
    model.train()
    optimizer = torch.optim.AdamW(params, lr=train.lr)
    scheduler = training_scheduler({"shift": 3.0})
    batch = _batch(config, args.frames, width, height, device, dtype)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)
    times = []
    for index in range(args.warmup + args.steps):
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        with autocast:
            out = flow_matching_loss(
                model, scheduler, batch, train, torch.Generator().manual_seed(index), dtype
            )
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, train.max_grad_norm)
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        if index >= args.warmup:
            times.append(time.perf_counter() - started)
    estimate = training_memory(
        name, config, train.targets, args.rank, args.frames, width, height, 1, not args.no_checkpointing
    )
    row = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "base": name,
        "frames": args.frames,
        "size": args.size,
        "rank": args.rank,
        "gradient_checkpointing": not args.no_checkpointing,
        "dtype": str(dtype).removeprefix("torch."),
        "steps": args.steps,
        "step_s_mean": round(statistics.mean(times), 4),
        "step_s_median": round(statistics.median(times), 4),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "estimate_gib": estimate.total_gib,
    }
    print("| " + " | ".join(row) + " |")
    print("| " + " | ".join(str(v) for v in row.values()) + " |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("train_step.tiny.json" if args.tiny else "train_step.json")
    out.write_text(json.dumps({"benchmark": "train_step", **row}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("memory", help="the computed per-GPU memory table").set_defaults(func=memory)
    p = sub.add_parser("step", help="time the training step (a CUDA GPU; --tiny on CPU)")
    p.add_argument("--base", choices=sorted(BASES), default="wan-i2v")
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--size", default="832x480")
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-checkpointing", action="store_true")
    p.add_argument("--tiny", action="store_true", help="the tiny test transformer (CPU is fine)")
    p.set_defaults(func=step)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
