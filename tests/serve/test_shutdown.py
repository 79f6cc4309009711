"""Graceful shutdown against the real Serve application: a redeploy replaces every replica, and the
ingress replica that goes away hands its running job back instead of taking it down with it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kiss_core.faces.synthetic import synthetic_subject_png
from kiss_core.jobs.store import JobStore
from kiss_core.storage import LocalDirStore
from tests.serve.helpers import post_job, wait_started, wait_terminal

APP = "kissgen_shutdown"
LEASE_S = 60  # long: a job left to a lapsed lease would take a minute to resume


def _deploy(root: Path, generation: int) -> None:
    from ray import serve

    from graph import AppArgs, build_app

    settings = {
        "storage": {"backend": "local", "local_root": str(root)},
        "jobs": {"lease_s": LEASE_S, "recovery_interval_s": 1},
        # Any change to the arguments makes Serve replace all replicas: this one is harmless.
        "retention": {"sweep_interval_s": 600 + generation},
    }
    serve.run(
        build_app(AppArgs(profile="local", settings=settings)),
        name=APP,
        route_prefix="/shutdown",
        blocking=False,
    )


@pytest.fixture(scope="module")
def app(http_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    from ray import serve

    from tests.conftest import _wait_running

    root = tmp_path_factory.mktemp("shutdown")
    _deploy(root, 0)
    _wait_running(APP)
    try:
        yield f"http://127.0.0.1:{http_port}/shutdown", root
    finally:
        serve.delete(APP)


def _ingress_replicas() -> set[str]:
    import ray

    names = ray.util.list_named_actors(all_namespaces=True)
    return {a["name"] for a in names if a["name"].startswith(f"SERVE_REPLICA::{APP}#Ingress#")}


def test_a_redeploy_hands_the_running_job_over_without_waiting_for_its_lease(app: tuple[str, Path]) -> None:
    url, root = app
    jobs = JobStore(LocalDirStore(root))
    before = _ingress_replicas()
    with httpx.Client(base_url=url, timeout=60) as client:
        photos = synthetic_subject_png(0), synthetic_subject_png(1)
        response = post_job(client, *photos, style="french", seconds=3, fps=12, size="416x240")
        assert response.status_code == 202, response.text
        video_id = response.json()["id"]
        assert wait_started(jobs, video_id) == "in_progress"

        redeployed = time.monotonic()
        _deploy(root, 1)  # Serve starts new replicas, then shuts the old ones down gracefully
        job = wait_terminal(client, f"/v1/videos/{video_id}", timeout_s=LEASE_S - 5)
        took = time.monotonic() - redeployed
    assert job["status"] == "completed", job.get("error")
    assert took < LEASE_S - 5, f"resumed after {took:.0f} s: the lease lapsed, nothing was handed back"
    assert _ingress_replicas().isdisjoint(before), "the ingress replica was replaced"
    # Handed back, the interrupted attempt does not count: the new replica's run is attempt 1.
    assert jobs.get(video_id).attempts == 1
