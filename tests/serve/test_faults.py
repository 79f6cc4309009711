"""Faults against the real Serve application: a job outlives the replica that accepted it."""

from __future__ import annotations

import time

import httpx
import pytest

from kiss_core.jobs import JobStore
from kiss_core.storage import LocalDirStore
from kiss_core.synthetic import synthetic_subject_png
from tests.conftest import ServeApp
from tests.serve.helpers import post_job, wait_terminal


def _replica_actors(deployment: str) -> list[str]:
    import ray

    names = ray.util.list_named_actors(all_namespaces=True)
    return [a["name"] for a in names if a["name"].startswith(f"SERVE_REPLICA::kissgen#{deployment}#")]


def test_job_completes_after_its_ingress_replica_is_killed(serve_app: ServeApp) -> None:
    import ray

    jobs = JobStore(LocalDirStore(serve_app.store_root))
    with httpx.Client(base_url=serve_app.url, timeout=60) as client:
        photos = synthetic_subject_png(1), synthetic_subject_png(2)
        response = post_job(client, *photos, style="french", seconds=3, fps=12, size="416x240")
        assert response.status_code == 202, response.text
        video_id = response.json()["id"]

        deadline = time.monotonic() + 60
        while jobs.get(video_id).status == "queued" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert jobs.get(video_id).status == "in_progress"
        (replica,) = _replica_actors("Ingress")
        ray.kill(ray.get_actor(replica, namespace="serve"), no_restart=True)

        job = wait_terminal(client, f"/v1/videos/{video_id}", timeout_s=180)
    assert job["status"] == "completed", job.get("error")
    assert job["result"]["frames"] == 36
    manifest = jobs.get(video_id)
    assert manifest.attempts >= 2, "the job was taken over, not finished by the dead replica"
    assert jobs.read_lease(video_id) is None, "the surviving runner released the lease"
    assert _replica_actors("Ingress") != [replica], "Serve replaced the killed replica"


@pytest.mark.parametrize("deployment", ["VideoGenerator"])
def test_job_completes_after_its_generator_replica_is_killed(serve_app: ServeApp, deployment: str) -> None:
    import ray

    jobs = JobStore(LocalDirStore(serve_app.store_root))
    with httpx.Client(base_url=serve_app.url, timeout=60) as client:
        photos = synthetic_subject_png(0), synthetic_subject_png(3)
        response = post_job(client, *photos, style="romantic", seconds=3, fps=12, size="416x240")
        assert response.status_code == 202, response.text
        video_id = response.json()["id"]
        deadline = time.monotonic() + 60
        while jobs.get(video_id).stage not in ("generation", "quality") and time.monotonic() < deadline:
            time.sleep(0.02)
        (replica,) = _replica_actors(deployment)
        ray.kill(ray.get_actor(replica, namespace="serve"), no_restart=True)
        job = wait_terminal(client, f"/v1/videos/{video_id}", timeout_s=180)
    assert job["status"] == "completed", job.get("error")
    assert jobs.get(video_id).attempts == 2, "one failed attempt (the killed replica), one retry"
