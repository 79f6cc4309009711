"""Client helpers shared by the tests that drive the real Serve application over HTTP."""

from __future__ import annotations

import time
from typing import Any

import httpx

from kiss_core.jobs.store import JobStore
from kiss_core.schemas import TERMINAL_STATUSES

CONSENT = {"consent_a": "true", "consent_b": "true"}


def post_job(
    client: httpx.Client, photo_a: bytes, photo_b: bytes, consent: dict[str, str] | None = None, **params: Any
) -> httpx.Response:
    """POST a job; both people's consent is attested unless `consent` says otherwise."""
    files = {"subject_a": ("a.png", photo_a, "image/png"), "subject_b": ("b.png", photo_b, "image/png")}
    data = {**(CONSENT if consent is None else consent), **{k: str(v) for k, v in params.items()}}
    return client.post("/v1/videos", data=data, files=files)


def under_base(client: httpx.Client, location: str) -> str:
    """A Location (the full path, route prefix included) as a path below the client's base_url."""
    prefix = client.base_url.path.rstrip("/")
    return location.removeprefix(prefix) if prefix and location.startswith(prefix + "/") else location


def wait_terminal(client: httpx.Client, location: str, timeout_s: float = 240.0) -> dict[str, Any]:
    location = under_base(client, location)
    deadline = time.monotonic() + timeout_s
    seen: set[str] = set()
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            response = client.get(location)
        except httpx.TransportError:  # a replica restarting: keep polling
            time.sleep(0.5)
            continue
        if response.status_code != 200:
            time.sleep(0.5)
            continue
        job = response.json()
        seen.add(job["status"])
        if job["status"] in TERMINAL_STATUSES:
            job["_seen_statuses"] = sorted(seen)
            return job
        time.sleep(0.25)
    raise TimeoutError(f"{location} not finished after {timeout_s}s; last: {job}")


def assert_problem(
    response: httpx.Response, status: int, code: str, subject: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["title"] and body["detail"] and body["type"].endswith(code)
    if subject is not None:
        assert body["subject"] == subject, body
    return body


def wait_started(jobs: JobStore, video_id: str, timeout_s: float = 60.0) -> str:
    """Polls the manifest until the job leaves `queued` (or the time is up); returns its status then."""
    deadline = time.monotonic() + timeout_s
    while (status := jobs.get(video_id).status) == "queued" and time.monotonic() < deadline:
        time.sleep(0.05)
    return status
