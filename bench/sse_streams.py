"""What open event streams (GET /v1/videos/{id}/events) cost the ingress, and how soon the first event comes.

    .venv/bin/python bench/sse_streams.py [--streams 0,1,10,50,60,80] [--window 10]
                                          [--url http://127.0.0.1:8000 --store DIR]

Without --url it starts its own local Ray cluster and the Serve application (CPU profile, local store
in a temporary directory, default `events` settings) and shuts them down afterwards; with --url it
targets a running service on loopback whose local store directory is --store.

The watched job is real but held: it is written into the store with JobStore.create (as admission does)
and not started (jobs.lease_s is long, so no replica's recovery picks it up during the bench), and the
bench writes stage/progress into its manifest every 0.5 s, as a generator does while it renders. So
every stream receives an event every 0.5 s, and the generator's own CPU use does not blur the
ingress's. For each count N of streams, during --window seconds: the Ingress replica's CPU (the
process titled ray::ServeReplica:<app>:Ingress, from /proc), the latency of GET /v1/videos/{id} from a client
polling it every 0.1 s, the events each stream got, and how many were refused (503 too_many_streams
past events.max_streams). Ratios are against N = 0.

Then, with real jobs (two synthetic subjects, small preview clips): the time from POST /v1/videos to the
first SSE event, opening the stream right after the 202, as a page does.

Prints one table and writes bench/results/sse_streams.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kiss_core.faces.synthetic import synthetic_subject_png  # noqa: E402
from kiss_core.jobs.store import JobStore  # noqa: E402
from kiss_core.schemas import VideoParams  # noqa: E402
from kiss_core.storage import LocalDirStore  # noqa: E402

LOOPBACK = ("127.0.0.1", "localhost", "::1")
QUICK = {"style": "peck", "seconds": "1", "fps": "8", "size": "256x144"}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ingress_pid(app: str) -> int:
    """The Ingress replica's process (Ray titles it ray::ServeReplica:<app>:Ingress), from /proc."""
    title = f"ServeReplica:{app}:Ingress".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if title in (entry / "cmdline").read_bytes():
                    return int(entry.name)
    raise RuntimeError(f"no process titled {title.decode()}: is the application running on this machine?")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def held_job(store_root: Path) -> str:
    """A job in the service's store that no replica runs (see the module docstring)."""
    from tests.support.mean_face import mean_face_analysis

    jobs = JobStore(LocalDirStore(store_root))
    analyses = {s: mean_face_analysis(s, (480, 600), (140, 200, 340, 440), 0.0, 0.0) for s in "ab"}
    params = VideoParams(seconds=5, fps=24, size="832x480")
    manifest = jobs.create(params, {"a": b"a", "b": b"b"}, analyses)
    jobs.update(manifest.id, status="in_progress", stage="generation", progress=10)
    return manifest.id


async def progress_writer(store_root: Path, job_id: str, stop: asyncio.Event) -> None:
    """Writes the job's progress every 0.5 s, as the generator does (10 -> 79 %, then again)."""
    jobs = JobStore(LocalDirStore(store_root))
    percent = 10
    while not stop.is_set():
        percent = 10 if percent >= 79 else percent + 1
        await asyncio.to_thread(jobs.update, job_id, stage="generation", progress=percent)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def one_stream(
    client: httpx.AsyncClient, url: str, counts: dict[str, int], opened: asyncio.Event
) -> None:
    try:
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                await response.aread()
                counts[f"refused_{response.status_code}"] = (
                    counts.get(f"refused_{response.status_code}", 0) + 1
                )
                return
            counts["open"] += 1
            async for line in response.aiter_lines():
                if line.startswith("event: job"):
                    counts["events"] += 1
                    opened.set()
                elif line.startswith(": hb"):
                    counts["heartbeats"] += 1
    except (httpx.TransportError, asyncio.CancelledError):
        pass


async def measure(url: str, job_id: str, n: int, window: float, app: str) -> dict[str, Any]:
    counts = {"open": 0, "events": 0, "heartbeats": 0}
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(30, read=None), limits=limits) as client:
        opened = [asyncio.Event() for _ in range(n)]
        streams = [
            asyncio.create_task(one_stream(client, f"/v1/videos/{job_id}/events", counts, opened[i]))
            for i in range(n)
        ]
        await asyncio.sleep(min(3.0, 0.5 + n * 0.02))  # let them connect
        pid = ingress_pid(app)
        cpu0, wall0 = cpu_seconds(pid), time.monotonic()
        events0 = counts["events"]
        latencies: list[float] = []
        async with httpx.AsyncClient(base_url=url, timeout=30) as poller:
            while time.monotonic() - wall0 < window:
                started = time.perf_counter()
                response = await poller.get(f"/v1/videos/{job_id}")
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
                await asyncio.sleep(0.1)
        cpu1, wall1 = cpu_seconds(pid), time.monotonic()
        events = counts["events"] - events0
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
    refused = sum(v for k, v in counts.items() if k.startswith("refused_"))
    return {
        "streams": n,
        "open": counts["open"],
        "refused": refused,
        "ingress_cpu": (cpu1 - cpu0) / (wall1 - wall0),  # cores
        "get_p50_s": percentile(latencies, 0.5),
        "get_p99_s": percentile(latencies, 0.99),
        "gets": len(latencies),
        "events_per_stream_s": events / max(1, counts["open"]) / (wall1 - wall0),
    }


async def first_event_times(url: str, runs: int) -> list[dict[str, float]]:
    photos = {
        "subject_a": ("a.png", synthetic_subject_png(0), "image/png"),
        "subject_b": ("b.png", synthetic_subject_png(1), "image/png"),
    }
    found = []
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(120, read=None)) as client:
        for _ in range(runs):
            started = time.perf_counter()
            response = await client.post(
                "/v1/videos", data={"consent_a": "true", "consent_b": "true", **QUICK}, files=photos
            )
            assert response.status_code == 202, response.text
            accepted = time.perf_counter()
            job_id = response.json()["id"]
            first = None
            async with client.stream("GET", f"/v1/videos/{job_id}/events") as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("event: job") and first is None:
                        first = time.perf_counter()
            found.append(
                {
                    "post_s": accepted - started,
                    "post_to_first_event_s": (first or accepted) - started,
                    "stream_open_to_first_event_s": (first or accepted) - accepted,
                }
            )
    return found


def start_service(http_port: int, app: str) -> tuple[str, Path]:
    import ray
    from ray import serve

    from graph import AppArgs, build_app

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": http_port})
    root = Path(tempfile.mkdtemp(prefix="kisssse-"))
    settings = {"storage": {"backend": "local", "local_root": str(root)}, "jobs": {"lease_s": 3600}}
    serve.run(build_app(AppArgs(profile="local", settings=settings)), name=app, route_prefix="/")
    return f"http://127.0.0.1:{http_port}", root


async def run(url: str, store: Path, args: argparse.Namespace) -> dict[str, Any]:
    job_id = held_job(store)
    stop = asyncio.Event()
    writer = asyncio.create_task(progress_writer(store, job_id, stop))
    rows = []
    try:
        for n in args.streams:
            rows.append(await measure(url, job_id, n, args.window, args.app))
            print(f"  {n} streams: {rows[-1]}", file=sys.stderr)
    finally:
        stop.set()
        await writer
    firsts = await first_event_times(url, args.runs)
    return {"rows": rows, "first_event": firsts, "job": job_id}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running service on loopback; default: start one here")
    parser.add_argument("--store", type=Path, help="with --url: the service's local store directory")
    parser.add_argument("--app", default="sse_bench", help="the Serve application's name")
    parser.add_argument("--streams", default="0,1,10,50,60,80", help="stream counts to measure")
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured per count")
    parser.add_argument("--runs", type=int, default=5, help="POST -> first event measurements")
    parser.add_argument("--port", type=int, default=8767)
    args = parser.parse_args()
    args.streams = [int(n) for n in args.streams.split(",")]
    if args.url:
        host = urlparse(args.url).hostname or ""
        if host not in LOOPBACK or args.store is None:
            parser.error("--url must be on loopback and comes with --store (the service's local store)")
        url, store = args.url, args.store
    else:
        url, store = start_service(args.port, args.app)
    try:
        result = asyncio.run(run(url, store, args))
    finally:
        if not args.url:
            from ray import serve

            serve.shutdown()

    from kiss_core.settings import EventSettings

    events = EventSettings()
    base = result["rows"][0]
    print(
        f"{'streams':>7} {'open':>5} {'refused':>7} {'ingress CPU':>12} {'x N=0':>6} "
        f"{'GET p50 ms':>10} {'x N=0':>6} {'GET p99 ms':>10} {'events/stream/s':>15}"
    )
    for row in result["rows"]:
        print(
            f"{row['streams']:>7} {row['open']:>5} {row['refused']:>7} {row['ingress_cpu'] * 100:>11.1f}%"
            f" {row['ingress_cpu'] / max(base['ingress_cpu'], 1e-9):>6.2f}"
            f" {row['get_p50_s'] * 1000:>10.1f} {row['get_p50_s'] / base['get_p50_s']:>6.2f}"
            f" {row['get_p99_s'] * 1000:>10.1f} {row['events_per_stream_s']:>15.2f}"
        )
        row["cpu_ratio"] = row["ingress_cpu"] / max(base["ingress_cpu"], 1e-9)
        row["get_p50_ratio"] = row["get_p50_s"] / base["get_p50_s"]
    firsts = result["first_event"]
    post_first = [f["post_to_first_event_s"] for f in firsts]
    open_first = [f["stream_open_to_first_event_s"] for f in firsts]
    print(
        f"POST -> first SSE event: p50 {percentile(post_first, 0.5) * 1000:.0f} ms, max"
        f" {max(post_first) * 1000:.0f} ms (stream open -> first event p50"
        f" {percentile(open_first, 0.5) * 1000:.0f} ms; {len(firsts)} jobs)"
    )
    report = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "events_settings": events.model_dump(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        **result,
    }
    out = ROOT / "bench" / "results" / "sse_streams.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
