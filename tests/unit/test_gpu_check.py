"""bench/gpu_check.py --tiny: the device check's code runs end to end on CPU (its timings are not claimed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # ~45 s on CPU: four parts, two tiny pipelines through the production classes
def test_the_device_check_runs_tiny_on_cpu_and_writes_every_part(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.tiny.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["mode"].startswith("tiny-cpu-smoke") and not result.get("failed")
    parts = [row["part"] for row in result["rows"]]
    assert parts.count("1 speed") == 3 and parts.count("2 production") == 2
    assert "3 two backends" in parts and "4 VACE first-block cache" in parts
    assert all(row["allclose"] for row in result["rows"] if row["part"] == "1 speed")
    assert all(row["ok"] and row["frames"] == 24 for row in result["rows"] if row["part"] == "2 production")
    assert "gpu_check" in done.stdout and "rel err" in done.stdout  # the one table
