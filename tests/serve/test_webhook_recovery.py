"""A webhook outlives the ingress replica that ended its job: the receiver stalls the first delivery, the
replica is killed mid-way, and the replica Serve starts in its place delivers the event again under the
same webhook-id: one logical event (one id), two deliveries."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from kiss_core.faces.synthetic import synthetic_subject_png
from kiss_core.jobs.store import JobStore
from kiss_core.jobs.webhooks import new_secret
from kiss_core.storage import LocalDirStore
from tests.conftest import graph_copy
from tests.serve.helpers import post_job, wait_terminal

pytestmark = pytest.mark.slow  # its own graph, a replica killed and replaced: about a minute

APP = "kissgen_hooks"
PARAMS = {"style": "peck", "seconds": 1, "fps": 8, "size": "256x144"}


class StallingReceiver:
    """Records every webhook; the first request is held unanswered until `release` (or 120 s)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.received.append(({k.lower(): v for k, v in self.headers.items()}, json.loads(body)))
                if len(outer.received) == 1:
                    outer.release.wait(120)
                try:
                    self.send_response(204)
                    self.end_headers()
                except OSError:  # the sender died meanwhile
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[StallingReceiver]:
    r = StallingReceiver()
    yield r
    r.release.set()
    r.server.shutdown()
    r.server.server_close()


def _ingress_replicas() -> list[str]:
    import ray

    names = ray.util.list_named_actors(all_namespaces=True)
    return [a["name"] for a in names if a["name"].startswith(f"SERVE_REPLICA::{APP}#Ingress#")]


def test_a_webhook_is_delivered_by_the_replica_that_replaces_a_killed_one(
    http_port: int, tmp_path: Path, receiver: StallingReceiver
) -> None:
    import ray

    root = tmp_path / "store"
    settings = {
        "storage": {"backend": "local", "local_root": str(root)},
        "jobs": {"lease_s": 3, "recovery_interval_s": 1},
        "webhooks": {
            "secret": new_secret(),
            "allow_hosts": ["127.0.0.1"],
            "timeout_s": 60,  # the stalled first attempt does not time out before the kill
            "backoff_s": 0.2,
        },
    }
    with (
        graph_copy(APP, "/hooks", settings, http_port) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        photos = synthetic_subject_png(0), synthetic_subject_png(1)
        response = post_job(client, *photos, webhook_url=receiver.url, **PARAMS)
        assert response.status_code == 202, response.text
        video_id = response.json()["id"]
        assert wait_terminal(client, f"/v1/videos/{video_id}")["status"] == "completed"

        deadline = time.monotonic() + 30
        while not receiver.received:  # the first delivery is on its way, and held
            assert time.monotonic() < deadline, "no webhook was sent"
            time.sleep(0.05)
        jobs = JobStore(LocalDirStore(root))
        assert jobs.get(video_id).webhook.status == "pending"  # type: ignore[union-attr]
        (replica,) = _ingress_replicas()
        ray.kill(ray.get_actor(replica, namespace="serve"), no_restart=True)

        deadline = time.monotonic() + 120
        while (webhook := jobs.get(video_id).webhook) is None or webhook.status == "pending":
            assert time.monotonic() < deadline, f"not redelivered: {webhook}"
            time.sleep(0.25)
        assert webhook.status == "delivered", webhook
        assert _ingress_replicas() != [replica], "Serve replaced the killed replica"

    ids = {headers["webhook-id"] for headers, _ in receiver.received}
    assert len(ids) == 1, f"one logical event, got {ids}"
    assert len(receiver.received) == 2, "the stalled delivery and the replacement's"
    assert {event["data"]["id"] for _, event in receiver.received} == {video_id}
    assert {event["type"] for _, event in receiver.received} == {"video.completed"}
    assert webhook.message_id in ids
    assert jobs.pending_webhooks() == []
