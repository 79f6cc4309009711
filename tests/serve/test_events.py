"""The live job: GET /v1/videos/{id}/events (Server-Sent Events), queue positions and ETAs, through a real
Serve instance with API keys (a copy of the graph with short heartbeats and a bound of two streams)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from kiss_core.faces.synthetic import synthetic_subject_png
from kiss_core.jobs.access import hash_key, new_key
from kiss_core.schemas import TERMINAL_STATUSES
from tests.conftest import graph_copy
from tests.serve.helpers import assert_problem, post_job, wait_terminal

# Small jobs (about a second of generation here); LONG runs several seconds, long enough to hold streams.
QUICK = {"style": "peck", "seconds": 1, "fps": 8, "size": "256x144", "seed": 3}
LONG = {"style": "romantic", "seconds": 4, "fps": 24, "size": "640x368", "seed": 5}
HOLD = {"style": "romantic", "seconds": 10, "fps": 30, "size": "1280x720", "seed": 6}  # ~15 s here


@dataclass
class EventsApp:
    url: str
    keys: dict[str, str]


@pytest.fixture(scope="module")
def events_app(http_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EventsApp]:
    root: Path = tmp_path_factory.mktemp("events")
    keys = {tenant: new_key() for tenant in ("alice", "bob")}
    settings = {
        "storage": {"backend": "local", "local_root": str(root)},
        "access": {
            "required": True,
            "keys": [{"tenant": t, "key_sha256": hash_key(k)} for t, k in keys.items()],
            "rate_per_minute": 6000,
            "burst": 200,
        },
        "limits": {"max_active_jobs": 8},
        "events": {"poll_interval_s": 0.25, "heartbeat_s": 0.5, "max_stream_s": 60, "max_streams": 2},
    }
    with graph_copy("kissgen_events", "/events", settings, http_port) as url:
        yield EventsApp(url, keys)


@pytest.fixture(scope="module")
def client(events_app: EventsApp) -> Iterator[httpx.Client]:
    headers = {"X-API-Key": events_app.keys["alice"]}
    with httpx.Client(base_url=events_app.url, timeout=120, headers=headers) as c:
        yield c


@pytest.fixture(scope="module")
def subjects() -> tuple[bytes, bytes]:
    return synthetic_subject_png(0), synthetic_subject_png(1)


@dataclass
class Stream:
    """What one SSE connection delivered."""

    events: list[dict[str, Any]] = field(default_factory=list)  # {"id", "event", "data"}
    comments: list[str] = field(default_factory=list)
    retry: int | None = None
    closed: bool = False  # the server ended it

    @property
    def jobs(self) -> list[dict[str, Any]]:
        return [e["data"] for e in self.events if e["event"] == "job"]


def parse_sse(lines: Iterator[str], stream: Stream, stop_after_events: int | None = None) -> None:
    """Reads SSE lines into `stream` until the server closes it (or `stop_after_events` were read)."""
    fields: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "data" in fields:
                data = json.loads(fields["data"])
                stream.events.append(
                    {"id": fields.get("id"), "event": fields.get("event", "message"), "data": data}
                )
                if stop_after_events is not None and len(stream.events) >= stop_after_events:
                    return
            fields = {}
            continue
        if line.startswith(":"):
            stream.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "retry":
            stream.retry = int(value)
        else:
            fields[name] = fields.get(name, "") + value if name == "data" and name in fields else value
    stream.closed = True


def read_stream(
    client: httpx.Client,
    video_id: str,
    last_event_id: int | None = None,
    stop_after_events: int | None = None,
) -> Stream:
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    stream = Stream()
    with client.stream("GET", f"/v1/videos/{video_id}/events", headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        parse_sse(response.iter_lines(), stream, stop_after_events)
    return stream


def submit(client: httpx.Client, subjects: tuple[bytes, bytes], params: dict[str, Any]) -> dict[str, Any]:
    response = post_job(client, *subjects, **params)
    assert response.status_code == 202, response.text
    return response.json()


@pytest.mark.slow
def test_stream_sends_every_change_in_order_and_ends_at_the_terminal_state(
    client: httpx.Client, subjects: tuple[bytes, bytes]
) -> None:
    job = submit(client, subjects, QUICK)
    stream = read_stream(client, job["id"])
    jobs = stream.jobs
    assert stream.closed and stream.retry is None
    assert jobs[0]["status"] in ("queued", "in_progress") and jobs[-1]["status"] == "completed"
    assert [j["status"] for j in jobs].count("completed") == 1, "nothing after the terminal event"
    revisions = [j["revision"] for j in jobs]
    assert revisions == sorted(set(revisions)), f"revisions strictly increase: {revisions}"
    assert [e["id"] for e in stream.events] == [str(r) for r in revisions]
    progress = [j["progress"] for j in jobs]
    assert progress == sorted(progress) and progress[-1] == 100
    assert {"generation", "done"} <= {j["stage"] for j in jobs}, [j["stage"] for j in jobs]
    final = client.get(f"/v1/videos/{job['id']}").json()
    assert jobs[-1] == final, "an event carries exactly what GET /v1/videos/{id} returns"
    assert final["queue_position"] is None and final["eta_s"] is None
    assert stream.comments.count("hb") >= 0  # heartbeats may or may not fall between the changes

    # Resuming from any revision sends only what is newer; from the last one, nothing (the job ended).
    middle = revisions[len(revisions) // 2]
    resumed = read_stream(client, job["id"], last_event_id=middle)
    assert resumed.closed and [j["revision"] for j in resumed.jobs] == [revisions[-1]]
    assert read_stream(client, job["id"], last_event_id=revisions[-1]).events == []
    by_query = client.get(f"/v1/videos/{job['id']}/events", params={"last_event_id": revisions[-1]})
    assert by_query.status_code == 200 and "event: job" not in by_query.text


@pytest.mark.slow
def test_resume_mid_job_skips_seen_revisions_and_heartbeats_flow(
    client: httpx.Client, subjects: tuple[bytes, bytes]
) -> None:
    ahead = submit(client, subjects, LONG)
    job = submit(client, subjects, QUICK)  # waits several seconds behind `ahead`: no changes meanwhile
    first = read_stream(client, job["id"], stop_after_events=1)
    seen = int(first.events[-1]["id"])
    rest = read_stream(client, job["id"], last_event_id=seen)
    assert rest.closed and rest.jobs and rest.jobs[-1]["status"] == "completed"
    assert all(j["revision"] > seen for j in rest.jobs)
    assert "hb" in rest.comments, "a job that waits with 0.5 s heartbeats shows heartbeats"
    assert wait_terminal(client, f"/v1/videos/{ahead['id']}")["status"] == "completed"


@pytest.mark.slow
def test_streams_are_bounded_per_replica_and_a_client_that_leaves_frees_its_slot(
    client: httpx.Client, events_app: EventsApp, subjects: tuple[bytes, bytes]
) -> None:
    job = submit(client, subjects, HOLD)
    url = f"/v1/videos/{job['id']}/events"
    with client.stream("GET", url) as one, client.stream("GET", url) as two:
        assert one.status_code == two.status_code == 200
        lines = [one.iter_lines(), two.iter_lines()]  # kept: a dropped iterator closes its connection
        assert all(next(it).startswith("id: ") for it in lines), "both are open and sending"
        refused = client.get(url)
        assert refused.status_code == 503, refused.text[:300]
        body = assert_problem(refused, 503, "too_many_streams")
        assert int(refused.headers["retry-after"]) >= 1 and "GET /v1/videos" in body["title"] + body["detail"]
        # GET of the job still works while the streams are open.
        assert client.get(f"/v1/videos/{job['id']}").status_code == 200
        two.close()  # this client leaves; its slot must come back while `one` stays open
        deadline = time.monotonic() + 30
        while True:
            with client.stream("GET", url) as again:
                if again.status_code == 200:
                    break
                again.read()
                assert again.status_code == 503
            assert time.monotonic() < deadline, "the slot of a closed stream was never freed"
            time.sleep(0.2)
    wait_terminal(client, f"/v1/videos/{job['id']}")


@pytest.mark.slow
def test_queue_position_decreases_as_jobs_ahead_finish_and_eta_is_close(
    client: httpx.Client, subjects: tuple[bytes, bytes]
) -> None:
    # One generator replica (local profile): three jobs line up behind each other.
    created = [submit(client, subjects, QUICK) for _ in range(3)]
    last = created[-1]["id"]
    positions: list[int | None] = []
    while True:
        job = client.get(f"/v1/videos/{last}").json()
        positions.append(job["queue_position"])
        if job["status"] in TERMINAL_STATUSES:
            break
        time.sleep(0.1)
    assert job["status"] == "completed"
    waiting = [p for p in positions if p is not None]
    assert waiting and waiting[0] >= 2, positions
    assert waiting == sorted(waiting, reverse=True), f"the position only goes down: {positions}"
    assert len(set(waiting)) >= 2 and positions[-1] is None, positions
    listed = client.get("/v1/videos", params={"limit": 5}).json()["data"]
    assert all("queue_position" in j and "eta_s" in j for j in listed)

    # The service has now seen preview jobs of this size complete: a new one gets an ETA, and it holds.
    job = submit(client, subjects, QUICK)
    eta = client.get(f"/v1/videos/{job['id']}").json()["eta_s"]
    done = wait_terminal(client, f"/v1/videos/{job['id']}")
    actual = _seconds(done["completed_at"]) - _seconds(done["created_at"])
    assert eta is not None, "an ETA after the first completed job"
    assert abs(eta - actual) <= 0.5 * actual, f"ETA {eta:.1f} s vs actual {actual:.1f} s"


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def test_hostile_input_gets_problem_json(
    client: httpx.Client, events_app: EventsApp, subjects: tuple[bytes, bytes]
) -> None:
    assert_problem(client.get("/v1/videos/video_0000/events"), 404, "not_found")
    assert_problem(client.get("/v1/videos/..%2f..%2fetc/events"), 404, "not_found")
    job = submit(client, subjects, QUICK)
    url = f"/v1/videos/{job['id']}/events"
    assert_problem(client.get(url, headers={"Last-Event-ID": "abc"}), 422, "invalid_request")
    assert_problem(client.get(url, params={"last_event_id": "-1"}), 422, "invalid_request")
    assert_problem(client.get(url, headers={"Last-Event-ID": "9" * 40}), 422, "invalid_request")
    # Another tenant's job does not exist for you; no key at all is 401.
    bob = {"X-API-Key": events_app.keys["bob"]}
    assert_problem(client.get(url, headers=bob), 404, "not_found")
    with httpx.Client(base_url=events_app.url, timeout=30) as anonymous:
        assert_problem(anonymous.get(url), 401, "unauthorized")
    wait_terminal(client, f"/v1/videos/{job['id']}")
