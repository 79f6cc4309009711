"""Curation throughput: clips per minute per core on 5 s 832x480 clips, per stage, 1 vs 2 Ray Data
workers, and the workers' peak memory against the corpus size.

    .venv/bin/python bench/curate.py [--clips 16] [--memory-sizes 8,48] [--distinct 8] [--baseline REF]

The corpus is clean kisses of synthetic subjects rendered by the preview compositor (5 s, 832x480,
24 fps; every clip is kept, the most expensive path: all stages including the export), `--distinct`
renders copied round-robin to the corpus size. Three measurements:
1. one process pinned to one core, `curate_clip` on each distinct clip (no Ray): seconds per stage;
2. `workflows.curate.curate` on a local Ray with 2 CPUs, `--clips` clips, 1 then 2 workers (actor
   start-up included: what a user waits for);
3. the same with 2 workers on each of `--memory-sizes`: peak RSS of the curation actors and of the
   driver, sampled every 0.2 s from /proc (streaming: it must not grow with the corpus).
With `--baseline REF` (a git ref), measurement 1 also runs the curation code of that commit (its
kiss_core from `git archive`, its default config) on the same clips, alternating with the current code
over `--rounds` rounds, so before and after share the machine's load. Prints one table and writes
bench/results/curate.json (or `--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load import process_rss_bytes  # noqa: E402
from kiss_core.curation import manifest  # noqa: E402
from kiss_core.curation.config import CurateConfig  # noqa: E402
from tests.support.curation_corpus import SIDECAR, render, write_clip  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "curate.json"
PAIRS = ((0, 1), (2, 3), (1, 2), (3, 0))
STYLES = ("romantic", "peck")


def build(directory: Path, distinct: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(distinct):
        clip = render(PAIRS[k % len(PAIRS)], STYLES[(k // len(PAIRS)) % len(STYLES)], "832x480", 24, 5.0)
        path = directory / f"distinct_{k:03d}.mp4"
        write_clip(path, clip.frames, 24, SIDECAR)
        paths.append(path)
    return paths


def corpus(base: list[Path], directory: Path, size: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for k in range(size):
        source = base[k % len(base)]
        shutil.copyfile(source, directory / f"clip_{k:04d}.mp4")
        shutil.copyfile(source.with_suffix(".json"), directory / f"clip_{k:04d}.json")
    return directory


def checkout(ref: str, directory: Path) -> Path:
    """kiss_core as it was at `ref`, unpacked under `directory` (for the baseline)."""
    import subprocess

    directory.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", ref, "kiss_core"], cwd=ROOT, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive.stdout, check=True)
    return directory


def single_core(
    paths: list[Path], config: CurateConfig | None, root: Path = ROOT, rounds: int = 1
) -> dict[str, Any]:
    """curate_clip in children pinned to one core, `kiss_core` imported from `root`: CPU and wall
    seconds per clip and per stage (medians over clips and rounds). `config` None: that code's defaults."""
    runs: list[dict[str, Any]] = []
    for _ in range(rounds):
        runs += _single_core_runs(paths, config, root)
    return _single_core_summary(runs)


def _single_core_runs(paths: list[Path], config: CurateConfig | None, root: Path) -> list[dict[str, Any]]:
    import subprocess

    code = (
        "import json, os, sys, time\n"
        "os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})\n"
        "from pathlib import Path\n"
        "from kiss_core.curation.clip import FaceModels, curate_clip\n"
        "from kiss_core.curation.config import CurateConfig\n"
        "models, config = FaceModels.load(), CurateConfig.model_validate_json(sys.argv[1])\n"
        "out = []\n"
        "for p in map(Path, sys.argv[2:]):\n"
        "    t, c = time.perf_counter(), time.process_time()\n"
        "    r = curate_clip(p, p.with_suffix('.json').read_bytes(), models, config)\n"
        "    out.append({'seconds': time.perf_counter() - t, 'cpu': time.process_time() - c,\n"
        "                'decision': r.decision,\n"
        "                'stages': json.loads(r.row['stage_seconds'])})\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, config.model_dump_json() if config else "{}", *map(str, paths)],
        check=True,
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    runs: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return runs


def _single_core_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    stages = sorted({s for r in runs for s in r["stages"]})
    per_stage = {s: statistics.median(r["stages"].get(s, 0.0) for r in runs) for s in stages}
    seconds = statistics.median(r["seconds"] for r in runs)
    cpu = statistics.median(r["cpu"] for r in runs)
    return {
        "cpu_seconds_per_clip": round(cpu, 3),
        "clips_per_min_per_core_cpu": round(60 / cpu, 1),
        "clips": len(runs),
        "kept": sum(r["decision"] == "kept" for r in runs),
        "seconds_per_clip": round(seconds, 3),
        "clips_per_min_per_core": round(60 / seconds, 1),
        "stage_seconds_median": {k: round(v, 3) for k, v in per_stage.items()},
    }


def cpu_seconds(proc: Path) -> float:
    """User + system CPU seconds of a process (all its threads), 0 if it is gone."""
    try:
        fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


class RssSampler:
    """Peak RSS and CPU seconds of the curation actors (Ray Data map workers) and this driver's peak RSS."""

    def __init__(self) -> None:
        self.worker_cpu: dict[str, float] = {}
        self.worker_peak = 0
        self.driver_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = Path(f"/proc/{os.getpid()}")
        while not self._stop.is_set():
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if b"MapWorker" in cmdline or b"CurateWorker" in cmdline:
                    self.worker_peak = max(self.worker_peak, process_rss_bytes(entry))
                    self.worker_cpu[entry.name] = max(
                        self.worker_cpu.get(entry.name, 0.0), cpu_seconds(entry)
                    )
            self.driver_peak = max(self.driver_peak, process_rss_bytes(me))
            self._stop.wait(0.2)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def ray_run(source: Path, dest: Path, config: CurateConfig, workers: int) -> dict[str, Any]:
    from workflows.curate import curate

    shutil.rmtree(dest, ignore_errors=True)
    with RssSampler() as rss:
        started = time.perf_counter()
        summary = curate(str(source), str(dest), config, workers=workers)
        seconds = time.perf_counter() - started
    rows = manifest.read_rows(dest)
    stages: dict[str, float] = {}
    for row in rows:
        if row["kind"] == manifest.KIND_SOURCE and row.get("stage_seconds"):
            for k, v in json.loads(row["stage_seconds"]).items():
                stages[k] = stages.get(k, 0.0) + v
    return {
        "workers": workers,
        "clips": summary.clips,
        "kept": summary.kept,
        "seconds": round(seconds, 2),
        "clips_per_min": round(60 * summary.clips / seconds, 1),
        "clips_per_min_per_worker": round(60 * summary.clips / seconds / workers, 1),
        "worker_cpu_seconds_per_clip": round(sum(rss.worker_cpu.values()) / summary.clips, 3),
        "worker_stage_seconds_per_clip": {k: round(v / summary.clips, 3) for k, v in sorted(stages.items())},
        "peak_worker_rss_mib": round(rss.worker_peak / 2**20, 1),
        "peak_driver_rss_mib": round(rss.driver_peak / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--memory-sizes", default="8,48")
    parser.add_argument("--distinct", type=int, default=8)
    parser.add_argument("--baseline", help="git ref whose curation code runs beside this one (single core)")
    parser.add_argument("--rounds", type=int, default=1, help="single-core passes over the distinct clips")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args()
    out = args.out if args.out.is_absolute() else Path.cwd() / args.out
    config = CurateConfig()
    load_start = os.getloadavg()
    import ray

    work = Path(tempfile.mkdtemp(prefix="kissgen-bench-curate-"))
    baseline: dict[str, Any] | None = None
    try:
        base = build(work / "distinct", args.distinct)
        if args.baseline:
            old_root = checkout(args.baseline, work / "baseline")
            old_runs: list[dict[str, Any]] = []
            new_runs: list[dict[str, Any]] = []
            for _ in range(args.rounds):  # alternating, so both see the same load
                old_runs += _single_core_runs(base, None, old_root)
                new_runs += _single_core_runs(base, config, ROOT)
            baseline = {"ref": args.baseline, **_single_core_summary(old_runs)}
            one_core = _single_core_summary(new_runs)
        else:
            one_core = single_core(base, config, rounds=args.rounds)
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
        source = corpus(base, work / f"corpus_{args.clips}", args.clips)
        scaling = [ray_run(source, work / "dest", config, w) for w in (1, 2)]
        memory = []
        for size in (int(s) for s in args.memory_sizes.split(",") if s):
            source = corpus(base, work / f"corpus_{size}", size)
            memory.append({"corpus": size, **ray_run(source, work / "dest", config, 2)})
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    speedup = scaling[1]["clips_per_min"] / scaling[0]["clips_per_min"]
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_start": load_start,
            "load_avg": os.getloadavg(),
        },
        "clip": "5 s, 832x480, 24 fps, preview-compositor kiss of synthetic subjects (all kept)",
        "sample_fps": config.sample_fps,
        "single_core": one_core,
        **({"single_core_baseline": baseline} if baseline else {}),
        **(
            {
                "cpu_ratio_vs_baseline": round(
                    one_core["cpu_seconds_per_clip"] / baseline["cpu_seconds_per_clip"], 3
                )
            }
            if baseline
            else {}
        ),
        "ray_scaling": scaling,
        "speedup_2_vs_1": round(speedup, 2),
        "memory": memory,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    stages = one_core["stage_seconds_median"]
    c = one_core
    wall, per_core = c["seconds_per_clip"], c["clips_per_min_per_core"]
    print(f"single core (no Ray): {wall} s/clip wall = {per_core} clips/min/core")
    print(
        f"  {c['cpu_seconds_per_clip']} CPU s/clip = {c['clips_per_min_per_core_cpu']} clips/min per CPU core"
    )
    print(f"  stages (median wall s): {stages}")
    if baseline:
        b = baseline
        print(
            f"baseline {b['ref']}: {b['cpu_seconds_per_clip']} CPU s/clip = {b['clips_per_min_per_core_cpu']}"
            f" clips/min per CPU core; stages {b['stage_seconds_median']}"
        )
        print(f"  this code uses {result['cpu_ratio_vs_baseline']}x the baseline's CPU per clip")
    header = ("run", "clips", "seconds", "clips/min", "/worker", "CPU s/clip", "worker MiB", "driver MiB")
    print(f"{header[0]:<22}" + "".join(f"{h:>11}" for h in header[1:]))
    lines = [(f"ray, {r['workers']} worker(s)", r) for r in scaling]
    lines += [(f"memory, {r['corpus']} clips", r) for r in memory]
    for label, r in lines:
        keys = ("clips", "seconds", "clips_per_min", "clips_per_min_per_worker")
        values = [r[k] for k in keys] + [
            r["worker_cpu_seconds_per_clip"],
            r["peak_worker_rss_mib"],
            r["peak_driver_rss_mib"],
        ]
        print(f"{label:<22}" + "".join(f"{v:>11}" for v in values))
    print(f"2 workers vs 1: x{speedup:.2f}; wrote {out}")


if __name__ == "__main__":
    main()
