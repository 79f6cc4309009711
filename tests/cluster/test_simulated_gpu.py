"""The GPU profiles on a simulated multi-node cluster: placement and cross-node passing, not speed.

Each profile runs in its own process (tests/cluster/simulated_cluster.py): a CPU-only head, a CPU
worker and a worker declaring GPUs it does not have. A job with the tiny Wan model completes; the
GPU stages run on the GPU node, face analysis and the ingress on CPU nodes, so the analyses and the
conditioning reach the generator through the object store across nodes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


# production: a generator deployment per backend (1 GPU each) and the encoder (0.25): 3 GPUs declared.
# single-gpu: one generator (0.75) holding both backends and the encoder (0.25) on one GPU.
LAYOUTS = {
    "single-gpu": (1, {"VideoGenerator"}),
    "production": (3, {"VideoGenerator", "VideoGenerator-wan-vace"}),
}


@pytest.mark.parametrize(("profile", "gpus"), [(name, gpus) for name, (gpus, _) in LAYOUTS.items()])
def test_a_job_completes_with_the_gpu_stages_on_the_gpu_node(profile: str, gpus: int, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    command = [sys.executable, "-m", "tests.cluster.simulated_cluster", "--profile", profile]
    completed = subprocess.run(
        [*command, "--gpus", str(gpus), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.exists(), completed.stderr[-4000:]
    report = json.loads(out.read_text())
    job = report["job"]
    failure = (job.get("error"), completed.stderr[-2000:])
    assert completed.returncode == 0 and job["status"] == "completed", failure
    assert job["params"]["backend"] == "wan-i2v" and job["result"]["frames"] == 12
    nodes, placed = report["nodes"], report["replica_nodes"]
    generators = {name for name in placed if name.startswith("VideoGenerator")}
    assert generators == LAYOUTS[profile][1]
    assert all(placed[name] == nodes["gpu"] for name in generators)
    assert placed["IdentityEncoder"] == nodes["gpu"]
    assert placed["FaceAnalyzer"] in (nodes["head"], nodes["cpu"])
    assert placed["Ingress"] in (nodes["head"], nodes["cpu"])
