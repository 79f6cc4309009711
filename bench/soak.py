"""Soak: 300 preview jobs at a steady rate near capacity; per-replica memory, restarts and lost jobs.

    .venv/bin/python bench/soak.py [--jobs 300] [--rate JOBS_PER_S] [--max-minutes 25]
                                   [--seconds 2 --fps 12 --size 416x240]

Starts its own local Ray cluster and the Serve application in `make run`'s profile (graph.py's
"local", the same start as bench/load.py: local store in a temporary directory) and shuts them down
afterwards. Two synthetic subjects only — never a real person.

1. Warm-up and capacity: one job alone (the cold path), then --burst jobs at once; the capacity is
   the rate at which the burst's jobs complete, (n - 1) / (last completion - first completion).
2. Soak: --jobs jobs submitted on a fixed schedule at --rate jobs/s (default: --load x the measured
   capacity), each polled until it is terminal; a 503/429 is retried after its Retry-After.
   Bounded in time: at --max-minutes after the soak started, whatever is not terminal is lost.
3. Every --sample-s seconds: the Ray actor table's Serve actors (replica ids, pids, restart counts,
   deaths) and the resident memory (VmRSS, /proc) of each of their processes — each Serve replica
   (title `ray::ServeReplica:<app>:<Deployment>`), the proxy and the controller. Only this cluster's
   pids count: other Ray clusters on the machine run processes with the same titles.

Targets: no job lost (accepted but failed, or not terminal at the end), no replica restarted
(an actor restart, a replica of a fixed-size deployment replaced, a replica dead other than by a
controller stop, or a proxy/controller replaced), RSS growth after warm-up under 5 % per replica
(last sample against the sample taken when --warmup-fraction of the soak's jobs were terminal). The
table also shows each process's growth less its RssShmem ("w/o shm"): the Ray object store's pages
a process touched count in its VmRSS, though they belong to the store and are bounded by it.
Prints one table, writes bench/results/soak.json and the plot bench/results/soak_rss.png (Pillow).
Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load import TERMINAL, percentile, process_memory_bytes, start_service  # noqa: E402
from kiss_core.faces.synthetic import synthetic_subject_png  # noqa: E402

SERVE_TITLES = (b"ray::ServeReplica:", b"ray::ProxyActor", b"ray::ServeController")
RSS_GROWTH_TARGET = 0.05


@dataclass
class Job:
    submitted: float  # monotonic, first attempt
    accepted: float = 0.0
    finished: float = 0.0
    status: str = "queued"
    error: str | None = None


@dataclass
class Soak:
    started: float
    jobs: dict[str, Job] = field(default_factory=dict)  # soak jobs by id
    refused: dict[int, int] = field(default_factory=dict)
    transport_errors: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)  # {t, rss: {process: bytes}, ray_total}
    actors: dict[str, dict[str, Any]] = field(default_factory=dict)  # actor id -> last seen row
    pids_seen: dict[str, set[int]] = field(default_factory=dict)  # actor id -> pids
    warmup_index: int | None = None  # samples[warmup_index]: the RSS reference after warm-up
    outstanding_peak: int = 0
    warmup_jobs: int = 1  # soak jobs terminal when the RSS reference is taken
    first_actors: dict[str, dict[str, Any]] = field(default_factory=dict)  # the actor table at start

    def t(self) -> float:
        return round(time.monotonic() - self.started, 1)


def serve_actor_table() -> dict[str, dict[str, Any]]:
    """Serve's actors (replicas, proxies, the controller) from the GCS actor table, by actor id.

    `ray._private.state.actors()` reads the GCS directly; the public ray.util.state API needs the
    dashboard, which the local profile (as bench/load.py starts it) does not run."""
    import ray

    rows = {}
    for actor_id, row in ray._private.state.actors().items():
        name = row.get("Name") or ""
        if name.startswith(("SERVE_REPLICA::", "SERVE_PROXY_ACTOR", "SERVE_CONTROLLER_ACTOR")):
            rows[actor_id] = {
                "name": name,
                "class": row.get("ActorClassName"),
                "state": row.get("State"),
                "pid": row.get("Pid"),
                "num_restarts": row.get("NumRestarts", 0),
                "death_cause": str(row.get("DeathCause") or ""),
            }
    return rows


def process_label(name: str) -> str:
    """`FaceAnalyzer#q83tdg76` for a replica (deployment and replica id), `ProxyActor`, `ServeController`."""
    if name.startswith("SERVE_REPLICA::"):
        return name.split("#", 1)[-1]  # SERVE_REPLICA::<app>#<deployment>#<replica id>
    return "ProxyActor" if name.startswith("SERVE_PROXY_ACTOR") else "ServeController"


def serve_rss(names_by_pid: dict[int, str]) -> tuple[dict[str, int], dict[str, int]]:
    """VmRSS, and its shared-memory part (RssShmem: object-store pages), of this cluster's Serve
    replica, proxy and controller processes, by label.

    Only the pids of this cluster's actor table count: other Ray clusters on the machine (other test
    runs) have processes with the same titles. Each pid's title is checked too, so that a pid reused
    by some other process after a replica died is not measured as the replica."""
    rss, shmem = {}, {}
    for pid, name in names_by_pid.items():
        proc = Path("/proc") / str(pid)
        try:
            if not (proc / "cmdline").read_bytes().startswith(SERVE_TITLES):
                continue
        except OSError:
            continue
        memory = process_memory_bytes(proc)
        rss[process_label(name)] = memory.get("VmRSS", 0)
        shmem[process_label(name)] = memory.get("RssShmem", 0)
    return rss, shmem


def take_sample(soak: Soak) -> None:
    table = serve_actor_table()
    for actor_id, row in table.items():
        soak.actors[actor_id] = row
        if row["pid"]:
            soak.pids_seen.setdefault(actor_id, set()).add(int(row["pid"]))
    names_by_pid = {int(r["pid"]): r["name"] for r in table.values() if r["pid"] and r["state"] == "ALIVE"}
    rss, shmem = serve_rss(names_by_pid)
    soak.samples.append({"t": soak.t(), "rss": rss, "shmem": shmem, "serve_total": sum(rss.values())})


async def sampler(soak: Soak, every_s: float, done: asyncio.Event) -> None:
    while not done.is_set():
        await asyncio.to_thread(take_sample, soak)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout=every_s)


def request_parts(args: argparse.Namespace) -> tuple[dict[str, str], dict[str, tuple[str, bytes, str]]]:
    data = {
        "consent_a": "true",
        "consent_b": "true",
        "style": args.style,
        "seconds": str(args.seconds),
        "size": args.size,
        "fps": str(args.fps),
    }
    a, b = synthetic_subject_png(0), synthetic_subject_png(1)
    return data, {"subject_a": ("a.png", a, "image/png"), "subject_b": ("b.png", b, "image/png")}


async def submit(
    client: httpx.AsyncClient, args: argparse.Namespace, soak: Soak | None, deadline: float
) -> tuple[str, Job] | None:
    """POST one job, retrying a refusal after its Retry-After until `deadline`; None if never accepted."""
    data, files = request_parts(args)
    job = Job(submitted=time.monotonic())
    while time.monotonic() < deadline:
        try:
            response = await client.post("/v1/videos", data=data, files=files)
        except httpx.HTTPError:
            if soak:
                soak.transport_errors += 1
            await asyncio.sleep(1.0)
            continue
        if response.status_code == 202:
            job.accepted = time.monotonic()
            return response.json()["id"], job
        if soak:
            soak.refused[response.status_code] = soak.refused.get(response.status_code, 0) + 1
        if response.status_code not in (429, 503):
            raise RuntimeError(f"POST /v1/videos answered {response.status_code}: {response.text[:300]}")
        await asyncio.sleep(float(response.headers.get("retry-after", "1")))
    return None


async def wait_terminal(
    client: httpx.AsyncClient, jobs: dict[str, Job], deadline: float, poll_s: float, soak: Soak | None = None
) -> None:
    """Poll every non-terminal job until all are terminal or `deadline` passes."""
    while time.monotonic() < deadline:
        open_ids = [job_id for job_id, job in jobs.items() if job.status not in TERMINAL]
        if soak:
            soak.outstanding_peak = max(soak.outstanding_peak, len(open_ids))
        for job_id in open_ids:
            try:
                answer = await client.get(f"/v1/videos/{job_id}")
            except httpx.HTTPError:
                if soak:
                    soak.transport_errors += 1
                continue
            if answer.status_code == 200:
                body = answer.json()
                job = jobs[job_id]
                job.status = body["status"]
                if job.status in TERMINAL:
                    job.finished = time.monotonic()
                    job.error = (body.get("error") or {}).get("code") if job.status == "failed" else None
        if soak and soak.warmup_index is None and soak.samples:
            terminal = sum(job.status in TERMINAL for job in jobs.values())
            if terminal >= soak.warmup_jobs:
                soak.warmup_index = len(soak.samples)  # the next sample is the reference
        if soak is None and all(job.status in TERMINAL for job in jobs.values()):
            return
        await asyncio.sleep(poll_s)


async def measure_capacity(client: httpx.AsyncClient, args: argparse.Namespace) -> dict[str, Any]:
    """One job alone (the cold path), then --burst at once: jobs/s at which the burst completes."""
    deadline = time.monotonic() + 10 * 60
    cold: dict[str, Job] = {}
    first = await submit(client, args, None, deadline)
    if first is None:
        raise RuntimeError("the warm-up job was never accepted")
    cold[first[0]] = first[1]
    await wait_terminal(client, cold, deadline, 0.25)
    burst: dict[str, Job] = {}
    for accepted in await asyncio.gather(*(submit(client, args, None, deadline) for _ in range(args.burst))):
        if accepted:
            burst[accepted[0]] = accepted[1]
    await wait_terminal(client, burst, deadline, 0.25)
    ends = sorted(job.finished for job in burst.values() if job.status == "completed")
    capacity = (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) > 1 and ends[-1] > ends[0] else None
    every = {**cold, **burst}
    return {
        "cold_job_s": first[1].finished - first[1].submitted,
        "burst": len(burst),
        "capacity_jobs_per_s": capacity,
        "not_completed": sum(job.status != "completed" for job in every.values()),
    }


async def run_soak(url: str, args: argparse.Namespace) -> tuple[Soak, dict[str, Any], float]:
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        warmup = await measure_capacity(client, args)
        rate = args.rate or (
            args.load * warmup["capacity_jobs_per_s"] if warmup["capacity_jobs_per_s"] else 0.5
        )
        soak = Soak(started=time.monotonic(), warmup_jobs=max(1, round(args.warmup_fraction * args.jobs)))
        soak.first_actors = await asyncio.to_thread(serve_actor_table)
        deadline = soak.started + args.max_minutes * 60
        done = asyncio.Event()
        sampling = asyncio.create_task(sampler(soak, args.sample_s, done))
        polling = asyncio.create_task(wait_terminal(client, soak.jobs, deadline, args.poll, soak))

        async def one(at: float) -> None:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            accepted = await submit(client, args, soak, deadline)
            if accepted:
                soak.jobs[accepted[0]] = accepted[1]

        await asyncio.gather(*(one(soak.started + i / rate) for i in range(args.jobs)))
        # Every job is submitted: stop polling once all are terminal, or at the deadline.
        while time.monotonic() < deadline and any(job.status not in TERMINAL for job in soak.jobs.values()):
            await asyncio.sleep(args.poll)
        polling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await polling
        done.set()
        await sampling
        await asyncio.to_thread(take_sample, soak)  # the final sample, after the drain
    return soak, warmup, rate


def restarts(soak: Soak, fixed_size: set[str]) -> list[dict[str, Any]]:
    """Each replica/proxy/controller restart or replacement seen during the soak."""
    found = []
    first_names = {row["name"] for row in soak.first_actors.values()}
    for actor_id, row in soak.actors.items():
        kind = row["name"].split("::", 1)[-1].split("#")[1] if "#" in row["name"] else row["name"]
        if row["num_restarts"] or len(soak.pids_seen.get(actor_id, ())) > 1:
            found.append({"actor": row["name"], "why": f"actor restarted {row['num_restarts']}x"})
        if row["state"] == "DEAD":
            stopped = "ray.kill" in row["death_cause"] or "INTENDED" in row["death_cause"].upper()
            if not stopped or kind in fixed_size or not row["name"].startswith("SERVE_REPLICA::"):
                found.append({"actor": row["name"], "why": f"died: {row['death_cause'][:200]}"})
        elif row["name"] not in first_names and (
            kind in fixed_size or not row["name"].startswith("SERVE_REPLICA::")
        ):
            found.append({"actor": row["name"], "why": "replacement started during the soak"})
    return found


def rss_growth(soak: Soak) -> dict[str, dict[str, Any]]:
    """Per process: RSS at the warm-up reference, at the end, the peak, and the growth between; also
    the growth of RSS less its shared-memory part ("private_growth"), which object-store pages touched
    by the process do not move."""
    if not soak.samples:
        return {}
    index = min(soak.warmup_index if soak.warmup_index is not None else 0, len(soak.samples) - 1)
    last = soak.samples[-1]
    growth = {}
    for label, end in sorted(last["rss"].items()):
        # A replica started after the reference (autoscaling) is measured from its own first sample.
        reference = next((s for s in soak.samples[index:] if label in s["rss"]), last)
        start = reference["rss"][label]
        peak = max(s["rss"].get(label, 0) for s in soak.samples)
        private_start = start - reference.get("shmem", {}).get(label, 0)
        private_end = end - last.get("shmem", {}).get(label, 0)
        growth[label] = {
            "reference_t": reference["t"],
            "reference_bytes": start,
            "end_bytes": end,
            "peak_bytes": peak,
            "growth": (end - start) / start if start else None,
            "private_growth": (private_end - private_start) / private_start if private_start else None,
        }
    return growth


COLOURS = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
]


def plot_rss(soak: Soak, out: Path, subtitle: str, growth: dict[str, dict[str, Any]]) -> None:
    """RSS of each process over time, one line each, the warm-up reference marked (Pillow only)."""
    from PIL import Image, ImageDraw, ImageFont

    width, height, left, right, top, bottom = 1100, 560, 80, 300, 50, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)
    small = ImageFont.load_default(size=12)
    labels = sorted({label for s in soak.samples for label in s["rss"]})
    t_max = max(max(s["t"] for s in soak.samples), 1.0)
    mib = [s["rss"][label] / 2**20 for s in soak.samples for label in s["rss"]]
    y_max = max(100.0, (int(max(mib) / 100) + 1) * 100)

    def xy(t: float, value: float) -> tuple[float, float]:
        x = left + (width - left - right) * t / t_max
        return x, top + (height - top - bottom) * (1 - value / y_max)

    draw.text((left, 12), f"RSS of the Serve processes during the soak: {subtitle}", fill="black", font=font)
    for step in range(0, int(y_max) + 1, 100 if y_max <= 1000 else 200):
        x0, y = xy(0, step)
        draw.line([(x0, y), (width - right, y)], fill=(230, 230, 230))
        draw.text((x0 - 8, y), f"{step}", fill="black", font=small, anchor="rm")
    minutes = t_max / 60
    tick = 1 if minutes <= 12 else 2 if minutes <= 24 else 5
    for m in range(0, int(minutes) + 1, tick):
        x, y0 = xy(m * 60, 0)
        draw.line([(x, y0), (x, y0 + 4)], fill="black")
        draw.text((x, y0 + 6), f"{m}", fill="black", font=small, anchor="mt")
    draw.text(((left + width - right) / 2, height - 16), "minutes", fill="black", font=small, anchor="mm")
    draw.text((12, top - 22), "RSS, MiB", fill="black", font=small)
    draw.rectangle([xy(0, y_max), xy(t_max, 0)], outline="black")
    if soak.warmup_index is not None and soak.warmup_index < len(soak.samples):
        x, _ = xy(soak.samples[soak.warmup_index]["t"], 0)
        for y in range(top, height - bottom, 8):
            draw.line([(x, y), (x, y + 4)], fill=(120, 120, 120))
        draw.text((x + 4, top + 4), "warm-up reference (growth from here)", fill=(90, 90, 90), font=small)
    for n, label in enumerate(labels):
        colour = COLOURS[n % len(COLOURS)]
        points = [xy(s["t"], s["rss"][label] / 2**20) for s in soak.samples if label in s["rss"]]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for px, py in points[-1:]:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
        ly = top + 20 * n
        draw.line([(width - right + 16, ly + 7), (width - right + 40, ly + 7)], fill=colour, width=3)
        change = (growth.get(label) or {}).get("growth")
        legend = f"{label}  {change * 100:+.1f} %" if change is not None else label
        draw.text((width - right + 46, ly), legend, fill="black", font=small)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300, help="soak jobs to have accepted")
    parser.add_argument("--rate", type=float, help="jobs/s; default --load x the capacity measured first")
    parser.add_argument("--load", type=float, default=0.85, help="fraction of the measured capacity")
    parser.add_argument("--burst", type=int, default=6, help="jobs submitted at once to measure capacity")
    parser.add_argument("--max-minutes", type=float, default=25.0, help="the soak's bound, drain included")
    parser.add_argument(
        "--warmup-fraction", type=float, default=0.2, help="jobs terminal at the RSS reference"
    )
    parser.add_argument("--sample-s", type=float, default=10.0, help="seconds between memory samples")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between status polls")
    parser.add_argument("--style", default="romantic")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--size", default="416x240")
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--port", type=int, default=8767)
    parser.add_argument("--note", default="", help="free text stored in the results (e.g. what else ran)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = parser.parse_args()

    from graph import PROFILES

    fixed_size = {name for name, options in PROFILES["local"].items() if "autoscaling_config" not in options}
    url = start_service(args.port)
    from ray import serve

    try:
        soak, warmup, rate = asyncio.run(run_soak(url, args))
        app_status = serve.status().applications["kissgen"]
        deployments = {
            name: {"status": str(d.status.value), "replicas": d.replica_states}
            for name, d in app_status.deployments.items()
        }
    finally:
        serve.shutdown()

    jobs = list(soak.jobs.values())
    completed = sum(job.status == "completed" for job in jobs)
    failed = [job for job in jobs if job.status == "failed"]
    unfinished = sum(job.status not in TERMINAL for job in jobs)
    never_accepted = args.jobs - len(jobs)
    lost = len(failed) + unfinished + never_accepted
    restarted = restarts(soak, fixed_size)
    growth = rss_growth(soak)
    worst = max((g["growth"] for g in growth.values() if g["growth"] is not None), default=0.0)
    finished = [job.finished for job in jobs if job.finished]
    wall_s = (max(finished) - soak.started) if finished else 0.0
    job_s = [job.finished - job.submitted for job in jobs if job.finished]
    replica_names = sorted(row["name"] for row in soak.actors.values())

    rows = [
        ("job", f"{args.seconds:g} s, {args.fps} fps, {args.size}, style {args.style} (preview)"),
        ("cold job / capacity (burst)", _capacity(warmup)),
        ("rate submitted", f"{rate:.3f} jobs/s ({rate * 60:.1f}/min, load {args.load:g} x capacity)"),
        ("jobs accepted / completed", f"{len(jobs)} / {completed}"),
        (
            "jobs lost (failed, unfinished, never accepted)",
            f"{lost} ({len(failed)}, {unfinished}, {never_accepted})",
        ),
        (
            "refusals (status: count)",
            ", ".join(f"{k}: {v}" for k, v in sorted(soak.refused.items())) or "none",
        ),
        ("replica restarts", f"{len(restarted)}"),
        (
            "soak wall time",
            f"{wall_s / 60:.1f} min ({len(jobs) / wall_s * 60:.1f} jobs/min)" if wall_s else "n/a",
        ),
        (
            "job (submit -> seen done) p50 / p99",
            f"{percentile(job_s, 0.5):.1f} / {percentile(job_s, 0.99):.1f} s",
        ),
        ("peak jobs outstanding", f"{soak.outstanding_peak}"),
    ]
    print()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print()
    print(
        f"{'process':<32} {'ref t':>7} {'RSS ref':>9} {'RSS end':>9} {'peak':>9} {'growth':>8} {'w/o shm':>8}"
    )
    for label, g in growth.items():
        pct, private = (
            f"{g[key] * 100:+.1f} %" if g[key] is not None else "n/a" for key in ("growth", "private_growth")
        )
        print(
            f"{label:<32} {g['reference_t']:>6.0f}s {g['reference_bytes'] / 2**20:>6.0f} MiB"
            f" {g['end_bytes'] / 2**20:>5.0f} MiB {g['peak_bytes'] / 2**20:>5.0f} MiB {pct:>8} {private:>8}"
        )
    for item in restarted:
        print(f"restart: {item['actor']}: {item['why']}")
    targets = {"no_job_lost": lost == 0, "no_restart": not restarted, "rss_growth_under_5pct": worst < 0.05}
    print("targets:", ", ".join(f"{k} {'met' if ok else 'MISSED'}" for k, ok in targets.items()))

    png = args.out.with_name("soak_rss.png")
    subtitle = f"{len(jobs)} jobs at {rate * 60:.1f}/min, {os.cpu_count()} cores"
    plot_rss(soak, png, subtitle, growth)
    report: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "warmup": warmup,
        "rate_jobs_per_s": rate,
        "accepted": len(jobs),
        "completed": completed,
        "failed": len(failed),
        "failed_codes": sorted({job.error or "?" for job in failed}),
        "unfinished": unfinished,
        "never_accepted": never_accepted,
        "lost": lost,
        "refused": soak.refused,
        "transport_errors": soak.transport_errors,
        "wall_s": wall_s,
        "job_s": {"p50": percentile(job_s, 0.5), "p99": percentile(job_s, 0.99)},
        "peak_outstanding": soak.outstanding_peak,
        "restarts": restarted,
        "serve_actors": replica_names,
        "deployments_at_end": deployments,
        "rss_growth": growth,
        "worst_rss_growth": worst,
        "targets": targets,
        "warmup_sample_index": soak.warmup_index,
        "samples": soak.samples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out} and {png}")
    if not all(targets.values()):
        sys.exit(1)


def _capacity(warmup: dict[str, Any]) -> str:
    capacity = warmup["capacity_jobs_per_s"]
    measured = f"{capacity:.3f} jobs/s ({capacity * 60:.1f}/min)" if capacity else "not measured"
    return f"{warmup['cold_job_s']:.1f} s / {measured}, {warmup['burst']} at once"


if __name__ == "__main__":
    main()
