"""POST /v1/verify on the running service: a video this service made names its job; junk is a 415."""

from __future__ import annotations

import httpx

from kiss_core.faces.synthetic import synthetic_subject_png
from tests.conftest import ServeApp
from tests.serve.helpers import assert_problem, post_job, wait_terminal


def test_verify_reads_the_job_id_back_from_a_finished_video(serve_app: ServeApp) -> None:
    with httpx.Client(base_url=serve_app.url, timeout=120) as client:
        response = post_job(
            client,
            synthetic_subject_png(1),
            synthetic_subject_png(3),
            style="peck",
            seconds=2,
            size="416x240",
        )
        assert response.status_code == 202, response.text
        job = wait_terminal(client, response.headers["location"])
        assert job["status"] == "completed", job.get("error")
        assert job["result"]["provenance"] == {"label": True, "watermark": True, "c2pa": False}
        video = client.get(f"/v1/videos/{job['id']}/content").content

        report = client.post("/v1/verify", content=video, headers={"content-type": "video/mp4"})
        assert report.status_code == 200, report.text
        body = report.json()
        assert body["mime"] == "video/mp4" and body["watermark"]["job_id"] == job["id"]
        assert body["ai_generated"] is True
        assert body["c2pa"]["present"] is False  # the local profile signs nothing (no certificate)

        junk = client.post("/v1/verify", content=b"GIF89a" + bytes(200))
        assert_problem(junk, 415, "unsupported_media")
        truncated = client.post("/v1/verify", content=video[:2000])
        assert truncated.status_code in (200, 415), truncated.text
