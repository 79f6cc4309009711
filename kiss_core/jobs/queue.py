"""Queue positions and ETAs of unfinished jobs, from their manifests and what finished jobs took.

Pure: no Ray, no I/O. The ingress feeds it the unfinished jobs (JobStore.queued(), cached per replica)
and each completed job's timings; it answers, for any job, where it stands in the line for a generator
slot and when it is expected to be done.

A job *waits* while it is queued or in progress before its generation started (stages queued, analysis,
identity): generation requests line up in Serve in front of the generator deployment, one video at a
time per replica, in the order they were sent (creation order, near enough). Once the generator has
it (stage generation and later), it *runs*.

The ETA model: per backend (and diffusion quality), an exponential moving average of generator seconds
per unit of work, a unit being one frame-megapixel (frames x width x height / 1e6): the preview
compositor and the diffusion backends both scale with it. A running job has the share of its own
estimate its progress says is left (generation reports 10 % when it starts, 100 % when stored); a
waiting job starts when a slot frees up, the work ahead of it list-scheduled over the generator's
replicas (slots), then takes its own estimate. Before a job of that backend has completed on this
replica the rate is unknown and the ETA is None ("estimating...").
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kiss_core.schemas import TERMINAL_STATUSES, JobManifest

WAITING_STAGES: frozenset[str] = frozenset({"queued", "analysis", "identity"})
_GENERATION_START = 10  # percent the generation stage reports when a generator picks the job up


def work_units(width: int, height: int, frames: int) -> float:
    """Frame-megapixels: what a job asks of a generator."""
    return max(1, frames) * width * height / 1e6


@dataclass(frozen=True)
class QueueEntry:
    """What the queue needs to know of one job."""

    job_id: str
    created_at: float  # POSIX seconds: the order of the line
    status: str
    stage: str
    progress: int
    kind: str  # the duration model's key: backend, plus the quality of a diffusion backend
    work: float  # frame-megapixels

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def waiting(self) -> bool:
        return self.status == "queued" or (self.status == "in_progress" and self.stage in WAITING_STAGES)

    @classmethod
    def from_job(cls, job: Mapping[str, Any], default_backend: str) -> QueueEntry:
        """From the job as the API shows it (JobManifest.public()) or its model_dump()."""
        params = job["params"]
        width, height = (int(v) for v in str(params["size"]).split("x"))
        frames = max(1, round(float(params["seconds"]) * int(params["fps"])))
        created = job["created_at"]
        if isinstance(created, str):
            created = datetime.fromisoformat(created)
        return cls(
            job_id=str(job["id"]),
            created_at=created.timestamp(),
            status=str(job["status"]),
            stage=str(job["stage"]),
            progress=int(job["progress"]),
            kind=duration_kind(params.get("backend") or default_backend, params.get("quality")),
            work=work_units(width, height, frames),
        )

    @classmethod
    def from_manifest(cls, manifest: JobManifest, default_backend: str) -> QueueEntry:
        return cls.from_job(
            manifest.model_dump(include={"id", "created_at", "status", "stage", "progress", "params"}),
            default_backend,
        )


def duration_kind(backend: str, quality: str | None) -> str:
    """The preview's cost does not depend on the quality; a diffusion backend's does (steps, guidance)."""
    return backend if backend == "preview" else f"{backend}:{quality or 'default'}"


@dataclass
class DurationModel:
    """Seconds of generation per frame-megapixel, per kind of job: an exponential moving average."""

    alpha: float = 0.5  # weight of the newest observation
    rates: dict[str, float] = field(default_factory=dict)
    observations: dict[str, int] = field(default_factory=dict)

    def learn(self, kind: str, work: float, seconds: float) -> None:
        if work <= 0 or seconds <= 0:
            return
        rate = seconds / work
        old = self.rates.get(kind)
        self.rates[kind] = rate if old is None else self.alpha * rate + (1 - self.alpha) * old
        self.observations[kind] = self.observations.get(kind, 0) + 1

    def estimate(self, kind: str, work: float) -> float | None:
        """Expected seconds for a whole job of this kind and size; None before any was seen."""
        rate = self.rates.get(kind)
        return None if rate is None else rate * work

    def learn_job(self, manifest: JobManifest, default_backend: str) -> bool:
        """Learns from a completed job's generator timings; False when it has none to learn from."""
        result = manifest.result
        if manifest.status != "completed" or result is None or not result.timings:
            return False
        entry = QueueEntry.from_manifest(manifest, default_backend)
        self.learn(entry.kind, entry.work, sum(result.timings.values()))
        return True


@dataclass(frozen=True)
class QueueInfo:
    queue_position: int | None
    eta_s: float | None

    def fields(self) -> dict[str, Any]:
        eta = None if self.eta_s is None else round(self.eta_s, 1)
        return {"queue_position": self.queue_position, "eta_s": eta}


NOTHING = QueueInfo(None, None)


class QueueView:
    """A snapshot of the line: positions and ETAs of the given unfinished jobs.

    `group` maps a job's kind to the generator deployment that runs it (jobs of different generators do
    not wait for each other); `slots` says how many replicas (one video each) a generator has.
    """

    def __init__(
        self,
        entries: Iterable[QueueEntry],
        model: DurationModel,
        slots: Callable[[str], int] = lambda group: 1,
        group: Callable[[str], str] = lambda kind: "generator",
    ):
        self.entries = sorted((e for e in entries if not e.terminal), key=lambda e: (e.created_at, e.job_id))
        self.ids = {e.job_id for e in self.entries}
        self.model = model
        self.slots = slots
        self.group = group

    def remaining(self, entry: QueueEntry) -> float | None:
        """Seconds of generator time the job still needs."""
        whole = self.model.estimate(entry.kind, entry.work)
        if whole is None or not entry.waiting:
            if whole is None:
                return None
            done = (entry.progress - _GENERATION_START) / (100 - _GENERATION_START)
            return whole * min(1.0, max(0.0, 1.0 - done))
        return whole

    def info(self, entry: QueueEntry) -> QueueInfo:
        """Queue position (waiting jobs only) and ETA of `entry`, which need not be in the snapshot (a job
        created since is placed after everything older in its line)."""
        if entry.terminal:
            return NOTHING
        if not entry.waiting:
            return QueueInfo(None, self.remaining(entry))
        line = self.group(entry.kind)
        same = [e for e in self.entries if e.job_id != entry.job_id and self.group(e.kind) == line]
        running = [e for e in same if not e.waiting]
        ahead = [e for e in same if e.waiting and (e.created_at, e.job_id) < (entry.created_at, entry.job_id)]
        position = len(ahead) + 1
        own = self.remaining(entry)
        if own is None:
            return QueueInfo(position, None)
        start = _start_time(
            [self.remaining(e) for e in running], [self.remaining(e) for e in ahead], max(1, self.slots(line))
        )
        return QueueInfo(position, None if start is None else start + own)


def _start_time(running: Sequence[float | None], ahead: Sequence[float | None], slots: int) -> float | None:
    """When a job behind `ahead` gets a slot: the running jobs' remaining time occupies the slots, then
    each job ahead takes the slot that frees first (list scheduling). None if any estimate is unknown."""
    if any(s is None for s in (*running, *ahead)):
        return None
    free = [0.0] * slots
    for seconds in (*running, *ahead):
        assert seconds is not None
        heapq.heapreplace(free, free[0] + seconds)
    return free[0]
