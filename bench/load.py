"""Load test: many concurrent clients submitting and polling against the CPU profile, on loopback.

    .venv/bin/python bench/load.py [--clients 8] [--minutes 3] [--max-jobs 400] [--url http://127.0.0.1:8000]

Without --url it starts its own local Ray cluster and the Serve application (CPU profile, local
store in a temporary directory) and shuts them down afterwards; with --url it targets a running
service, which must be on loopback (this is a bench, not a tool to load somebody else's server).
Bounded in time (--minutes, then the clients stop submitting and wait for their jobs, at most
--drain-minutes) and in count (--max-jobs). Each client: submit a job (two synthetic subjects —
never a real person), then poll its status every --poll seconds until it is terminal; a 503 or 429
is honoured by sleeping for its Retry-After. A sampler records, every second, how many submitted
jobs are queued and in progress (the queue depth the clients see) and the resident memory of every
Ray process. Prints one table and writes bench/results/load.json.

Jobs lost = accepted (202) jobs that never reached `completed` or `failed`; it must be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kiss_core.faces.synthetic import synthetic_subject_png  # noqa: E402

TERMINAL = ("completed", "failed", "canceled")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class Tally:
    submit_s: list[float] = field(default_factory=list)
    status_s: list[float] = field(default_factory=list)
    job_s: list[float] = field(default_factory=list)
    accepted: dict[str, str] = field(default_factory=dict)  # id -> last status seen
    refused: dict[int, int] = field(default_factory=dict)  # HTTP status of non-202 answers -> count
    errors: int = 0
    depth: list[tuple[float, int, int]] = field(default_factory=list)  # (t, queued, in_progress)
    memory: list[tuple[float, int]] = field(default_factory=list)  # (t, bytes)


def process_memory_bytes(proc: Path) -> dict[str, int]:
    """VmRSS and its parts (RssAnon, RssFile, RssShmem) of one process (its /proc/<pid> directory), in
    bytes; empty if it is gone. RssShmem of a Ray process is mostly the object store's pages it touched:
    shared with the store, and bounded by it, not the process's own memory."""
    wanted = ("VmRSS", "RssAnon", "RssFile", "RssShmem")
    try:
        lines = (proc / "status").read_text().splitlines()
    except OSError:
        return {}
    found = {}
    for line in lines:
        name, _, value = line.partition(":")
        if name in wanted:
            found[name] = int(value.split()[0]) * 1024
    return found


def process_rss_bytes(proc: Path) -> int:
    """Resident memory of one process (its /proc/<pid> directory), 0 if it is gone or has none."""
    return process_memory_bytes(proc).get("VmRSS", 0)


def ray_rss_bytes() -> int:
    """Resident memory of every Ray process of this user (raylet, GCS, workers), from /proc."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"ray" not in (entry / "cmdline").read_bytes():
                continue
        except OSError:
            continue
        total += process_rss_bytes(entry)
    return total


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def client_loop(
    client: httpx.AsyncClient,
    tally: Tally,
    photos: tuple[bytes, bytes],
    params: dict[str, str],
    stop_submitting: float,
    budget: list[int],
    poll_s: float,
) -> None:
    files = {"subject_a": ("a.png", photos[0], "image/png"), "subject_b": ("b.png", photos[1], "image/png")}
    data = {"consent_a": "true", "consent_b": "true", **params}
    while time.monotonic() < stop_submitting and budget[0] > 0:
        budget[0] -= 1
        start = time.monotonic()
        try:
            response = await client.post("/v1/videos", data=data, files=files)
        except httpx.HTTPError:
            tally.errors += 1
            await asyncio.sleep(1.0)
            continue
        tally.submit_s.append(time.monotonic() - start)
        if response.status_code != 202:
            tally.refused[response.status_code] = tally.refused.get(response.status_code, 0) + 1
            await asyncio.sleep(float(response.headers.get("retry-after", "1")))
            continue
        job_id = response.json()["id"]
        tally.accepted[job_id] = "queued"
        while tally.accepted[job_id] not in TERMINAL:
            await asyncio.sleep(poll_s)
            polled = time.monotonic()
            try:
                answer = await client.get(f"/v1/videos/{job_id}")
            except httpx.HTTPError:
                tally.errors += 1
                continue
            tally.status_s.append(time.monotonic() - polled)
            if answer.status_code == 200:
                tally.accepted[job_id] = answer.json()["status"]
        tally.job_s.append(time.monotonic() - start)


async def sampler(tally: Tally, started: float, done: asyncio.Event) -> None:
    while not done.is_set():
        statuses = list(tally.accepted.values())
        now = round(time.monotonic() - started, 1)
        tally.depth.append((now, statuses.count("queued"), statuses.count("in_progress")))
        tally.memory.append((now, ray_rss_bytes()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout=1.0)


async def run_load(url: str, args: argparse.Namespace) -> Tally:
    tally = Tally()
    photos = (synthetic_subject_png(0), synthetic_subject_png(1))
    params = {"style": args.style, "seconds": str(args.seconds), "size": args.size, "fps": str(args.fps)}
    started = time.monotonic()
    stop = started + args.minutes * 60
    budget = [args.max_jobs]
    done = asyncio.Event()
    limits = httpx.Limits(max_connections=args.clients * 2)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        sampling = asyncio.create_task(sampler(tally, started, done))
        clients = [
            client_loop(client, tally, photos, params, stop, budget, args.poll) for _ in range(args.clients)
        ]
        # Jobs still not terminal at the deadline are counted as lost below.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*clients), timeout=(args.minutes + args.drain_minutes) * 60)
        done.set()
        await sampling
    tally.depth.append((round(time.monotonic() - started, 1), 0, 0))
    return tally


def start_service(http_port: int) -> str:
    import ray
    from ray import serve

    from graph import AppArgs, build_app

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": http_port})
    root = tempfile.mkdtemp(prefix="kissload-")
    serve.run(
        build_app(AppArgs(profile="local", settings={"storage": {"backend": "local", "local_root": root}})),
        name="kissgen",
        route_prefix="/",
    )
    return f"http://127.0.0.1:{http_port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running service on loopback; default: start one here")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=3.0, help="how long clients keep submitting")
    parser.add_argument("--drain-minutes", type=float, default=5.0, help="then how long to wait for jobs")
    parser.add_argument("--max-jobs", type=int, default=400, help="submissions in all, at most")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between status polls per client")
    parser.add_argument("--style", default="romantic")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", default="832x480")
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()

    if args.url:
        host = urlparse(args.url).hostname or ""
        if host not in LOOPBACK:
            parser.error(f"--url must be on loopback ({', '.join(LOOPBACK)}), not {host!r}")
        url = args.url
    else:
        url = start_service(args.port)
    try:
        tally = asyncio.run(run_load(url, args))
    finally:
        if not args.url:
            from ray import serve

            serve.shutdown()

    statuses = list(tally.accepted.values())
    completed, failed = statuses.count("completed"), statuses.count("failed")
    lost = len(statuses) - completed - failed - statuses.count("canceled")
    wall_min = (tally.depth[-1][0] if tally.depth else 0) / 60
    peak_depth = max((q + p for _, q, p in tally.depth), default=0)
    peak_memory = max((m for _, m in tally.memory), default=0)
    rows = [
        ("clients", f"{args.clients}"),
        ("jobs accepted (202)", f"{len(statuses)}"),
        (
            "refused (status: count)",
            ", ".join(f"{k}: {v}" for k, v in sorted(tally.refused.items())) or "none",
        ),
        ("completed / failed", f"{completed} / {failed}"),
        ("jobs lost", f"{lost}"),
        ("transport errors", f"{tally.errors}"),
        ("throughput", f"{completed / wall_min:.1f} jobs/min" if wall_min else "n/a"),
        (
            "submit p50 / p99",
            f"{percentile(tally.submit_s, 0.5):.3f} / {percentile(tally.submit_s, 0.99):.3f} s",
        ),
        (
            "status p50 / p99",
            f"{percentile(tally.status_s, 0.5):.3f} / {percentile(tally.status_s, 0.99):.3f} s",
        ),
        (
            "job (submit -> seen done) p50 / p99",
            f"{percentile(tally.job_s, 0.5):.1f} / {percentile(tally.job_s, 0.99):.1f} s",
        ),
        ("peak jobs queued + in progress", f"{peak_depth}"),
        ("peak memory of Ray processes", f"{peak_memory / 2**30:.2f} GiB"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    report: dict[str, Any] = {
        "args": vars(args),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "accepted": len(statuses),
        "completed": completed,
        "failed": failed,
        "lost": lost,
        "refused": tally.refused,
        "transport_errors": tally.errors,
        "wall_minutes": wall_min,
        "jobs_per_minute": completed / wall_min if wall_min else None,
        "submit_s": {"p50": percentile(tally.submit_s, 0.5), "p99": percentile(tally.submit_s, 0.99)},
        "status_s": {"p50": percentile(tally.status_s, 0.5), "p99": percentile(tally.status_s, 0.99)},
        "job_s": {"p50": percentile(tally.job_s, 0.5), "p99": percentile(tally.job_s, 0.99)},
        "median_job_s": statistics.median(tally.job_s) if tally.job_s else None,
        "queue_depth": tally.depth,
        "memory_bytes": tally.memory,
        "peak_memory_bytes": peak_memory,
    }
    out = ROOT / "bench" / "results" / "load.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out.relative_to(ROOT)}")
    if lost:
        sys.exit(1)


if __name__ == "__main__":
    main()
