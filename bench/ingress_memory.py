"""Where the Ingress's memory goes as it runs jobs: RSS by mapping kind, with an allocator or profiler.

    .venv/bin/python bench/ingress_memory.py [--jobs 120] [--env '{"PYTHONMALLOC": "malloc"}']
                                             [--jemalloc] [--heaptrack OUT]

Starts its own local Ray cluster and the Serve application in `make run`'s profile (bench/load.py's
start), then runs --jobs tiny preview jobs (1 s, 256x144, 12 fps) of two synthetic subjects, 15 at a
time, each polled every 2 s until done. After each batch it reads the Ingress replica's
/proc/<pid>/smaps and, at the end, prints how its resident memory moved from the first batch to the
last by kind of mapping: `[heap]` (glibc's main arena), anonymous mappings (glibc's other arenas,
Python's 1 MiB pymalloc arenas, thread stacks), the object store's shared memory (`/dev/shm/plasma*`:
pages of the store the process touched, bounded by the store), and files.

Only the Ingress is changed, through its runtime_env (the other deployments keep the profile's):
--env adds environment variables (e.g. PYTHONMALLOC=malloc, MALLOC_* settings); --jemalloc preloads
the jemalloc that ships in Ray's wheel; --heaptrack OUT runs the replica under heaptrack (the
`heaptrack` binary must be on PATH), whose trace `heaptrack_print OUT.zst` reads, and two traces of
different lengths compare with `heaptrack_print -f long.zst -d short.zst` (live heap by call site).
Writes bench/results/ingress_memory.json.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kiss_core.faces.synthetic import synthetic_subject_png  # noqa: E402

INGRESS_TITLE = b"ray::ServeReplica:kissgen:Ingress"
BATCH = 15


def ingress_pid() -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(INGRESS_TITLE):
                    return int(entry.name)
            except OSError:
                continue
    raise RuntimeError("no Ingress replica process found")


GLIBC_HEAP_ALIGN = 64 * 2**20  # glibc's non-main arenas live in heaps mmapped at 64 MiB boundaries
THREAD_STACK = 8 * 2**20  # the default pthread stack (ulimit -s 8192)


def mapping_kind(addresses: str, name: str) -> str:
    """What a mapping most likely holds. Anonymous ones by shape: a glibc arena heap starts on a 64 MiB
    boundary, a thread stack is 8 MiB; the rest are mostly Python's 1 MiB pymalloc arenas (adjacent
    ones merge into one mapping), numpy buffers and libraries' own mmaps."""
    if name in ("[heap]", "[stack]"):
        return "[heap] (glibc main arena)" if name == "[heap]" else name
    if name.startswith("/dev/shm/plasma"):
        return "object store (shm)"
    if name:
        return "files"
    start, end = (int(part, 16) for part in addresses.split("-"))
    if start % GLIBC_HEAP_ALIGN == 0:
        return "anon: glibc arena"
    if end - start == THREAD_STACK:
        return "anon: thread stacks"
    return "anon: other (pymalloc...)"


def smaps_rss(pid: int) -> dict[tuple[str, str], int]:
    """(address range, mapping name) -> resident bytes."""
    rss: dict[tuple[str, str], int] = {}
    key = ("", "")
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):
            key = (fields[0], fields[5] if len(fields) > 5 else "")
        elif fields and fields[0] == "Rss:":
            rss[key] = int(fields[1]) * 1024
    return rss


def by_kind(rss: dict[tuple[str, str], int]) -> dict[str, int]:
    kinds: collections.Counter[str] = collections.Counter()
    for (addresses, name), size in rss.items():
        kinds[mapping_kind(addresses, name)] += size
    return dict(kinds)


async def one_job(client: httpx.AsyncClient) -> str:
    data = {"consent_a": "true", "consent_b": "true", "style": "peck", "seconds": "1", "size": "256x144"}
    data["fps"] = "12"
    files = {
        "subject_a": ("a.png", synthetic_subject_png(0), "image/png"),
        "subject_b": ("b.png", synthetic_subject_png(1), "image/png"),
    }
    while True:
        response = await client.post("/v1/videos", data=data, files=files)
        if response.status_code == 202:
            break
        if response.status_code not in (429, 503):
            raise RuntimeError(f"POST /v1/videos answered {response.status_code}: {response.text[:300]}")
        await asyncio.sleep(float(response.headers.get("retry-after", "1")))
    job_id = response.json()["id"]
    while True:
        await asyncio.sleep(2)
        status = (await client.get(f"/v1/videos/{job_id}")).json()["status"]
        if status in ("completed", "failed", "canceled"):
            return str(status)


async def run_jobs(url: str, jobs: int) -> list[dict[str, Any]]:
    batches = []
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        started, done = time.monotonic(), 0
        while done < jobs:
            statuses = await asyncio.gather(*(one_job(client) for _ in range(min(BATCH, jobs - done))))
            done += len(statuses)
            rss = smaps_rss(ingress_pid())
            batches.append(
                {
                    "jobs": done,
                    "t": round(time.monotonic() - started, 1),
                    "statuses": dict(collections.Counter(statuses)),
                    "rss": sum(rss.values()),
                    "kinds": by_kind(rss),
                }
            )
            batch = batches[-1]
            print(f"{done:>4} jobs  {batch['t']:>6.0f} s  Ingress RSS {batch['rss'] / 2**20:.1f} MiB")
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=120)
    parser.add_argument("--env", default="{}", help="JSON object of environment variables for the Ingress")
    parser.add_argument("--jemalloc", action="store_true", help="preload Ray's jemalloc in the Ingress")
    parser.add_argument("--heaptrack", help="run the Ingress under heaptrack, writing OUT.zst")
    parser.add_argument("--port", type=int, default=8768)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingress_memory.json")
    args = parser.parse_args()
    if args.jobs < 2 * BATCH:
        parser.error(f"--jobs must be at least {2 * BATCH}: the first batch is the reference")

    import ray
    from ray import serve

    from graph import AppArgs, build_app

    env = json.loads(args.env)
    if args.jemalloc:
        env["LD_PRELOAD"] = str(Path(ray.__file__).parent / "core" / "libjemalloc.so")
    runtime_env: dict[str, Any] = {"env_vars": env}
    if args.heaptrack:
        runtime_env["py_executable"] = f"heaptrack -o {args.heaptrack} {sys.executable}"
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    root = tempfile.mkdtemp(prefix="kissmem-")
    app = AppArgs(
        profile="local",
        settings={"storage": {"backend": "local", "local_root": root}},
        deployment_options={"Ingress": {"ray_actor_options": {"runtime_env": runtime_env}}},
    )
    try:
        serve.run(build_app(app), name="kissgen", route_prefix="/")
        batches = asyncio.run(run_jobs(f"http://127.0.0.1:{args.port}", args.jobs))
    finally:
        serve.shutdown()
        ray.shutdown()

    first, last = batches[0], batches[-1]
    jobs_between = last["jobs"] - first["jobs"]
    print(f"\nIngress RSS from job {first['jobs']} to job {last['jobs']} ({jobs_between} jobs), by mapping:")
    print(f"{'mapping':<26} {'at first':>10} {'at last':>10} {'change':>10} {'per job':>10}")
    for kind in sorted(set(first["kinds"]) | set(last["kinds"])):
        a, b = first["kinds"].get(kind, 0), last["kinds"].get(kind, 0)
        print(
            f"{kind:<26} {a / 2**20:>6.1f} MiB {b / 2**20:>6.1f} MiB {(b - a) / 2**20:>+6.1f} MiB"
            f" {(b - a) / jobs_between / 1024:>+6.1f} KiB"
        )
    total = last["rss"] - first["rss"]
    print(
        f"{'total':<26} {first['rss'] / 2**20:>6.1f} MiB {last['rss'] / 2**20:>6.1f} MiB"
        f" {total / 2**20:>+6.1f} MiB {total / jobs_between / 1024:>+6.1f} KiB"
    )
    report = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "ingress_env": env,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count()},
        "batches": batches,
        "per_job_bytes": total / jobs_between,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
