"""LiveJobs (deployments.http.events) on a real local store, without Serve: the stream's framing, its end
after max_stream_s, heartbeats, a job erased while watched, slots, and the shared queue snapshot.

The HTTP request is the one stand-in (`ConnectedClient`): only its is_disconnected() is used."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from deployments.http.events import LiveJobs, last_event_id
from kiss_core.errors import InvalidRequest, ServerError, TooManyStreams
from kiss_core.jobs.store import JobStore
from kiss_core.schemas import VideoParams
from kiss_core.settings import EventSettings
from kiss_core.storage import LocalDirStore
from tests.support.mean_face import mean_face_analysis


class ConnectedClient:
    """Stand-in for starlette's Request: a client that stays connected."""

    def __init__(self, header: str | None = None, query: str | None = None):
        self.headers = {} if header is None else {"last-event-id": header}
        self.query_params = {} if query is None else {"last_event_id": query}

    async def is_disconnected(self) -> bool:
        return False


@pytest.fixture
def jobs(tmp_path: Path) -> JobStore:
    return JobStore(LocalDirStore(tmp_path))


def _create(jobs: JobStore) -> str:
    analyses = {s: mean_face_analysis(s, (480, 600), (140, 200, 340, 440), 0.0, 0.0) for s in "ab"}
    params = VideoParams(seconds=1, fps=8, size="256x144")
    return jobs.create(params, {"a": b"a", "b": b"b"}, analyses).id


def _live(jobs: JobStore, **settings: Any) -> LiveJobs:
    events = {"poll_interval_s": 0.05, "heartbeat_s": 0.2, "max_stream_s": 5.0, "max_streams": 2} | settings
    return LiveJobs(EventSettings(**events), jobs, "preview")


async def _collect(live: LiveJobs, job_id: str, last_id: int = 0, during: Any = None) -> list[str]:
    first = await live.view(live.jobs.get(job_id))
    chunks = []
    stream = live.stream(ConnectedClient(), first, last_id, live.reserve())  # type: ignore[arg-type]
    task = asyncio.create_task(during()) if during else None
    async for chunk in stream:
        chunks.append(chunk)
    if task:
        await task
    return chunks


def _events(chunks: list[str]) -> list[dict[str, Any]]:
    found = []
    for chunk in chunks:
        lines = dict(line.split(": ", 1) for line in chunk.strip().split("\n") if not line.startswith(":"))
        if "data" in lines:
            found.append({"id": lines.get("id"), "event": lines["event"], "data": json.loads(lines["data"])})
    return found


def test_a_stream_sends_changes_then_ends_at_the_terminal_state(jobs: JobStore) -> None:
    job_id = _create(jobs)
    live = _live(jobs)

    async def work() -> None:
        for stage, percent in (("identity", 0), ("generation", 10), ("generation", 50)):
            await asyncio.sleep(0.1)
            jobs.update(job_id, status="in_progress", stage=stage, progress=percent)
        await asyncio.sleep(0.3)  # quiet for longer than a heartbeat
        jobs.fail(job_id, ServerError("the generator failed").to_problem())

    chunks = asyncio.run(_collect(live, job_id, during=work))
    events = _events(chunks)
    assert [e["data"]["revision"] for e in events] == [1, 2, 3, 4, 5]
    assert [e["id"] for e in events] == ["1", "2", "3", "4", "5"]
    assert events[-1]["data"]["status"] == "failed" and ": hb\n\n" in chunks
    assert live.open_streams == 0 and live.watched() == 0


def test_resume_sends_only_newer_revisions_and_nothing_for_an_ended_job(jobs: JobStore) -> None:
    job_id = _create(jobs)
    jobs.update(job_id, status="in_progress", stage="identity")
    jobs.update(job_id, status="canceled")
    live = _live(jobs)
    assert [e["data"]["revision"] for e in _events(asyncio.run(_collect(live, job_id, last_id=1)))] == [3]
    assert asyncio.run(_collect(live, job_id, last_id=3)) == []


def test_the_server_ends_a_long_stream_with_a_retry_line(jobs: JobStore) -> None:
    job_id = _create(jobs)
    live = _live(jobs, max_stream_s=0.5, retry_ms=1500)
    chunks = asyncio.run(_collect(live, job_id))
    assert chunks[-1] == "retry: 1500\n\n" and len(_events(chunks)) == 1
    assert live.open_streams == 0


def test_a_job_erased_while_watched_ends_the_stream_with_a_problem(jobs: JobStore) -> None:
    job_id = _create(jobs)
    live = _live(jobs)

    async def erase() -> None:
        await asyncio.sleep(0.2)
        jobs.delete(job_id)

    events = _events(asyncio.run(_collect(live, job_id, during=erase)))
    assert events[-1]["event"] == "error" and events[-1]["data"]["code"] == "not_found"


def test_slots_are_bounded_and_come_back_when_a_stream_is_closed_early(jobs: JobStore) -> None:
    job_id = _create(jobs)
    live = _live(jobs)

    async def scenario() -> None:
        first = await live.view(jobs.get(job_id))
        one = live.stream(ConnectedClient(), first, 0, live.reserve())  # type: ignore[arg-type]
        two = live.stream(ConnectedClient(), first, 0, live.reserve())  # type: ignore[arg-type]
        with pytest.raises(TooManyStreams) as refused:
            live.reserve()
        assert refused.value.status == 503 and int(refused.value.headers()["Retry-After"]) >= 1
        await one.__anext__()
        await one.aclose()  # the client went away mid-stream
        assert live.open_streams == 1
        await two.__anext__()
        await two.aclose()
        assert live.open_streams == 0

    asyncio.run(scenario())


def test_many_readers_share_one_queue_snapshot_per_interval(jobs: JobStore) -> None:
    ids = [_create(jobs) for _ in range(3)]
    live = _live(jobs, poll_interval_s=30)

    async def scenario() -> list[dict[str, Any]]:
        views = [await live.view(jobs.get(job_id)) for job_id in ids for _ in range(10)]
        return views

    views = asyncio.run(scenario())
    assert live.scans == 1, "thirty reads, one snapshot"
    assert [v["queue_position"] for v in views[::10]] == [1, 2, 3]
    assert all(v["eta_s"] is None for v in views), "no job has completed yet: no ETA"


def test_last_event_id_accepts_revisions_only() -> None:
    Request = ConnectedClient
    assert last_event_id(Request(None, None)) == 0  # type: ignore[arg-type]
    assert last_event_id(Request("7", "3")) == 7  # type: ignore[arg-type]
    assert last_event_id(Request(" ", "3")) == 3  # type: ignore[arg-type]
    for bad in ("abc", "-1", "1.5", "9" * 40):
        with pytest.raises(InvalidRequest):
            last_event_id(Request(bad, None))  # type: ignore[arg-type]


def test_a_job_without_a_queue_marker_does_not_force_a_read_per_request(jobs: JobStore) -> None:
    job_id = _create(jobs)
    live = _live(jobs, poll_interval_s=30)

    async def scenario() -> tuple[int, int]:
        await live.view(jobs.get(job_id))
        jobs.store.delete_prefix("queue/")  # as for a job accepted before markers existed
        await live.view(jobs.get(job_id))  # the snapshot holds it still: no read
        live._view_at = -float("inf")  # the interval passed
        await live.view(jobs.get(job_id))  # one read, which no longer finds it...
        before = live.scans
        for _ in range(5):
            view = await live.view(jobs.get(job_id))  # ...and no read per request after that
        assert view["queue_position"] == 1
        return before, live.scans

    before, after = asyncio.run(scenario())
    assert before == after == 2
