"""Faults against the real Serve application: a job outlives the replica that accepted it."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from kiss_core.faces.synthetic import synthetic_subject_png
from kiss_core.jobs.store import JobStore
from kiss_core.storage import LocalDirStore
from tests.conftest import ServeApp
from tests.serve.helpers import assert_problem, post_job, wait_started, wait_terminal

pytestmark = pytest.mark.slow  # kills replicas and waits for recovery: 11-13 s a test


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

        assert wait_started(jobs, video_id) == "in_progress"
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


def test_overload_answers_503_with_retry_after_and_loses_nothing(serve_app: ServeApp) -> None:
    """Admission is bounded (max_active_jobs=2 in the test app): extras get 503, accepted jobs finish."""
    photos = synthetic_subject_png(0), synthetic_subject_png(1)

    def submit(_: int) -> httpx.Response:
        with httpx.Client(base_url=serve_app.url, timeout=60) as c:
            return post_job(c, *photos, style="peck", seconds=2, fps=12, size="256x144")

    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(submit, range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {202, 503}, statuses
    accepted = [r for r in responses if r.status_code == 202]
    refused = [r for r in responses if r.status_code == 503]
    assert 1 <= len(accepted) <= 2 and refused, statuses
    for response in refused:
        assert_problem(response, 503, "overloaded")
        assert response.headers["retry-after"] == "3"
    with httpx.Client(base_url=serve_app.url, timeout=60) as client:
        for response in accepted:
            job = wait_terminal(client, response.headers["location"])
            assert job["status"] == "completed", job.get("error")


def test_an_overloaded_replica_refuses_before_reading_the_body(serve_app: ServeApp) -> None:
    """While the replica is full, a submission is refused with 503 before its form is parsed: a body
    that would otherwise be a 422 (no photos, no consent) gets `overloaded`, so refusals under load cost
    no photo parsing. With an Idempotency-Key the form is read (a retry may replay a stored job)."""
    photos = synthetic_subject_png(0), synthetic_subject_png(1)

    def submit(_: int) -> httpx.Response:
        with httpx.Client(base_url=serve_app.url, timeout=60) as c:
            return post_job(c, *photos, style="peck", seconds=2, fps=12, size="256x144")

    with (
        ThreadPoolExecutor(max_workers=2) as pool,
        httpx.Client(base_url=serve_app.url, timeout=60) as client,
    ):
        submitted = [pool.submit(submit, i) for i in range(2)]
        codes: list[str] = []
        keyed: list[int] = []
        while not all(f.done() for f in submitted) or len(codes) < 40:
            bare = client.post("/v1/videos", files={"nothing": ("x.txt", b"x", "text/plain")})
            codes.append(bare.json().get("code", ""))
            if codes[-1] == "overloaded":
                again = client.post(
                    "/v1/videos",
                    files={"nothing": ("x.txt", b"x", "text/plain")},
                    headers={"Idempotency-Key": "k1"},
                )
                keyed.append(again.status_code)
                break
        accepted = [f.result() for f in submitted if f.result().status_code == 202]
        for response in accepted:
            wait_terminal(client, response.headers["location"])
    assert "overloaded" in codes, f"never refused before parsing while full: {codes}"
    assert set(codes) <= {"overloaded", "invalid_request"}, codes
    assert keyed == [422], "a keyed request is parsed (and refused for its form) even while full"


def test_a_job_that_always_fails_ends_failed_after_bounded_attempts_and_others_complete(
    serve_app: ServeApp,
) -> None:
    """A job whose stored photos are gone (lost by the store, or erased behind our back) fails the same
    way on every attempt: it is retried up to jobs.max_attempts (3), then ends `failed` with its
    error, while a job submitted next to it completes."""
    from kiss_core.faces.analysis import DlibFaceAnalyzer
    from kiss_core.media.images import decode_image
    from kiss_core.schemas import VideoParams
    from kiss_core.settings import Settings

    settings = Settings()
    analyzer = DlibFaceAnalyzer(settings.faces)
    photos = {"a": synthetic_subject_png(2), "b": synthetic_subject_png(3)}
    analyses = {s: analyzer.analyze(decode_image(photos[s], settings.limits, s), s) for s in photos}
    jobs = JobStore(LocalDirStore(serve_app.store_root))
    # As a crashed ingress leaves it: accepted and stored, never started. Then its photos vanish.
    broken = jobs.create(VideoParams(style="peck", seconds=1, fps=8, size="128x128"), photos, analyses)
    assert jobs.erase_inputs(broken.id) == 2

    with httpx.Client(base_url=serve_app.url, timeout=60) as client:
        response = post_job(client, photos["a"], photos["b"], style="peck", seconds=1, fps=8, size="128x128")
        assert response.status_code == 202, response.text
        healthy = wait_terminal(client, response.headers["location"], timeout_s=120)
        failed = wait_terminal(client, f"/v1/videos/{broken.id}", timeout_s=120)
    assert healthy["status"] == "completed", healthy.get("error")
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "internal_error" and "after 3 attempts" in failed["error"]["detail"]
    assert jobs.get(broken.id).attempts == settings.jobs.max_attempts
    assert jobs.read_lease(broken.id) is None
