"""Webhooks through the real Serve application: a completed job delivers a signed `video.completed` to a
receiver in this test (127.0.0.1, allow-listed in the keyed app), and loopback URLs that are not
allow-listed are refused at submission."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from kiss_core.faces.synthetic import synthetic_subject_png
from tests.conftest import KeyedApp, ServeApp
from tests.serve.helpers import assert_problem, post_job, wait_terminal

PARAMS = {"style": "peck", "seconds": 1, "fps": 8, "size": "256x144"}


class Receiver:
    """An HTTP endpoint on 127.0.0.1 that records every webhook and answers 204."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture(scope="module")
def acme(keyed_app: KeyedApp) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {keyed_app.keys['acme']}"}
    with httpx.Client(base_url=keyed_app.url, timeout=60, headers=headers) as c:
        yield c


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks verification, written here from the spec (independent of kiss_core)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, s) for s in headers["webhook-signature"].split(" "))


def test_completed_job_delivers_a_signed_webhook(
    keyed_app: KeyedApp, acme: httpx.Client, receiver: Receiver
) -> None:
    url = f"http://127.0.0.1:{receiver.port}/hooks/kiss?source=test"
    response = post_job(acme, synthetic_subject_png(0), synthetic_subject_png(1), webhook_url=url, **PARAMS)
    assert response.status_code == 202, response.text
    video_id = response.json()["id"]
    job = wait_terminal(acme, response.headers["location"])
    assert job["status"] == "completed", job.get("error")

    deadline = time.monotonic() + 30
    while not receiver.received and time.monotonic() < deadline:
        time.sleep(0.1)
    (path, headers, body), *rest = receiver.received
    assert rest == [] and path == "/hooks/kiss?source=test"
    assert verify(keyed_app.webhook_secret, headers, body), headers
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    event = json.loads(body)
    assert event["type"] == "video.completed" and event["timestamp"].endswith("Z")
    assert event["data"]["id"] == video_id and event["data"]["status"] == "completed"
    assert event["data"]["links"]["content"] == f"/v1/videos/{video_id}/content"
    standardwebhooks = pytest.importorskip("standardwebhooks")
    assert standardwebhooks.Webhook(keyed_app.webhook_secret).verify(body, headers) == event

    deadline = time.monotonic() + 10
    while (delivery := acme.get(f"/v1/videos/{video_id}").json()["webhook"])["status"] == "pending":
        assert time.monotonic() < deadline, delivery
        time.sleep(0.2)
    assert (
        delivery["status"] == "delivered"
        and delivery["attempts"] == 1
        and delivery["last_status_code"] == 204
    )
    assert delivery["message_id"] == headers["webhook-id"]


@pytest.mark.parametrize(
    "url", ["http://127.0.0.2:9/hook", "https://localhost/hook", "https://10.0.0.1/hook"]
)
def test_non_public_webhook_urls_are_refused(acme: httpx.Client, url: str) -> None:
    """127.0.0.1 is allow-listed in this app; 127.0.0.2, localhost (a name) and private ranges are not."""
    response = post_job(acme, synthetic_subject_png(0), synthetic_subject_png(1), webhook_url=url, **PARAMS)
    body = assert_problem(response, 422, "webhook_url_refused")
    assert "loopback" in body["detail"] or "private" in body["detail"], body


def test_loopback_webhook_is_refused_without_an_allow_list(serve_app: ServeApp, receiver: Receiver) -> None:
    with httpx.Client(base_url=serve_app.url, timeout=60) as client:
        url = f"http://127.0.0.1:{receiver.port}/hook"
        response = post_job(
            client, synthetic_subject_png(0), synthetic_subject_png(1), webhook_url=url, **PARAMS
        )
    body = assert_problem(response, 422, "webhook_url_refused")
    assert "127.0.0.1, a loopback address" in body["detail"]
    assert all(path != "/hook" for path, _, _ in receiver.received), "nothing was sent there"
