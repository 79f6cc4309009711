"""The safety levers end to end, on a strict copy of the graph: the age gate and the content filter
run inside the FaceAnalyzer replicas and refuse with their codes. Generation only ever sees
synthetic subjects; the one real photo here (skimage's coffee cup) is refused before analysis."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from kiss_core.faces.synthetic import synthetic_subject_png
from tests.conftest import graph_copy
from tests.serve.helpers import assert_problem, post_job
from tests.support.photos import skimage_path

APP = "kissgen_strict"
PARAMS = {"style": "peck", "seconds": 1, "fps": 8, "size": "128x128"}


@pytest.fixture(scope="module")
def strict_app(http_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = {
        "storage": {"backend": "local", "local_root": str(tmp_path_factory.mktemp("strict"))},
        # Above every synthetic subject's estimated age (26.7-29.8), and a content threshold low enough
        # that a known false positive (coffee: BUTTOCKS_EXPOSED 0.30) proves the filter is wired in.
        "safety": {"age_gate": {"min_age": 79}, "content_filter": {"threshold": 0.2}},
    }
    with graph_copy(APP, "/strict", settings, http_port) as url:
        yield url


def test_age_threshold_above_the_estimate_refuses(strict_app: str) -> None:
    with httpx.Client(base_url=strict_app, timeout=60) as client:
        response = post_job(client, synthetic_subject_png(0), synthetic_subject_png(1), **PARAMS)
    body = assert_problem(response, 422, "subject_may_be_minor", subject="a")
    assert body["errors"][0]["min_age"] == 79 and 18 < body["errors"][0]["estimated_age"] < 79


def test_content_filter_refuses_before_face_analysis(strict_app: str) -> None:
    with httpx.Client(base_url=strict_app, timeout=60) as client:
        coffee = skimage_path("coffee.png").read_bytes()
        response = post_job(client, coffee, synthetic_subject_png(0), **PARAMS)
    assert_problem(response, 422, "explicit_content", subject="a")


def test_default_gate_admits_synthetic_adults_and_audits_their_ages(serve_app: object) -> None:
    from tests.conftest import ServeApp

    assert isinstance(serve_app, ServeApp)
    with httpx.Client(base_url=serve_app.url, timeout=60) as client:
        response = post_job(client, synthetic_subject_png(2), synthetic_subject_png(3), **PARAMS)
        assert response.status_code == 202, response.text
        job = response.json()
        client.delete(f"/v1/videos/{job['id']}")
    ages = {s["subject"]: s["age_estimate"] for s in job["subjects"]}
    assert all(25 <= age < 60 for age in ages.values()), ages
    audit = [
        p.read_text() for p in (serve_app.store_root / "audit").rglob("*.json") if job["id"] in p.read_text()
    ]
    assert len(audit) == 1 and '"age_estimates"' in audit[0] and str(ages["a"]) in audit[0]


def test_a_prompt_with_a_disallowed_term_is_refused_before_anything_is_stored(serve_app: object) -> None:
    from tests.conftest import ServeApp

    assert isinstance(serve_app, ServeApp)
    inputs = serve_app.store_root / "inputs"
    before = set(inputs.rglob("*"))
    with httpx.Client(base_url=serve_app.url, timeout=60) as client:
        response = post_job(
            client, synthetic_subject_png(0), synthetic_subject_png(1), prompt="two n4ked people", **PARAMS
        )
    body = assert_problem(response, 422, "invalid_request")
    assert any(e["field"] == "prompt" and "naked" in e["message"] for e in body["errors"]), body
    assert set(inputs.rglob("*")) == before
