"""One worker's training loop, without Ray: the driver injects DDP wrapping, reporting and the resume point.

Every worker loads the frozen transformer (the only model a step runs), adds the LoRA and trains on its
share of each global batch. Which clips, noise and timesteps a step uses depend only on (seed, step,
rank), so a run resumed from a checkpoint draws exactly what the uninterrupted run would have. Rank 0
writes checkpoints (the optimizer state and the LoRA in the service's layout), TensorBoard scalars and
the validation renders; every rank calls `report` at the same steps (Ray Train's report is a barrier).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kiss_core.generation.backends.weights import DiffusionBackend
from kiss_core.training.config import TrainConfig
from kiss_core.training.lora import add_lora, export_lora, load_lora_state, lora_state
from kiss_core.training.objective import flow_matching_loss, stack_samples, training_scheduler
from kiss_core.training.plan import TrainPlan
from kiss_core.training.precompute import SampleKeys, read_sample

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"
LORA_SUBDIR = "loras"
Report = Callable[[dict[str, float], Path | None], None]


@dataclass
class WorkerContext:
    """The worker's place in the run, and the hooks a driver (Ray Train) fills in."""

    scratch: Path  # rank 0 writes checkpoint directories here before reporting them
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    wrap: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m  # e.g. DDP
    report: Report = lambda metrics, checkpoint: None
    resume: Path | None = None  # a checkpoint directory to continue from


def training_dtype(config: TrainConfig, device: torch.device) -> torch.dtype:
    """bfloat16 for the frozen base on a GPU when `bf16`; float32 on CPU (slow bf16 matmuls there)."""
    return torch.bfloat16 if config.bf16 and device.type == "cuda" else torch.float32


def load_transformer(base: DiffusionBackend, base_dir: Path, dtype: torch.dtype) -> Any:
    from diffusers import WanTransformer3DModel, WanVACETransformer3DModel

    cls = WanVACETransformer3DModel if base == "wan-vace" else WanTransformer3DModel
    return cls.from_pretrained(base_dir / "transformer", torch_dtype=dtype)


def step_indices(count: int, step: int, seed: int, batch: int, world: int, rank: int) -> list[int]:
    """The sample indices of `rank`'s share of the global batch at `step` (a fresh shuffle per epoch)."""
    global_batch = batch * world
    picks = []
    for position in range(step * global_batch + rank * batch, step * global_batch + (rank + 1) * batch):
        epoch, offset = divmod(position, count)
        order = np.random.default_rng([seed, epoch]).permutation(count)
        picks.append(int(order[offset]))
    return picks


class SampleCache:
    """The precomputed records a worker has read, newest kept (a small LRU in front of the store)."""

    def __init__(self, plan: TrainPlan, size: int = 256):
        self.store = plan.data.store(plan.config)
        self.size = size
        self.records: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()

    def get(self, keys: SampleKeys) -> dict[str, torch.Tensor]:
        key = keys.clip + "|" + keys.text
        if key not in self.records:
            self.records[key] = read_sample(self.store, keys)
            while len(self.records) > self.size:
                self.records.popitem(last=False)
        self.records.move_to_end(key)
        return self.records[key]


def _mean_across(value: float, device: torch.device) -> float:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    tensor = torch.tensor([value], device=device, dtype=torch.float64)
    torch.distributed.all_reduce(tensor)
    return float(tensor.item()) / torch.distributed.get_world_size()


def write_checkpoint(
    folder: Path, transformer: Any, plan: TrainPlan, step: int, optimizer: Any, lr: Any
) -> Path:
    """state.pt (LoRA, optimizer, schedule, step) and the LoRA as the service loads it (loras/)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "step": step,
        "lora": lora_state(transformer),
        "optimizer": optimizer.state_dict(),
        "lr": lr.state_dict(),
    }
    torch.save(state, folder / STATE_FILE)
    export_lora(transformer, plan.config, plan.base, folder / LORA_SUBDIR)
    (folder / "step.json").write_text(json.dumps({"step": step}), encoding="utf-8")
    return folder


def train_worker(plan: TrainPlan, ctx: WorkerContext) -> dict[str, float]:
    """Train from the start or from `ctx.resume` up to `config.steps`; the last reported metrics."""
    config = plan.config
    dtype = training_dtype(config, ctx.device)
    transformer = load_transformer(plan.base, plan.base_dir, dtype)
    params = add_lora(transformer, config)
    if config.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.to(ctx.device)
    transformer.train()
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    warmup = config.warmup_steps
    lr = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    step = 0
    if ctx.resume is not None:
        state = torch.load(ctx.resume / STATE_FILE, map_location="cpu", weights_only=False)
        load_lora_state(transformer, state["lora"])
        optimizer.load_state_dict(state["optimizer"])
        lr.load_state_dict(state["lr"])
        step = int(state["step"])
        logger.info("rank %d resumes at step %d from %s", ctx.rank, step, ctx.resume)
    model = ctx.wrap(transformer)
    scheduler = training_scheduler(
        json.loads((plan.base_dir / "scheduler" / "scheduler_config.json").read_text())
    )
    samples = SampleCache(plan)
    writer = _writer(plan, ctx, step)
    validator: Any = None
    metrics: dict[str, float] = {"step": float(step), "resumed_from": float(step)}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dtype == torch.bfloat16 else _no_autocast()
    count = len(plan.data.samples)
    while step < config.steps:
        started = time.perf_counter()
        picks = step_indices(count, step, config.seed, config.batch, ctx.world_size, ctx.rank)
        batch = stack_samples([samples.get(plan.data.samples[i]) for i in picks], ctx.device, dtype)
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step * 1009 + ctx.rank)
        with autocast:
            out = flow_matching_loss(model, scheduler, batch, config, generator, dtype)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        lr.step()
        step += 1
        loss = _mean_across(float(out.loss.detach()), ctx.device)
        if not math.isfinite(loss):
            raise FloatingPointError(f"the loss is {loss} at step {step}; lower `lr` or check the data")
        metrics = {
            "step": float(step),
            "loss": loss,
            "grad_norm": float(grad_norm),
            "lr": float(lr.get_last_lr()[0]),
            "step_s": time.perf_counter() - started,
            "resumed_from": metrics["resumed_from"],
        }
        last = step == config.steps
        if config.validate_every and (step % config.validate_every == 0 or last) and ctx.rank == 0:
            if validator is None:
                from kiss_core.training.validation import Validator

                validator = Validator(plan, transformer, ctx.device, dtype)
            metrics |= validator.run(step)
            transformer.train()
        checkpoint = None
        if step % config.checkpoint_every == 0 or last:
            if ctx.rank == 0:
                checkpoint = write_checkpoint(
                    ctx.scratch / f"step_{step:07d}", transformer, plan, step, optimizer, lr
                )
            ctx.report(metrics, checkpoint)
        elif step % config.log_every == 0:
            ctx.report(metrics, None)
        if writer is not None:
            for name, value in metrics.items():
                if name not in ("step", "resumed_from"):
                    writer.add_scalar(name, value, step)
    if writer is not None:
        writer.close()
    return metrics


class _no_autocast:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


def _writer(plan: TrainPlan, ctx: WorkerContext, step: int) -> Any:
    """Rank 0's TensorBoard writer; a resumed run drops the events after its checkpoint (purge_step)."""
    if ctx.rank != 0 or plan.log_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    # Events after the checkpoint's step were written by the run that died; they are replayed from here.
    return SummaryWriter(str(plan.log_dir / "tensorboard"), purge_step=step + 1 if step else None)
