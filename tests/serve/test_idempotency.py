"""Idempotency-Key on POST /v1/videos through the real Serve application."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from kiss_core.faces.synthetic import synthetic_subject_png
from tests.conftest import ServeApp
from tests.serve.helpers import assert_problem, post_job, wait_terminal

PARAMS = {"style": "peck", "seconds": 1, "fps": 8, "size": "256x144"}


@pytest.fixture(scope="module")
def client(serve_app: ServeApp) -> httpx.Client:
    with httpx.Client(base_url=serve_app.url, timeout=60) as c:
        yield c


def _post(client: httpx.Client, key: str, style: str = "peck") -> httpx.Response:
    client.headers["Idempotency-Key"] = key
    try:
        return post_job(
            client, synthetic_subject_png(0), synthetic_subject_png(1), **{**PARAMS, "style": style}
        )
    finally:
        del client.headers["Idempotency-Key"]


def test_same_key_and_body_give_the_same_job(client: httpx.Client) -> None:
    key = secrets.token_hex(8)
    first = _post(client, key)
    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    wait_terminal(client, first.headers["location"])
    again = _post(client, key)
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"] and again.json()["status"] == "completed"


def test_same_key_with_another_body_is_refused(client: httpx.Client) -> None:
    key = secrets.token_hex(8)
    first = _post(client, key)
    assert first.status_code == 202
    assert_problem(_post(client, key, style="french"), 422, "idempotency_key_reused")
    wait_terminal(client, first.headers["location"])


def test_concurrent_retry_is_a_conflict(serve_app: ServeApp) -> None:
    key = secrets.token_hex(8)

    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=serve_app.url, timeout=60, headers={"Idempotency-Key": key}) as c:
            return post_job(c, synthetic_subject_png(0), synthetic_subject_png(1), **PARAMS)

    with ThreadPoolExecutor(max_workers=2) as pool:
        responses = list(pool.map(post, range(2)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202, 409], [r.text for r in responses]
    assert_problem(next(r for r in responses if r.status_code == 409), 409, "idempotency_key_in_flight")
    with httpx.Client(base_url=serve_app.url, timeout=60) as c:
        accepted = next(r for r in responses if r.status_code == 202)
        assert wait_terminal(c, accepted.headers["location"])["status"] == "completed"
