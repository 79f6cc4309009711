"""Webhooks without Ray: address checks against SSRF, Standard Webhooks signatures checked by an
independent implementation (and the `standardwebhooks` package when installed), and delivery with
retries against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kiss_core.errors import WebhookUrlRefused
from kiss_core.jobs.webhooks import (
    EVENT_COMPLETED,
    WebhookSender,
    check_url,
    message_id,
    new_secret,
    sign,
    signature_headers,
)
from kiss_core.settings import WebhookSettings

SECRET = new_secret()


def public_dns(host: str, port: int) -> list[str]:
    """A resolver for names that must not depend on the network here: example.org is 93.184.215.14."""
    answers = {"example.org": ["93.184.215.14"], "dual.example": ["93.184.215.14", "10.1.2.3"]}
    if host not in answers:
        raise OSError(f"{host}: Name or service not known")
    return answers[host]


def independent_verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's side, written from the Standard Webhooks spec, not from kiss_core.jobs.webhooks."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = headers["webhook-id"].encode() + b"." + headers["webhook-timestamp"].encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        version == "v1" and hmac.compare_digest(value, expected)
        for version, _, value in (s.partition(",") for s in headers["webhook-signature"].split(" "))
    )


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1/hook", "loopback"),
        ("https://127.8.9.10:8443/hook", "loopback"),
        ("https://[::1]/hook", "loopback"),
        ("https://10.0.0.5/hook", "private"),
        ("https://172.16.0.1/hook", "private"),
        ("https://172.31.255.254/hook", "private"),
        ("https://192.168.1.1/hook", "private"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://[fe80::1]/hook", "link-local"),
        ("https://[::ffff:127.0.0.1]/hook", "loopback"),
        ("https://0.0.0.0/hook", "unspecified"),
        ("https://224.0.0.1/hook", "multicast"),
        ("https://localhost/hook", "loopback"),  # a name, resolved by the system resolver
        ("https://dual.example/hook", "private"),  # one bad address among good ones is enough
    ],
)
def test_non_public_addresses_are_refused(url: str, reason: str) -> None:
    def resolve(host: str, port: int) -> list[str]:
        if host == "localhost":
            from kiss_core.jobs.webhooks import system_resolver

            return system_resolver(host, port)
        return public_dns(host, port)

    with pytest.raises(WebhookUrlRefused, match=reason) as refused:
        check_url(url, WebhookSettings(), resolve)
    assert refused.value.to_problem()["code"] == "webhook_url_refused"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://example.org/hook", "must use https"),
        ("ftp://example.org/hook", "absolute https URL"),
        ("https://user:pw@example.org/hook", "credentials"),
        ("https:///nohost", "absolute https URL"),
        ("https://example.org:99999/hook", "not a valid URL"),
        ("https://no-such-host.invalid/hook", "does not resolve"),
        ("https://example.org/" + "x" * 3000, "the limit is 2048"),
    ],
)
def test_malformed_or_insecure_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(WebhookUrlRefused, match=reason):
        check_url(url, WebhookSettings(), public_dns)


def test_public_https_passes_and_the_allow_list_opens_loopback() -> None:
    checked = check_url("https://Example.org/hooks/kiss?x=1", WebhookSettings(), public_dns)
    assert checked.addresses == ("93.184.215.14",) and checked.host == "example.org"
    assert checked.url_for(checked.addresses[0]) == "https://93.184.215.14:443/hooks/kiss?x=1"
    assert checked.host_header == "example.org"

    by_host = WebhookSettings(allow_hosts=["127.0.0.1", "localhost"])
    assert check_url("http://127.0.0.1:9/x", by_host).addresses == ("127.0.0.1",)
    assert "127.0.0.1" in check_url("http://localhost:9/x", by_host).addresses
    by_network = WebhookSettings(allow_networks=["10.0.0.0/8"])
    assert check_url("http://10.2.3.4/x", by_network).host == "10.2.3.4"
    with pytest.raises(WebhookUrlRefused, match="loopback"):
        check_url("https://127.0.0.1/x", by_network)


def test_signature_is_standard_webhooks() -> None:
    body = json.dumps({"type": EVENT_COMPLETED, "data": {"id": "video_1"}}).encode()
    headers = signature_headers(SECRET, "msg_1", int(time.time()), body)
    assert headers["webhook-signature"].startswith("v1,")
    assert independent_verify(SECRET, headers, body)
    assert not independent_verify(SECRET, headers, body + b" ")
    assert not independent_verify(new_secret(), headers, body)
    # A fixed vector: HMAC-SHA256 over "msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{body}".
    key = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    vector = sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert vector == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_verifies_with_the_standardwebhooks_package() -> None:
    standardwebhooks = pytest.importorskip("standardwebhooks")
    body = b'{"type":"video.completed"}'
    headers = signature_headers(SECRET, "msg_2", int(time.time()), body)
    assert standardwebhooks.Webhook(SECRET).verify(body, headers) == {"type": "video.completed"}


class Receiver:
    """A real HTTP server on 127.0.0.1 answering the statuses it is given in turn, recording requests."""

    def __init__(self, statuses: list[int]):
        self.statuses = statuses
        self.requests: list[tuple[dict[str, str], bytes, float]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests.append(
                    ({k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                )
                status = receiver.statuses[min(len(receiver.requests), len(receiver.statuses)) - 1]
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/kiss"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flaky_receiver() -> Iterator[Receiver]:
    receiver = Receiver([500, 503, 204])
    yield receiver
    receiver.close()


def test_delivery_retries_with_backoff_until_2xx(flaky_receiver: Receiver) -> None:
    settings = WebhookSettings(secret=SECRET, allow_hosts=["127.0.0.1"], backoff_s=0.1, max_attempts=5)
    sender = WebhookSender(settings)
    event = {"type": EVENT_COMPLETED, "timestamp": "2026-11-25T12:00:00Z", "data": {"id": "video_1"}}
    seen: list[tuple[str, int]] = []

    async def record(delivery: Any) -> None:
        seen.append((delivery.status, delivery.attempts))

    msg = message_id("video_1", EVENT_COMPLETED)
    delivery = asyncio.run(sender.deliver(flaky_receiver.url, "public", event, msg, record))
    assert delivery.status == "delivered" and delivery.attempts == 3 and delivery.last_status_code == 204
    assert seen == [("pending", 0), ("pending", 1), ("pending", 2), ("delivered", 3)], (
        "recorded before each try"
    )
    times = [t for _, _, t in flaky_receiver.requests]
    assert len(times) == 3
    assert 0.08 <= times[1] - times[0] < 0.5 and 0.16 <= times[2] - times[1] < 0.8, "backoff doubles"
    ids = {headers["webhook-id"] for headers, _, _ in flaky_receiver.requests}
    assert ids == {msg}, "every retry carries the same message id"
    for headers, body, _ in flaky_receiver.requests:
        assert independent_verify(SECRET, headers, body)
        assert json.loads(body) == event and headers["content-type"] == "application/json"


def test_delivery_gives_up_after_max_attempts() -> None:
    receiver = Receiver([500])
    try:
        settings = WebhookSettings(secret=SECRET, allow_hosts=["127.0.0.1"], backoff_s=0.01, max_attempts=3)
        delivery = asyncio.run(WebhookSender(settings).deliver(receiver.url, "t", {"type": "x"}, "msg_x"))
    finally:
        receiver.close()
    assert delivery.status == "failed" and delivery.attempts == 3 and delivery.last_status_code == 500
    assert len(receiver.requests) == 3


def test_delivery_rechecks_dns_and_stops_on_rebinding(flaky_receiver: Receiver) -> None:
    """The name resolved to a public address at submission; at delivery it points at loopback."""
    answers = iter([["93.184.215.14"], ["127.0.0.1"]])
    sender = WebhookSender(WebhookSettings(secret=SECRET, backoff_s=0.01), resolve=lambda h, p: next(answers))
    assert sender.check("https://rebind.example/hook", "t").addresses == ("93.184.215.14",)
    delivery = asyncio.run(sender.deliver("https://rebind.example/hook", "t", {"type": "x"}, "msg_y"))
    assert (
        delivery.status == "refused" and delivery.attempts == 1 and "loopback" in (delivery.last_error or "")
    )
    assert flaky_receiver.requests == [], "nothing was sent"


def test_no_secret_means_no_webhooks() -> None:
    with pytest.raises(WebhookUrlRefused, match="secret"):
        WebhookSender(WebhookSettings(), resolve=public_dns).check("https://example.org/hook", "t")
    per_tenant = WebhookSender(WebhookSettings(), secret_for=lambda t: SECRET if t == "acme" else None)
    assert per_tenant.secret("acme") == SECRET and per_tenant.secret("other") is None


def test_events_for_completed_and_failed_jobs(tmp_path: Any) -> None:
    from datetime import UTC, datetime

    from kiss_core.jobs.store import JobStore
    from kiss_core.jobs.webhooks import EVENT_FAILED, event_for
    from kiss_core.schemas import VideoParams
    from kiss_core.storage import LocalDirStore
    from tests.support.mean_face import mean_face_analysis

    jobs = JobStore(LocalDirStore(tmp_path))
    analyses = {s: mean_face_analysis(s, (480, 600), (140, 200, 340, 440), 0.0, 0.0) for s in "ab"}
    job = jobs.create(VideoParams(), {"a": b"A", "b": b"B"}, analyses, webhook_url="https://example.org/h")
    problem = {
        "type": "t",
        "title": "Generation failed",
        "status": 500,
        "detail": "d",
        "code": "generation_error",
    }
    failed = jobs.fail(job.id, problem)
    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    event = event_for(failed, now, "https://api.example.com/")
    assert event["type"] == EVENT_FAILED and event["timestamp"] == "2026-11-25T12:00:00Z"
    data = event["data"]
    assert (
        isinstance(data, dict) and data["status"] == "failed" and data["error"]["code"] == "generation_error"
    )
    assert data["links"] == {"self": f"https://api.example.com/v1/videos/{job.id}"}, (
        "no content for a failure"
    )
    assert "webhook_url" not in failed.public() and "tenant" not in failed.public(), (
        "private fields stay private"
    )
    assert message_id(job.id, EVENT_FAILED) != message_id(job.id, EVENT_COMPLETED)
