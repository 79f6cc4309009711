"""155 hostile and unusual requests against the running service: every refusal a 4xx problem+json with
a stable code, every unusual-but-valid photo handled (the right face, upright), no 5xx, no replica lost."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from kiss_core.media.geometry import LEFT_EYE, MOUTH, RIGHT_EYE
from tests.conftest import ServeApp
from tests.support.hostile import Case, corpus


def _replicas() -> list[str]:
    import ray

    return sorted(
        a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "#kissgen" in a["name"]
    )


def _send(client: httpx.Client, case: Case) -> httpx.Response:
    if case.body is not None:
        content_type, raw = case.body
        return client.post("/v1/videos", content=raw, headers={"content-type": content_type})
    return client.post("/v1/videos", data=case.data, files=case.files)


def _check_accepted(case: Case, job: dict[str, Any]) -> str | None:
    """None when the analysis of subject a is what this unusual photo should give."""
    a = next(s for s in job["subjects"] if s["subject"] == "a")
    points = a["landmarks"]
    eyes_y = sum(p[1] for p in points[LEFT_EYE] + points[RIGHT_EYE]) / 12
    mouth_y = sum(p[1] for p in points[MOUTH]) / 20
    if eyes_y >= mouth_y or abs(a["pose"]["roll"]) > 15:
        return f"face not upright: eyes y {eyes_y:.0f}, mouth y {mouth_y:.0f}, roll {a['pose']['roll']:.0f}"
    if case.name == "several-faces":
        if a["faces_found"] != 2 or a["box"][0] < 400:
            return f"expected the larger, right-hand face of 2; got {a['faces_found']} faces, box {a['box']}"
    elif (a["image_width"], a["image_height"]) != (480, 600):
        return f"decoded as {a['image_width']}x{a['image_height']}, expected upright 480x600"
    return None


@pytest.mark.slow  # 155 requests: ~25 s
def test_hostile_and_unusual_requests(serve_app: ServeApp) -> None:
    from ray import serve

    cases = corpus()
    assert len(cases) >= 150
    before = _replicas()
    failures: list[str] = []
    with httpx.Client(base_url=serve_app.url, timeout=120) as client:
        for case in cases:
            response = _send(client, case)
            if response.status_code >= 500:
                failures.append(f"{case.name}: {response.status_code} {response.text[:200]}")
                continue
            if case.expect == "accepted":
                if response.status_code != 202:
                    failures.append(
                        f"{case.name}: expected 202, got {response.status_code} {response.text[:200]}"
                    )
                    continue
                problem = _check_accepted(case, response.json())
                if problem:
                    failures.append(f"{case.name}: {problem}")
                assert client.delete(response.headers["location"]).status_code == 200
                continue
            body = (
                response.json() if response.headers.get("content-type", "").startswith("application/") else {}
            )
            got = (response.status_code, body.get("code"), body.get("subject") if case.subject else None)
            if got != (case.expect, case.code, case.subject) or not response.headers[
                "content-type"
            ].startswith("application/problem+json"):
                failures.append(f"{case.name}: expected {(case.expect, case.code, case.subject)}, got {got}")
    assert not failures, "\n".join(failures)
    assert _replicas() == before, "a replica died or was replaced while handling the corpus"
    app = serve.status().applications["kissgen"]
    assert app.status == "RUNNING"
    assert all(d.status == "HEALTHY" for d in app.deployments.values())
