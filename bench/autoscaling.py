"""Autoscaling, shown: the FaceAnalyzer scales out under load and back in after, the others stay put.

    .venv/bin/python bench/autoscaling.py [--clients 8] [--load-s 60] [--cooldown-s 80]

Starts a local Ray cluster (8 logical CPUs) and the Serve application in the CPU profile (local store
in a temporary directory) with a test-friendly autoscaling config for the FaceAnalyzer only, passed
through `AppArgs.deployment_options`: 1 to 4 replicas, target 1 ongoing request, upscale after 2 s,
downscale after 8 s, a 5 s look-back window, and autoscaling metrics pushed every second (the
production config reacts in tens of seconds; see serve_config.yaml). The other deployments keep the
local profile's options. Then `--clients` concurrent clients POST jobs of two synthetic subjects
(never a real person) for `--load-s` seconds; every POST runs two face analyses before its 202. A
sampler reads the replica count of every deployment from `serve.status()` every second, through the
load and a cool-down of at most `--cooldown-s` seconds. Prints one table (a row whenever a count
changes, and every 10 s) and writes bench/results/autoscaling.json, including which application
metrics (deployments/metrics.py) the node's metrics export port served.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import sys
import tempfile
import time
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kiss_core.faces.synthetic import synthetic_subject_png  # noqa: E402

APP = "kissgen"
DEPLOYMENTS = ("Ingress", "FaceAnalyzer", "IdentityEncoder", "VideoGenerator")
SCALED = "FaceAnalyzer"
FACE_ANALYZER_SCALING: dict[str, Any] = {
    "min_replicas": 1,
    "max_replicas": 4,
    "target_ongoing_requests": 1,
    "upscale_delay_s": 2,
    "downscale_delay_s": 8,
    "look_back_period_s": 5,
}
# Serve's replicas and handles report their ongoing requests every 10 s by default.
FAST_METRICS_ENV = {
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}
DEADLINE_S = 225.0  # the whole run, startup included, stays under 4 minutes


@dataclass
class Run:
    started: float = field(default_factory=time.monotonic)
    phase: str = "load"
    in_flight: int = 0
    answers: dict[int, int] = field(default_factory=dict)  # HTTP status -> count
    errors: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)

    def now(self) -> float:
        return round(time.monotonic() - self.started, 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def replica_counts() -> dict[str, int]:
    """RUNNING replicas per deployment of the application, from the controller."""
    from ray import serve

    app = serve.status().applications.get(APP)
    if app is None:
        return {}
    return {name: int(d.replica_states.get("RUNNING", 0)) for name, d in app.deployments.items()}


async def client(http: httpx.AsyncClient, run: Run, stop: float, photos: tuple[bytes, bytes]) -> None:
    files = {"subject_a": ("a.png", photos[0], "image/png"), "subject_b": ("b.png", photos[1], "image/png")}
    # Small outputs: the load is the two face analyses of each POST, not the rendering behind it.
    data = {"consent_a": "true", "consent_b": "true", "output": "image", "size": "256x256", "seconds": "1"}
    while time.monotonic() < stop:
        run.in_flight += 1
        try:
            response = await http.post("/v1/videos", data=data, files=files)
            run.answers[response.status_code] = run.answers.get(response.status_code, 0) + 1
            if response.status_code in (429, 503):
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))
        except httpx.HTTPError:
            run.errors += 1
            await asyncio.sleep(1.0)
        finally:
            run.in_flight -= 1


async def sampler(run: Run, done: asyncio.Event) -> None:
    while not done.is_set():
        counts = await asyncio.to_thread(replica_counts)
        run.samples.append({"t": run.now(), "phase": run.phase, "in_flight": run.in_flight, **counts})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout=1.0)


async def drive(
    url: str, args: argparse.Namespace, run: Run, hard_stop: float, photos: tuple[bytes, bytes]
) -> None:
    done = asyncio.Event()
    sampling = asyncio.create_task(sampler(run, done))
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        stop = time.monotonic() + args.load_s
        await asyncio.gather(*(client(http, run, stop, photos) for _ in range(args.clients)))
    run.phase = "cooldown"
    cooldown_end = min(time.monotonic() + args.cooldown_s, hard_stop)
    while time.monotonic() < cooldown_end:
        await asyncio.sleep(1.0)
        recent = [s.get(SCALED, 0) for s in run.samples[-5:] if s["phase"] == "cooldown"]
        if len(recent) == 5 and max(recent) <= FACE_ANALYZER_SCALING["min_replicas"]:
            break  # back at the minimum for 5 s
    done.set()
    await sampling


def start_service(http_port: int, metrics_port: int) -> str:
    import ray
    from ray import serve

    from graph import AppArgs, build_app

    os.environ.update(FAST_METRICS_ENV)  # before ray.init: the controller and replicas inherit it
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False, _metrics_export_port=metrics_port)
    serve.start(http_options={"host": "127.0.0.1", "port": http_port})
    root = tempfile.mkdtemp(prefix="kissautoscale-")
    args = AppArgs(
        profile="local",
        settings={"storage": {"backend": "local", "local_root": root}, "limits": {"max_active_jobs": 1000}},
        deployment_options={SCALED: {"autoscaling_config": FACE_ANALYZER_SCALING}},
    )
    serve.run(build_app(args), name=APP, route_prefix="/")
    return f"http://127.0.0.1:{http_port}"


def exported_app_metrics(metrics_port: int) -> list[str]:
    """The ray_kissgen_* metric families this node's metrics export port serves."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
    except OSError:
        return []
    return sorted({line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ray_kissgen_")})


def summarise(run: Run) -> dict[str, Any]:
    scaled = [(s["t"], s.get(SCALED, 0)) for s in run.samples]
    peak = max((n for _, n in scaled), default=0)
    peak_at = next((t for t, n in scaled if n == peak), None)
    load = [s["t"] for s in run.samples if s["phase"] == "load"]
    load_start, load_end = (load[0], load[-1]) if load else (None, None)
    back_at = next(
        (s["t"] for s in run.samples if s["phase"] == "cooldown" and s.get(SCALED, 0) <= 1 and peak > 1), None
    )
    others = {
        name: sorted({s[name] for s in run.samples if name in s and s["phase"] != "startup"})
        for name in DEPLOYMENTS
        if name != SCALED
    }
    return {
        "face_analyzer_peak": peak,
        "face_analyzer_peak_at_s": peak_at,
        "load_started_at_s": load_start,
        "load_ended_at_s": load_end,
        "face_analyzer_back_to_1_at_s": back_at,
        "other_deployments_counts_seen": others,
        "shown": peak > 1 and back_at is not None and all(len(v) == 1 for v in others.values()),
    }


def print_table(run: Run) -> None:
    header = ["t (s)", "phase", "POSTs in flight", *DEPLOYMENTS]
    rows = []
    last: tuple[int, ...] | None = None
    for i, s in enumerate(run.samples):
        counts = tuple(s.get(name, 0) for name in DEPLOYMENTS)
        if counts != last or i % 10 == 0 or i == len(run.samples) - 1:
            rows.append([f"{s['t']:.0f}", s["phase"], str(s["in_flight"]), *map(str, counts)])
            last = counts
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients POSTing jobs")
    parser.add_argument("--load-s", type=float, default=60.0, help="how long the clients POST")
    parser.add_argument("--cooldown-s", type=float, default=80.0, help="then how long to watch, at most")
    args = parser.parse_args()
    # look_back_period_s (5 s) is below the deprecated 10 s metrics_interval_s; the push intervals that
    # replaced it are 1 s here (FAST_METRICS_ENV), so the warning does not apply.
    warnings.filterwarnings("ignore", message="`look_back_period_s`", category=FutureWarning)

    photos = (synthetic_subject_png(0), synthetic_subject_png(1))  # before the clock starts
    run = Run(phase="startup")
    hard_stop = time.monotonic() + DEADLINE_S
    metrics_port = free_port()
    url = start_service(free_port(), metrics_port)
    run.samples.append({"t": run.now(), "phase": "startup", "in_flight": 0, **replica_counts()})
    startup_s = run.now()
    run.phase = "load"
    args.load_s = min(args.load_s, max(10.0, hard_stop - time.monotonic() - 30.0))
    try:
        asyncio.run(drive(url, args, run, hard_stop, photos))
        metric_families = exported_app_metrics(metrics_port)
    finally:
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()

    print_table(run)
    summary = summarise(run)
    print(
        f"startup {startup_s:.0f} s; answers {dict(sorted(run.answers.items()))}, transport errors "
        f"{run.errors}; FaceAnalyzer peak {summary['face_analyzer_peak']} replicas at "
        f"{summary['face_analyzer_peak_at_s']} s (load {summary['load_started_at_s']}-"
        f"{summary['load_ended_at_s']} s), back to 1 at "
        f"{summary['face_analyzer_back_to_1_at_s']} s; others saw {summary['other_deployments_counts_seen']}"
    )
    print(f"application metrics exported: {', '.join(metric_families) or 'none'}")
    report = {
        "args": vars(args),
        "face_analyzer_autoscaling_config": FACE_ANALYZER_SCALING,
        "env": FAST_METRICS_ENV,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "startup_s": startup_s,
        "answers": run.answers,
        "transport_errors": run.errors,
        "summary": summary,
        "app_metrics_exported": metric_families,
        "samples": run.samples,
    }
    out = ROOT / "bench" / "results" / "autoscaling.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out.relative_to(ROOT)}")
    if not summary["shown"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
