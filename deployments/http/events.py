"""The live side of the job object: queue position and ETA in every job the API returns, and the
Server-Sent Events stream GET /v1/videos/{id}/events.

Per ingress replica (`LiveJobs`):
- one snapshot of the queue (JobStore.queued(): the global markers plus a read of each unfinished
  manifest), refreshed at most every `events.poll_interval_s` however many requests and streams ask,
  and read again at once for a job it does not know yet (one that was just created);
- the duration model (kiss_core.jobs.queue), fed by this replica's runner with each job it completes
  and by every completed manifest a stream sees;
- one watcher task per watched job that reads its manifest every poll interval and hands the job
  object to all of that job's streams (one read per job, not per stream);
- the count of open streams, bounded by `events.max_streams` (503 too_many_streams past it).

A stream sends `event: job` with `id: <revision>` and the job object exactly as GET /v1/videos/{id}
returns it: at once (the current state, unless Last-Event-ID says the client has it), then on every
new revision or change of queue position; `: hb` after `events.heartbeat_s` without an event; it ends
after the terminal state's event, or after `events.max_stream_s` with a `retry:` line (the client
reconnects with Last-Event-ID). A job erased while watched gets `event: error` with a not_found
problem, then the stream ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from deployments.http.routes import app
from deployments.http.service import VideoService
from kiss_core.errors import InvalidRequest, JobNotFound, TooManyStreams
from kiss_core.jobs.access import Principal
from kiss_core.jobs.queue import DurationModel, QueueEntry, QueueView
from kiss_core.jobs.store import JobStore
from kiss_core.schemas import TERMINAL_STATUSES, JobManifest
from kiss_core.settings import EventSettings

log = logging.getLogger("kissgen.ingress")

_EVENT_ID = re.compile(r"^\d{1,15}$")
_LEARNED_MAX = 4096  # ids of completed jobs already learned from (so none counts twice)


class _Subscriber:
    """One open stream's mailbox: the newest job object of its job (older ones are superseded)."""

    def __init__(self) -> None:
        self.latest: dict[str, Any] | None = None
        self.gone = False
        self.changed = asyncio.Event()

    def push(self, body: dict[str, Any] | None) -> None:
        if body is None:
            self.gone = True
        else:
            self.latest = body
        self.changed.set()


class _Watch:
    """The watcher of one job and the streams it feeds."""

    def __init__(self) -> None:
        self.subscribers: set[_Subscriber] = set()
        self.latest: dict[str, Any] | None = None
        self.task: asyncio.Task[None] | None = None


class StreamSlot:
    """One of the replica's `max_streams`; released exactly once, also if the stream never started."""

    def __init__(self, live: LiveJobs):
        self._live: LiveJobs | None = live
        live.open_streams += 1

    def release(self) -> None:
        if self._live is not None:
            self._live.open_streams -= 1
            self._live = None


class LiveJobs:
    """Queue positions, ETAs and event streams of one ingress replica."""

    def __init__(
        self,
        settings: EventSettings,
        jobs: JobStore,
        default_backend: str,
        *,
        slots: Callable[[str], int] = lambda group: 1,
        group: Callable[[str], str] = lambda kind: "generator",
    ):
        self.settings = settings
        self.jobs = jobs
        self.default_backend = default_backend
        self.slots = slots
        self.group = group
        self.model = DurationModel()
        self.open_streams = 0
        self._learned: OrderedDict[str, None] = OrderedDict()
        self._view: QueueView | None = None
        self._view_at = -float("inf")  # loop time the snapshot's read started
        self._view_wall = -float("inf")  # the same as POSIX time (job creation times compare with it)
        self._view_ids: set[str] = set()
        self._refreshing: asyncio.Future[QueueView] | None = None
        self._watches: dict[str, _Watch] = {}
        self.scans = 0  # queue snapshots read (the bench and the tests look at it)

    # Durations -------------------------------------------------------------------------------------
    def learn(self, manifest: JobManifest) -> None:
        """A completed job's generator timings go into the duration model (once per job)."""
        if manifest.id in self._learned or manifest.status != "completed":
            return
        if self.model.learn_job(manifest, self.default_backend):
            self._learned[manifest.id] = None
            while len(self._learned) > _LEARNED_MAX:
                self._learned.popitem(last=False)

    # Queue snapshot ----------------------------------------------------------------------------------
    async def queue_view(self, need: QueueEntry | None = None) -> QueueView:
        """The replica's snapshot of the line, at most `poll_interval_s` old; read again at once when it
        was taken before the unfinished job `need` was created (a job it could not know yet; one without
        a marker, from before markers existed, forces nothing). Concurrent callers share one read."""
        loop = asyncio.get_running_loop()
        fresh = loop.time() - self._view_at < self.settings.poll_interval_s
        unknown = need is not None and need.job_id not in self._view_ids and self._view_wall < need.created_at
        if self._view is not None and fresh and not unknown:
            return self._view
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._read_view())
        return await asyncio.shield(self._refreshing)

    async def _read_view(self) -> QueueView:
        loop = asyncio.get_running_loop()
        started, wall = loop.time(), time.time()
        manifests = await asyncio.to_thread(self.jobs.queued)
        self.scans += 1
        entries = [QueueEntry.from_manifest(m, self.default_backend) for m in manifests]
        self._view = QueueView(entries, self.model, self.slots, self.group)
        self._view_at, self._view_wall, self._view_ids = started, wall, self._view.ids
        return self._view

    async def fields(self, job: dict[str, Any]) -> dict[str, Any]:
        """`queue_position` and `eta_s` of a job object (JobManifest.public())."""
        if job["status"] in TERMINAL_STATUSES:
            return {"queue_position": None, "eta_s": None}
        entry = QueueEntry.from_job(job, self.default_backend)
        try:
            view = await self.queue_view(need=entry)
        except Exception:  # storage briefly unreachable: the job object is still worth returning
            log.warning("queue snapshot failed", exc_info=True)
            return {"queue_position": None, "eta_s": None}
        return view.info(entry).fields()

    async def view(self, manifest: JobManifest) -> dict[str, Any]:
        """The job object as the API returns it: the manifest's public view plus queue position and ETA."""
        if manifest.status == "completed":
            self.learn(manifest)
        body = manifest.public()
        body.update(await self.fields(body))
        return body

    async def views(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A list page's job objects with their queue positions and ETAs (one snapshot for all)."""
        for job in jobs:
            job.update(await self.fields(job))
        return jobs

    # Streams -----------------------------------------------------------------------------------------
    def reserve(self) -> StreamSlot:
        if self.open_streams >= self.settings.max_streams:
            retry = max(1, round(self.settings.max_stream_s / 4))
            raise TooManyStreams(
                f"this replica has {self.open_streams} open event streams (the most it keeps is"
                f" {self.settings.max_streams}); retry later or poll GET /v1/videos/{{id}}",
                retry,
            )
        return StreamSlot(self)

    def subscribe(self, job_id: str) -> _Subscriber:
        watch = self._watches.get(job_id)
        if watch is None or watch.task is None or watch.task.done():
            watch = _Watch()
            self._watches[job_id] = watch
            watch.task = asyncio.get_running_loop().create_task(
                self._watch(job_id, watch), name=f"events-{job_id}"
            )
        subscriber = _Subscriber()
        if watch.latest is not None:
            subscriber.push(watch.latest)
        watch.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, job_id: str, subscriber: _Subscriber) -> None:
        watch = self._watches.get(job_id)
        if watch is not None:
            watch.subscribers.discard(subscriber)

    def watched(self) -> int:
        """Jobs with a watcher now."""
        return sum(1 for w in self._watches.values() if w.task is not None and not w.task.done())

    async def _watch(self, job_id: str, watch: _Watch) -> None:
        """Reads the job every poll interval while streams watch it and hands them each new revision or
        queue position; ends at the job's terminal state. A stream joining later gets `latest` at once."""
        pushed: tuple[int, int | None] | None = None
        try:
            while watch.subscribers:
                try:
                    manifest = await asyncio.to_thread(self.jobs.get, job_id)
                except JobNotFound:
                    for subscriber in list(watch.subscribers):
                        subscriber.push(None)
                    return
                except Exception:  # storage briefly unreachable: the streams keep their heartbeats
                    log.warning("events: reading job %s failed", job_id, exc_info=True)
                    await asyncio.sleep(self.settings.poll_interval_s)
                    continue
                body = await self.view(manifest)
                if (body["revision"], body["queue_position"]) != pushed:
                    pushed = (body["revision"], body["queue_position"])
                    watch.latest = body
                    for subscriber in list(watch.subscribers):
                        subscriber.push(body)
                if manifest.status in TERMINAL_STATUSES:
                    return
                await asyncio.sleep(self.settings.poll_interval_s)
        finally:
            if self._watches.get(job_id) is watch:
                del self._watches[job_id]

    async def stream(
        self, request: Request, first: dict[str, Any], last_id: int, slot: StreamSlot
    ) -> AsyncGenerator[str, None]:
        """The event stream of one client (the slot is released when it ends, however it ends)."""
        job_id = first["id"]
        subscriber = self.subscribe(job_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.max_stream_s
        sent_revision, sent_position = last_id, first["queue_position"]
        written = loop.time()  # when this stream last sent something (an event or a heartbeat)
        try:
            if first["revision"] > last_id:
                yield _event(first)
                sent_revision = first["revision"]
            if first["status"] in TERMINAL_STATUSES:
                return
            while True:
                now = loop.time()
                if now >= deadline:
                    yield f"retry: {self.settings.retry_ms}\n\n"
                    return
                if now - written >= self.settings.heartbeat_s:
                    if await request.is_disconnected():
                        return
                    yield ": hb\n\n"
                    written = now
                wait = min(written + self.settings.heartbeat_s, deadline) - now
                try:
                    await asyncio.wait_for(subscriber.changed.wait(), max(0.0, wait))
                except TimeoutError:
                    continue
                subscriber.changed.clear()
                if subscriber.gone:
                    yield _problem_event(job_id)
                    return
                body = subscriber.latest
                if body is None or body["revision"] < sent_revision:
                    continue
                if body["revision"] > sent_revision or body["queue_position"] != sent_position:
                    yield _event(body)
                    sent_revision, sent_position = body["revision"], body["queue_position"]
                    written = loop.time()
                if body["status"] in TERMINAL_STATUSES:
                    return
        finally:
            self.unsubscribe(job_id, subscriber)
            slot.release()


def _event(body: dict[str, Any]) -> str:
    data = json.dumps(body, separators=(",", ":"))
    return f"id: {body['revision']}\nevent: job\ndata: {data}\n\n"


def _problem_event(job_id: str) -> str:
    problem = JobNotFound(f"There is no video with id {job_id!r} (it was deleted).").to_problem()
    return f"event: error\ndata: {json.dumps(problem, separators=(',', ':'))}\n\n"


def last_event_id(request: Request) -> int:
    """The revision the client has seen: the Last-Event-ID header, else `?last_event_id=`; 0 if none."""
    raw = request.headers.get("last-event-id")
    if raw is None or not raw.strip():
        raw = request.query_params.get("last_event_id", "")
    raw = raw.strip()
    if not raw:
        return 0
    if not _EVENT_ID.match(raw):
        raise InvalidRequest(
            f"Last-Event-ID {raw[:40]!r} is not an event id this API sent (a revision number)",
            None,
            [{"field": "last_event_id", "message": "must be a non-negative integer"}],
        )
    return int(raw)


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventRoutes:
    """GET /v1/videos/{id}/events on the replica's LiveJobs."""

    service: VideoService
    live: LiveJobs
    _caller: Callable[[Request], Principal]

    @app.get(
        "/v1/videos/{video_id}/events",
        summary="Live progress of a video job (Server-Sent Events; Last-Event-ID resumes)",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "`event: job` per change."},
            503: {"description": "too_many_streams: this replica's bound; retry or poll."},
        },
    )
    async def video_events(self, video_id: str, request: Request) -> StreamingResponse:
        caller = self._caller(request)
        last_id = last_event_id(request)
        manifest = await self.service.job(caller, video_id)  # 404 for another tenant's job
        first = await self.live.view(manifest)
        slot = self.live.reserve()
        try:
            events = self.live.stream(request, first, last_id, slot)
            # A stream that never starts (the client left before the first byte) still frees its slot.
            weakref.finalize(events, slot.release)
        except BaseException:
            slot.release()
            raise
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
