"""Application metrics, exported through Ray Serve's metrics so Prometheus scrapes them with Serve's own.

Each Ray node serves every metric recorded on it at its metrics export port (`ray start
--metrics-export-port`), named with Ray's `ray_` prefix: `kissgen_stage_seconds` is scraped as
`ray_kissgen_stage_seconds_bucket/_sum/_count`. Metrics created inside a replica carry Serve's
`deployment`, `replica` and `application` tags, which is how `kissgen_gpu_memory_bytes` is per
deployment and `kissgen_queue_depth` per ingress replica (sum them for the cluster).

Metric objects are created lazily, on first use in each process: Serve adds its tags only to metrics
created inside a replica, and tests that build a deployment class without Ray record nothing.
`METRICS` is the plain-data catalogue (infra/grafana's dashboard is checked against it).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, cast

# Stage latencies run from tens of milliseconds (a status write) to minutes (a diffusion render).
STAGE_BUCKETS_S: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 240, 420, 600)
TERMINAL_STATUSES = ("completed", "failed", "canceled")


@dataclass(frozen=True)
class MetricSpec:
    kind: Literal["counter", "gauge", "histogram"]
    description: str
    tag_keys: tuple[str, ...] = ()
    boundaries: tuple[float, ...] = ()


METRICS: dict[str, MetricSpec] = {
    "kissgen_jobs_total": MetricSpec(
        "counter", "Jobs that reached a terminal status in this ingress replica.", ("status",)
    ),
    "kissgen_stage_seconds": MetricSpec(
        "histogram",
        "Seconds per stage: face_analysis, identity, generation and generation's parts"
        " (load, plan, lighting, render_encode, quality, store).",
        ("stage",),
        STAGE_BUCKETS_S,
    ),
    "kissgen_queue_depth": MetricSpec(
        "gauge", "Jobs this ingress replica runs now (queued + in_progress); sum over replicas."
    ),
    "kissgen_prompt_cache_hits_total": MetricSpec("counter", "Prompt-embedding cache hits."),
    "kissgen_prompt_cache_misses_total": MetricSpec("counter", "Prompt-embedding cache misses."),
    "kissgen_gpu_memory_bytes": MetricSpec(
        "gauge", "torch.cuda.memory_allocated() of this replica (absent on CPU-only replicas)."
    ),
}

_lock = threading.Lock()
_instances: dict[str, Any] = {}
_tracked: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()


def _metric(name: str) -> Any | None:
    """The process's metric object for `name`, created on first use; None outside a Ray worker."""
    import ray

    if not ray.is_initialized():
        return None
    with _lock:
        metric = _instances.get(name)
        if metric is None:
            from ray.serve import metrics as serve_metrics

            spec = METRICS[name]
            # Ray annotates tag_keys as a 1-tuple (Tuple[str]); any tuple of names works.
            tags = cast("tuple[str] | None", spec.tag_keys or None)
            if spec.kind == "counter":
                metric = serve_metrics.Counter(name, spec.description, tag_keys=tags)
            elif spec.kind == "gauge":
                metric = serve_metrics.Gauge(name, spec.description, tag_keys=tags)
            else:
                metric = serve_metrics.Histogram(
                    name, spec.description, boundaries=list(spec.boundaries), tag_keys=tags
                )
            _instances[name] = metric
        return metric


def observe_stage(stage: str, seconds: float) -> None:
    histogram = _metric("kissgen_stage_seconds")
    if histogram is not None:
        histogram.observe(seconds, tags={"stage": stage})


def observe_stages(timings: Mapping[str, float]) -> None:
    """The generator's per-part timings (JobResult.timings), one observation each."""
    for stage, seconds in timings.items():
        observe_stage(stage, seconds)


@contextmanager
def timed_stage(stage: str) -> Iterator[None]:
    """Observes the block's duration whether it succeeds or raises (a refused photo took time too)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        observe_stage(stage, time.perf_counter() - start)


def record_gpu_memory() -> None:
    """Sets this replica's allocated CUDA memory. Reads torch only if the replica already imported it,
    so CPU replicas neither pay for the import nor report a misleading 0."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return
    gauge = _metric("kissgen_gpu_memory_bytes")
    if gauge is not None:
        gauge.set(float(torch.cuda.memory_allocated()))


def record_prompt_cache(hit: bool, count: int = 1) -> None:
    """For the diffusion backends' prompt-embedding cache: hit rate = hits / (hits + misses)."""
    counter = _metric("kissgen_prompt_cache_hits_total" if hit else "kissgen_prompt_cache_misses_total")
    if counter is not None and count > 0:
        counter.inc(count)


def track_job(task: asyncio.Task[Any]) -> asyncio.Task[Any]:
    """Counts a job run by the ingress: the queue depth gauge while it runs, its terminal status when
    it ends. Idempotent per task (a job started twice returns the same task); returns the task."""
    if task in _tracked:
        return task
    _tracked.add(task)
    _set_queue_depth()
    task.add_done_callback(_job_done)
    return task


def record_job_status(status: str) -> None:
    """Counts one job that reached `status` (completed, failed, canceled)."""
    counter = _metric("kissgen_jobs_total")
    if counter is not None and status in TERMINAL_STATUSES:
        counter.inc(tags={"status": status})


def _job_done(task: asyncio.Task[Any]) -> None:
    # A runner that was cancelled (DELETE, which counts `canceled` itself, or a graceful shutdown
    # handing the job back) or that raised (recovery picks the job up) did not end it: not counted.
    # Nor does a runner whose job a client canceled: the replica that took the cancel counted it.
    if not task.cancelled() and task.exception() is None:
        status = getattr(task.result(), "status", "")
        if status != "canceled":
            record_job_status(status)
    _set_queue_depth()


def _set_queue_depth() -> None:
    gauge = _metric("kissgen_queue_depth")
    if gauge is not None:
        gauge.set(float(sum(not t.done() for t in _tracked)))
