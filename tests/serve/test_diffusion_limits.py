"""The diffusion backends' window and token limits are checked before the 202: nothing is stored for a
request the backend could not generate (a real Serve app; the check needs no weights)."""

from __future__ import annotations

import httpx

from kiss_core.faces.synthetic import synthetic_subject_png
from tests.conftest import ServeApp
from tests.serve.helpers import post_job


def _stored_jobs(app: ServeApp) -> set[str]:
    jobs = app.store_root / "jobs"
    return {p.name for p in jobs.iterdir()} if jobs.exists() else set()


def test_a_clip_longer_than_one_window_is_refused_before_acceptance(serve_app: ServeApp) -> None:
    before = _stored_jobs(serve_app)
    with httpx.Client(base_url=serve_app.url, timeout=60) as client:
        response = post_job(
            client, synthetic_subject_png(0), synthetic_subject_png(1), backend="wan-i2v", seconds=8
        )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "clip_too_long" and "81" in body["detail"] and "5 s" in body["detail"]
    assert _stored_jobs(serve_app) == before


def test_a_request_over_the_token_cap_is_refused_before_acceptance(serve_app: ServeApp) -> None:
    with httpx.Client(base_url=serve_app.url, timeout=60) as client:
        response = post_job(
            client,
            synthetic_subject_png(2),
            synthetic_subject_png(3),
            backend="wan-vace",
            seconds=5,
            size="1280x1280",
        )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "token_budget_exceeded"
    assert "134400" in body["detail"] and "75600" in body["detail"]  # 21 latent frames x 80 x 80
