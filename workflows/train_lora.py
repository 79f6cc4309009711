"""`kissgen train-lora DATASET OUT --base wan-i2v|wan-vace`: a curated set → a served LoRA, on Ray Train.

A thin driver over kiss_core.training: the checks run here before anything starts (a bad dataset, base
model or config exits 2 with the reason), the precompute runs once (a one-GPU Ray task when the cluster
has GPUs, else in this process), then `TorchTrainer` runs `kiss_core.training.loop.train_worker` on
every worker (DDP: gloo on CPU, NCCL on GPUs) with Ray Train's checkpoints, reporting and failure
recovery injected. At the end the newest checkpoint's LoRA is copied to OUT/loras/ (<name>.safetensors
+ <name>.yaml): copy both into the service's model_root/loras/ and request it with lora=<name>.

OUT/  loras/<name>.{safetensors,yaml}   tensorboard/ (loss, lr, grad norm, validation metrics)
      validation/step_*.mp4             checkpoints/ (Ray Train's run folder unless checkpoint_storage)
      summary.json                      the final metrics, the checkpoint, the LoRA's files
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from kiss_core.generation.backends.weights import DIFFUSION_BACKENDS

RUN_NAME = "train-lora"
CHECKPOINT_PREFIX = "training-checkpoints"  # under the service's storage, with checkpoint_storage: storage


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers `train-lora` (Ray is imported only when it runs)."""
    p = sub.add_parser(
        "train-lora",
        help="fine-tune a LoRA on a curated set with Ray Train",
        description="Fine-tune a kiss LoRA for a Wan backend on a curated dataset (kissgen curate's output or"
        " any folder with the same manifest.parquet) on Ray Train; the LoRA lands in OUT/loras/.",
    )
    p.add_argument("dataset", type=Path, help="curated dataset directory (manifest.parquet, clips/, tracks/)")
    p.add_argument("out", type=Path, help="output directory (LoRA, TensorBoard logs, checkpoints)")
    p.add_argument("--base", required=True, choices=DIFFUSION_BACKENDS, help="the backend the LoRA is for")
    p.add_argument("--config", type=Path, default=None, help="TrainConfig YAML (docs/training.md)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.add_argument(
        "--model-root", type=Path, default=None, help="model root holding <base>/ (default: the service's)"
    )
    p.add_argument(
        "--workers", type=int, default=None, help="Ray Train workers (default: one per GPU, else 1)"
    )
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs each worker reserves")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kiss_core.training.checks import TrainingInputError, check_base, check_dataset
    from kiss_core.training.config import TrainConfigError, load_train_config

    try:
        config = load_train_config(args.config)
        model_root = args.model_root or _service_model_root()
        directory = check_base(model_root / args.base, args.base)
        segments = check_dataset(args.dataset, config)
        if args.workers is not None and args.workers < 1:
            raise TrainingInputError(f"`--workers` must be >= 1 but is {args.workers}")
    except (TrainingInputError, TrainConfigError) as exc:
        print(f"kissgen train-lora: error: {exc}", file=sys.stderr)
        return 2
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    import ray

    if not ray.is_initialized():
        ray.init(address=args.address)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    workers = args.workers or max(gpus, 1)
    use_gpu = gpus > 0
    from kiss_core.training.plan import TrainPlan
    from kiss_core.training.validation import validation_prompt

    inputs = (
        args.dataset.resolve(),
        segments,
        directory.path.resolve(),
        args.base,
        config,
        directory.image_conditioned,
        validation_prompt(config.validation, config.trigger_words),
    )
    if use_gpu:  # the VAE and UMT5 on one GPU of the cluster, once
        data = ray.get(ray.remote(_precompute).options(num_cpus=1, num_gpus=1).remote(*inputs))
    else:  # a CPU-only cluster: here, without starting one more process that imports the model stack
        data = _precompute(*inputs)
    print(f"precomputed {len(data.samples)} clips ({data.computed} records computed, the rest cached)")
    plan = TrainPlan(config=config, base=args.base, base_dir=directory.path.resolve(), data=data, log_dir=out)
    from ray.train import TrainingFailedError

    try:
        result = _fit(plan, out, workers, use_gpu, args.cpus_per_worker)
    except (
        TrainingFailedError
    ) as exc:  # a worker's error after `max_failures` restarts: its message, no traceback
        print(f"kissgen train-lora: error: training failed: {exc}", file=sys.stderr)
        return 1
    return _finish(result, plan, out)


def _service_model_root() -> Path:
    from kiss_core.settings import Settings

    return Settings().generator.model_root


def _precompute(*args: Any) -> Any:
    from kiss_core.training.precompute import precompute

    return precompute(*args, log=print)  # type: ignore[misc]  # positional: dataset .. validation_prompt


def train_loop(loop_config: dict[str, Any]) -> None:
    """Ray Train's per-worker function: kiss_core's loop with Ray's rank, device, DDP, report and resume."""
    import ray.train
    import ray.train.torch

    from kiss_core.training.loop import WorkerContext, train_worker

    plan = loop_config["plan"]
    context = ray.train.get_context()

    def report(metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        checkpoint = None if checkpoint_dir is None else ray.train.Checkpoint.from_directory(checkpoint_dir)
        name = None if checkpoint_dir is None else checkpoint_dir.name
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)

    latest = ray.train.get_checkpoint()
    with tempfile.TemporaryDirectory(prefix="kiss-train-") as scratch:
        resume = latest.as_directory() if latest is not None else contextlib.nullcontext(None)
        with resume as resume_dir:
            train_worker(
                plan,
                WorkerContext(
                    scratch=Path(scratch),
                    rank=context.get_world_rank(),
                    world_size=context.get_world_size(),
                    device=ray.train.torch.get_device(),
                    wrap=lambda model: ray.train.torch.prepare_model(model, move_to_device=False),
                    report=report,
                    resume=None if resume_dir is None else Path(resume_dir),
                ),
            )


def _fit(plan: Any, out: Path, workers: int, use_gpu: bool, cpus_per_worker: float) -> Any:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    config = plan.config
    storage_path, filesystem = checkpoint_location(config.checkpoint_storage, out)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"plan": plan},
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus_per_worker}
        ),
        run_config=RunConfig(
            name=RUN_NAME,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints),
            failure_config=FailureConfig(max_failures=config.max_failures),
        ),
    )
    return trainer.fit()


def checkpoint_location(setting: str | None, out: Path) -> tuple[str, Any]:
    """Ray Train's (storage_path, storage_filesystem) for `checkpoint_storage` (see TrainConfig)."""
    if setting is None:
        return str(out / "checkpoints"), None
    if setting != "storage":
        return setting, None
    from kiss_core.settings import Settings

    storage = Settings().storage
    if storage.backend == "local":
        return str(storage.local_root.resolve() / CHECKPOINT_PREFIX), None
    import pyarrow.fs

    filesystem = pyarrow.fs.S3FileSystem(
        access_key=storage.access_key,
        secret_key=storage.secret_key,
        endpoint_override=storage.endpoint,
        scheme="https" if storage.secure else "http",
        region=storage.region or "us-east-1",
    )
    return f"{storage.bucket}/{CHECKPOINT_PREFIX}", filesystem


def _finish(result: Any, plan: Any, out: Path) -> int:
    """The newest checkpoint's LoRA into OUT/loras/, and summary.json."""
    from kiss_core.training.loop import LORA_SUBDIR

    if result.checkpoint is None:
        print("kissgen train-lora: error: the run ended without a checkpoint", file=sys.stderr)
        return 1
    loras = out / LORA_SUBDIR
    loras.mkdir(parents=True, exist_ok=True)
    name = plan.config.name
    with result.checkpoint.as_directory() as folder:
        for suffix in (".safetensors", ".yaml"):
            shutil.copyfile(Path(folder) / LORA_SUBDIR / f"{name}{suffix}", loras / f"{name}{suffix}")
    summary = {
        "metrics": result.metrics,
        "checkpoint": result.checkpoint.path,
        "lora": [str(loras / f"{name}.safetensors"), str(loras / f"{name}.yaml")],
        "base": plan.base,
    }
    text = json.dumps(_no_nan(summary), indent=2, default=str)
    (out / "summary.json").write_text(text, encoding="utf-8")
    print(text)
    return 0


def _no_nan(value: Any) -> Any:
    """NaN (a validation metric that found no face) as null: summary.json stays standard JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    return value
