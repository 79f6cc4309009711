"""The same graph on a real S3 server (SeaweedFS): outputs served by presigned URL, erasure on S3."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from kiss_core.faces.synthetic import synthetic_subject_png
from kiss_core.media.video import decode_mp4
from kiss_core.storage import open_store
from tests.conftest import graph_copy
from tests.serve.helpers import post_job, wait_terminal
from tests.support.s3server import S3Endpoint

APP = "kissgen_s3"


@pytest.fixture(scope="module")
def s3_app(http_port: int, s3_server: S3Endpoint) -> Iterator[str]:
    storage = s3_server.settings(bucket="kissgen-serve").model_dump(mode="json")
    with graph_copy(APP, "/s3", {"storage": storage}, http_port) as url:
        yield url


def test_job_on_s3_is_served_by_presigned_url_and_erased(s3_app: str, s3_server: S3Endpoint) -> None:
    store = open_store(s3_server.settings(bucket="kissgen-serve"))
    with httpx.Client(base_url=s3_app, timeout=120) as client:
        response = post_job(
            client,
            synthetic_subject_png(2),
            synthetic_subject_png(3),
            style="french",
            seconds=1,
            fps=10,
            size="320x192",
        )
        assert response.status_code == 202, response.text
        video_id = response.json()["id"]
        assert store.exists(f"jobs/{video_id}/manifest.json"), "the manifest is on S3 before the 202"
        job = wait_terminal(client, f"/v1/videos/{video_id}")
        assert job["status"] == "completed", job.get("error")

        redirect = client.get(f"/v1/videos/{video_id}/content", params={"variant": "video"})
        assert redirect.status_code == 307
        url = redirect.headers["location"]
        assert s3_server.endpoint in url and "X-Amz-Signature" in url
        video = httpx.get(url, timeout=30)
        assert video.status_code == 200
        frames, fps = decode_mp4(video.content)
        assert frames.shape == (10, 192, 320, 3) and fps == pytest.approx(10)

        owned = [k for prefix in ("jobs/", "inputs/", "outputs/") for k in store.list(f"{prefix}{video_id}/")]
        assert len(owned) == 6, owned  # manifest, two inputs, three outputs
        assert client.delete(f"/v1/videos/{video_id}").status_code == 200
        assert [k for k in store.list("") if video_id in k and not k.startswith("audit/")] == []
        assert any(video_id in store.get(k).decode() for k in store.list("audit/")), "the audit record stays"
        assert client.get(f"/v1/videos/{video_id}").status_code == 404


def test_lifecycle_rules_expire_inputs_and_outputs(s3_app: str, s3_server: S3Endpoint) -> None:
    store = open_store(s3_server.settings(bucket="kissgen-serve"))
    assert store.expiry() == {
        "inputs/": 1,
        "idempotency/": 1,
        "outputs/": 7,
        "jobs/": 7,
        "tenants/": 7,
        "queue/": 7,
        "webhooks/": 7,
    }


@pytest.mark.slow  # a 20 s outage: ~32 s
def test_jobs_complete_across_a_20_second_s3_outage(s3_app: str, s3_server: S3Endpoint) -> None:
    """The S3 server stops right after two jobs are accepted; calls wait and retry, both jobs complete."""
    with httpx.Client(base_url=s3_app, timeout=180) as client:
        locations = []
        for first in (0, 2):
            photos = synthetic_subject_png(first), synthetic_subject_png(first + 1)
            response = post_job(client, *photos, style="peck", seconds=1, fps=8, size="256x144")
            assert response.status_code == 202, response.text
            locations.append(response.headers["location"])
        s3_server.stop()
        try:
            time.sleep(20)
        finally:
            s3_server.start()
        jobs = [wait_terminal(client, location, timeout_s=180) for location in locations]
    assert [job["status"] for job in jobs] == ["completed", "completed"], [job.get("error") for job in jobs]
