"""A stage Serve cannot place: the job fails with stage_unavailable and Serve's reason after a bounded
wait, and /v1/health says which deployment and why at once (a real Serve app whose VideoGenerator asks
for a resource no node has)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kiss_core.faces.synthetic import synthetic_subject_png
from tests.serve.helpers import post_job, wait_terminal

pytestmark = pytest.mark.slow  # waits out a placement timeout; ~20 s to tear the app down

APP = "kissgen_unplaceable"
PREFIX = "/unplaceable"
PLACEABLE = ("Ingress", "FaceAnalyzer", "IdentityEncoder")


@pytest.fixture(scope="module")
def unplaceable_app(http_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from ray import serve
    from ray.serve.api import _run

    from graph import AppArgs, build_app

    root: Path = tmp_path_factory.mktemp("unplaceable")
    args = AppArgs(
        profile="local",
        settings={
            "storage": {"backend": "local", "local_root": str(root)},
            "jobs": {"placement_timeout_s": 4},
        },
        deployment_options={"VideoGenerator": {"ray_actor_options": {"resources": {"no_such_node": 1}}}},
    )
    # serve.run waits for the application to be RUNNING, which this one never is; _run need not.
    _run(build_app(args), name=APP, route_prefix=PREFIX, _blocking=False)
    url = f"http://127.0.0.1:{http_port}{PREFIX}"
    deadline = time.monotonic() + 180
    while True:  # the application never becomes RUNNING; every stage but the generator does
        try:
            running = httpx.get(f"{url}/v1/health", timeout=5).json()["deployments"]
            if all(
                running[name]["running_replicas"] for name in ("Ingress", "FaceAnalyzer", "IdentityEncoder")
            ):
                break
        except (httpx.TransportError, ValueError, KeyError):
            pass
        assert time.monotonic() < deadline, "the placeable stages of the app never all ran"
        time.sleep(1)
    try:
        yield url
    finally:
        serve.delete(APP)


def test_health_names_the_stage_that_cannot_run(unplaceable_app: str) -> None:
    response = httpx.get(f"{unplaceable_app}/v1/health", timeout=30)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    generator = body["deployments"]["VideoGenerator"]
    assert generator["running_replicas"] == 0 and generator["message"]
    assert body["deployments"]["FaceAnalyzer"]["running_replicas"] >= 1


def test_a_job_needing_that_stage_fails_with_stage_unavailable(unplaceable_app: str) -> None:
    with httpx.Client(base_url=unplaceable_app, timeout=60) as client:
        created = post_job(client, synthetic_subject_png(0), synthetic_subject_png(1), seconds=1, fps=8)
        assert created.status_code == 202, created.text
        job = wait_terminal(client, created.headers["location"], timeout_s=120)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "stage_unavailable"
    assert "VideoGenerator" in job["error"]["detail"] and "more than 4 s" in job["error"]["detail"]
