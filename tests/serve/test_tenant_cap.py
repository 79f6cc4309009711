"""The per-tenant job cap holds across ingress replicas: conditional creates on the real S3 server have
one winner, and 20 concurrent submissions of one tenant to two ingress replicas admit at most its cap."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from kiss_core.faces.synthetic import synthetic_subject_png
from kiss_core.jobs.access import hash_key, new_key
from kiss_core.jobs.slots import TenantSlots
from kiss_core.jobs.store import JobStore
from kiss_core.storage import LocalDirStore, S3Store
from tests.conftest import _wait_running
from tests.serve.helpers import assert_problem, post_job, wait_terminal
from tests.support.s3server import S3Endpoint

CAP = 3
# Long enough that the accepted jobs are still running when the burst of submissions is answered.
PARAMS = {"style": "french", "seconds": 3, "fps": 12, "size": "416x240"}


def test_put_if_absent_on_s3_has_one_winner(s3_server: S3Endpoint) -> None:
    store = S3Store(s3_server.settings(bucket="kissgen-slots"))
    start = threading.Barrier(12)

    def create(i: int) -> bool:
        start.wait()
        return store.put_if_absent("race/key", f"caller-{i}".encode())

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(create, range(12)))
    assert results.count(True) == 1, "SeaweedFS honours If-None-Match: *"
    assert store.get("race/key") == f"caller-{results.index(True)}".encode()

    slots = TenantSlots(store, lambda job_id: "unfinished")
    claimed = [slots.claim("acme", f"video_{i:024x}", 2) for i in range(4)]
    assert [c is not None for c in claimed] == [True, True, False, False]


@contextmanager
def two_ingress_replicas(http_port: int, settings: dict[str, Any]) -> Iterator[str]:
    from ray import serve

    from graph import AppArgs, build_app

    args = AppArgs(profile="local", settings=settings, deployment_options={"Ingress": {"num_replicas": 2}})
    serve.run(build_app(args), name="kissgen_cap", route_prefix="/cap")
    _wait_running("kissgen_cap")
    try:
        yield f"http://127.0.0.1:{http_port}/cap"
    finally:
        serve.delete("kissgen_cap")


def _ingress_replicas() -> int:
    import ray

    names = ray.util.list_named_actors(all_namespaces=True)
    return sum(a["name"].startswith("SERVE_REPLICA::kissgen_cap#Ingress#") for a in names)


@pytest.mark.slow  # its own graph with two ingress replicas, three jobs run to the end
def test_twenty_concurrent_submissions_to_two_replicas_admit_at_most_the_cap(
    http_port: int, tmp_path: Path
) -> None:
    key = new_key()
    root = tmp_path / "store"
    settings = {
        "storage": {"backend": "local", "local_root": str(root)},
        "access": {
            "required": True,
            "keys": [{"tenant": "acme", "key_sha256": hash_key(key), "max_concurrent_jobs": CAP}],
            "rate_per_minute": 6000,
            "burst": 100,
        },
        "limits": {"max_active_jobs": 20},
    }
    photos = synthetic_subject_png(0), synthetic_subject_png(1)
    headers = {"Authorization": f"Bearer {key}"}
    with two_ingress_replicas(http_port, settings) as url:
        assert _ingress_replicas() == 2
        start = threading.Barrier(20)

        def submit(_: int) -> httpx.Response:
            with httpx.Client(base_url=url, timeout=120, headers=headers) as client:
                start.wait()
                return post_job(client, *photos, **PARAMS)

        with ThreadPoolExecutor(20) as pool:
            responses = list(pool.map(submit, range(20)))
        accepted = [r for r in responses if r.status_code == 202]
        for refused in (r for r in responses if r.status_code != 202):
            assert_problem(refused, 429, "too_many_jobs")
        jobs = JobStore(LocalDirStore(root))
        unfinished = [r.json()["id"] for r in accepted if jobs.state(r.json()["id"]) == "unfinished"]
        assert 1 <= len(accepted) <= CAP, [r.status_code for r in responses]
        assert len(unfinished) == len(accepted), "all accepted jobs still ran when the burst was answered"
        assert len(jobs.slots.held("acme")) == len(accepted)

        with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
            for response in accepted:
                job = wait_terminal(client, response.headers["location"])
                assert job["status"] == "completed", job.get("error")
            assert jobs.slots.held("acme") == [], "every slot came back when its job ended"
            again = post_job(client, *photos, style="peck", seconds=1, fps=8, size="256x144")
            assert again.status_code == 202, again.text
            wait_terminal(client, again.headers["location"])
