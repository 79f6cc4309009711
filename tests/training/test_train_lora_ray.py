"""`kissgen train-lora` on Ray Train (TorchTrainer, 2 CPU workers, DDP over gloo) with the tiny random Wan.

One run trains 30 steps with a checkpoint every 5 (precompute cache and checkpoints in the service's
storage, here the suite's S3 server); a watcher SIGKILLs one training worker as soon as
the second checkpoint is being stored, so the run must restart its workers from a checkpoint and still
end at step 30. Its LoRA then goes through the service's production loader and through the diffusion
Serve app. Bad input stops the command before Ray is touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import yaml

from kiss_core.faces.synthetic import synthetic_subject_png
from kiss_core.storage import ObjectStore, open_store
from tests.conftest import graph_copy
from tests.serve.helpers import post_job, wait_terminal
from tests.support.s3server import S3Endpoint
from tests.training.conftest import SMALL
from workflows.cli import main
from workflows.train_lora import CHECKPOINT_PREFIX, RUN_NAME

NAME = "kiss-trained"
STEPS = 30


@dataclass
class TrainedRun:
    out: Path
    killed_pid: int | None
    killed_after: str | None  # the checkpoint that was stored when the worker was killed
    cached: list[str] | None = None  # the precompute cache's keys in the bucket


def _train_workers() -> list[dict[str, Any]]:
    """The live Ray Train workers, from the GCS actor table (class RayTrainWorker)."""
    import ray

    actors = ray.state.actors().values()  # type: ignore[attr-defined]
    return [a for a in actors if a["ActorClassName"] == "RayTrainWorker" and a["State"] == "ALIVE"]


def _kill_a_worker_after_two_checkpoints(store: ObjectStore, run: TrainedRun, stop: threading.Event) -> None:
    prefix = f"{CHECKPOINT_PREFIX}/{RUN_NAME}/step_"
    while not stop.is_set():
        # step_0000010 being uploaded means step_0000005's report (a barrier on every worker) has returned:
        # the restarted workers have a registered checkpoint to resume from.
        stored = sorted({key.removeprefix(prefix).split("/")[0] for key in store.list(prefix)})
        workers = _train_workers() if len(stored) >= 2 else []
        if workers:
            run.killed_pid, run.killed_after = int(workers[-1]["Pid"]), stored[-1]
            os.kill(run.killed_pid, signal.SIGKILL)
            return
        time.sleep(0.05)


@pytest.fixture(scope="module")
def trained(
    ray_cluster: None,
    tiny_root: Path,
    training_set: Path,
    s3_server: S3Endpoint,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TrainedRun]:
    """The run, with the service's storage on the S3 server: the precompute cache and checkpoints there."""
    out = tmp_path_factory.mktemp("train-out")
    config = out.parent / "train.yaml"
    fields = SMALL | {
        "name": NAME,
        "steps": STEPS,
        "checkpoint_every": 5,
        "validate_every": 15,  # renders at 15 and 30: one validator set-up after the restart
        "checkpoint_storage": "storage",
    }
    config.write_text(yaml.safe_dump(fields), encoding="utf-8")
    storage = s3_server.settings()
    run = TrainedRun(out, None, None)
    stop = threading.Event()
    watcher = threading.Thread(
        target=_kill_a_worker_after_two_checkpoints, args=(open_store(storage), run, stop)
    )
    args = ["train-lora", str(training_set), str(out), "--base", "wan-i2v", "--config", str(config)]
    args += ["--model-root", str(tiny_root), "--workers", "2", "--cpus-per-worker", "0.5"]
    with pytest.MonkeyPatch.context() as env:
        for name in ("backend", "endpoint", "access_key", "secret_key", "bucket", "region", "secure"):
            env.setenv(f"KISS_STORAGE__{name.upper()}", str(getattr(storage, name)))
        watcher.start()
        try:
            code = main(args)
        finally:
            stop.set()
            watcher.join()
    assert code == 0
    run.cached = open_store(storage).list("training-cache/")
    yield run


@pytest.mark.slow
def test_a_killed_worker_resumes_from_the_last_checkpoint_and_the_run_ends_at_the_same_step(
    trained: TrainedRun,
) -> None:
    import json

    assert trained.killed_pid is not None, "a training worker was killed mid-run"
    assert trained.cached is not None and len(trained.cached) == 4 + 2, (
        "4 clips, the caption, the validation prompt"
    )
    summary = json.loads((trained.out / "summary.json").read_text())
    metrics = summary["metrics"]
    assert metrics["step"] == STEPS
    resumed = int(metrics["resumed_from"])
    assert trained.killed_after is not None
    assert 5 <= resumed < STEPS and resumed % 5 == 0, "the restarted workers began at a stored checkpoint"
    assert summary["checkpoint"] == f"kiss-test/{CHECKPOINT_PREFIX}/{RUN_NAME}/step_{STEPS:07d}", (
        "in the bucket"
    )
    assert all(trained.killed_pid != int(w["Pid"]) for w in _train_workers())
    # Validation renders (steps 15, 30) and the loss in TensorBoard events, written by rank 0.
    assert {p.name for p in (trained.out / "validation").glob("*.mp4")} == {
        "step_0000015.mp4",
        "step_0000030.mp4",
    }
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained.out / "tensorboard"))
    events.Reload()
    assert {"loss", "lr", "val/visible_share_a", "val/mouth_distance"} <= set(events.Tags()["scalars"])
    steps = [e.step for e in events.Scalars("loss")]
    assert steps[-1] == STEPS and len(set(steps)) == STEPS, "one loss per step; the replayed ones purged"


def _model_root_with(trained: TrainedRun, tiny_root: Path, dest: Path) -> Path:
    """A copy of the tiny model root with the trained LoRA's two files in loras/."""
    shutil.copytree(tiny_root, dest)
    for suffix in (".safetensors", ".yaml"):
        shutil.copyfile(trained.out / "loras" / f"{NAME}{suffix}", dest / "loras" / f"{NAME}{suffix}")
    return dest


@pytest.mark.slow
def test_the_written_lora_loads_through_the_production_loader_and_changes_the_output(
    trained: TrainedRun, tiny_root: Path, tmp_path: Path
) -> None:
    from kiss_core.generation.backends.loras import discover_loras
    from kiss_core.generation.backends.wan import WanI2VFrames, adapter_name
    from kiss_core.settings import Settings

    root = _model_root_with(trained, tiny_root, tmp_path / "models")
    spec = discover_loras(root)[NAME]
    assert (spec.base, spec.trigger_words, spec.scale) == ("wan-i2v", "kissgen-kiss", 1.0)
    settings = Settings(generator={"model_root": str(root), "enabled": ["wan-i2v"], "backend": "wan-i2v"})
    backend = WanI2VFrames(settings.generator)
    assert NAME in backend.loras
    transformer = backend.pipe.transformer
    assert adapter_name(NAME) in transformer.blocks[0].ffn.net[2].lora_A, (
        "the FFN projections are adapted too"
    )
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "hidden_states": torch.randn(1, 36, 3, 8, 8, generator=generator),
        "timestep": torch.tensor([500.0]),
        "encoder_hidden_states": torch.randn(1, 8, 32, generator=generator),
        "encoder_hidden_states_image": torch.randn(1, 4, 4, generator=generator),
        "return_dict": False,
    }
    with torch.no_grad():
        backend.pipe.disable_lora()
        plain = transformer(**inputs)[0]
        backend.pipe.enable_lora()
        backend.pipe.set_adapters([adapter_name(NAME)], [1.0])
        styled = transformer(**inputs)[0]
    assert (styled - plain).abs().mean() > 1e-3, "the trained LoRA changes the prediction"


@pytest.fixture(scope="module")
def served(
    trained: TrainedRun, tiny_root: Path, http_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    root = _model_root_with(trained, tiny_root, tmp_path_factory.mktemp("served") / "models")
    settings = {
        "storage": {"backend": "local", "local_root": str(tmp_path_factory.mktemp("served-store"))},
        "generator": {"model_root": str(root), "steps": 2, "backend": "wan-i2v", "enabled": ["wan-i2v"]},
    }
    with graph_copy("kissgen_trained_lora", "/trained", settings, http_port) as url:
        yield url


@pytest.mark.slow
def test_a_request_with_the_trained_lora_completes_through_the_diffusion_serve_app(served: str) -> None:
    params = {"style": "peck", "seconds": 1.0, "fps": 8, "size": "160x128"}
    with httpx.Client(base_url=served, timeout=60) as client:
        response = post_job(client, synthetic_subject_png(0), synthetic_subject_png(1), lora=NAME, **params)
        assert response.status_code == 202, response.text
        job = wait_terminal(client, response.headers["location"].removeprefix("/trained"), timeout_s=120)
    assert job["status"] == "completed", job.get("error")
    assert job["params"]["lora"] == NAME


def _train(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["train-lora", *args])
    return code, capsys.readouterr().err


def test_bad_input_stops_the_command_before_any_worker_starts(
    tiny_root: Path, training_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.training_set import write_training_set

    out = tmp_path / "out"
    empty = write_training_set(tmp_path / "empty", clips=0)
    mute = write_training_set(tmp_path / "mute", clips=1, captions=False)
    rank0 = tmp_path / "rank0.yaml"
    rank0.write_text("rank: 0\n", encoding="utf-8")
    root = ["--model-root", str(tiny_root)]
    cases = [
        ([str(empty), str(out), "--base", "wan-i2v", *root], "no kept segment"),
        ([str(mute), str(out), "--base", "wan-i2v", *root], "have no caption"),
        ([str(training_set), str(out), "--base", "wan-i2v", "--model-root", str(tmp_path)], "wan-i2v"),
        ([str(training_set), str(out), "--base", "wan-vace", "--model-root", str(tiny_root / "x")], "not a"),
        ([str(training_set), str(out), "--base", "wan-i2v", "--config", str(rank0), *root], "rank"),
    ]
    for args, message in cases:
        code, err = _train(args, capsys)
        assert code == 2 and "kissgen train-lora: error:" in err and message in err, (args, err)
    # A VACE directory named as the I2V base: the class is named.
    wrong = tmp_path / "wrong"
    (wrong).mkdir()
    shutil.copytree(tiny_root / "wan-vace", wrong / "wan-i2v")
    code, err = _train([str(training_set), str(out), "--base", "wan-i2v", "--model-root", str(wrong)], capsys)
    assert code == 2 and "'WanImageToVideoPipeline' but is 'WanVACEPipeline'" in err
    assert not out.exists(), "nothing was started or written"
