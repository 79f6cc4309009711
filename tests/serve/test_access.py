"""API keys and tenants through the real Serve application: 401 without a key, tenants see only their
own jobs (another tenant's id is 404 like a missing one), per-key rate limit and per-tenant job cap."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kiss_core.faces.synthetic import synthetic_subject_png
from kiss_core.generation.provenance.credentials import SigningNotConfigured
from tests.conftest import KeyedApp, ServeApp
from tests.serve.helpers import assert_problem, post_job, wait_terminal
from tests.support.certs import make_signing_cert

PARAMS = {"style": "peck", "seconds": 2, "fps": 8, "size": "256x144"}
MISSING = "video_0123456789abcdef01234567"


def _client(app: KeyedApp, tenant: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {app.keys[tenant]}"} if tenant else {}
    return httpx.Client(base_url=app.url, timeout=60, headers=headers)


@pytest.fixture(scope="module")
def acme(keyed_app: KeyedApp) -> Iterator[httpx.Client]:
    with _client(keyed_app, "acme") as c:
        yield c


@pytest.fixture(scope="module")
def globex(keyed_app: KeyedApp) -> Iterator[httpx.Client]:
    with _client(keyed_app, "globex") as c:
        yield c


@pytest.fixture(scope="module")
def acme_job(acme: httpx.Client) -> dict[str, Any]:
    """acme's job; while it runs, a second POST meets acme's cap of one unfinished job."""
    first = post_job(acme, synthetic_subject_png(0), synthetic_subject_png(1), **PARAMS)
    assert first.status_code == 202, first.text
    assert first.headers["location"] == f"/keyed/v1/videos/{first.json()['id']}", "below the route prefix"
    second = post_job(acme, synthetic_subject_png(2), synthetic_subject_png(3), **PARAMS)
    job = wait_terminal(acme, first.headers["location"])
    assert job["status"] == "completed", job.get("error")
    after = post_job(acme, synthetic_subject_png(2), synthetic_subject_png(3), **PARAMS)
    return {"job": job, "second": second, "after": after}


def test_requests_without_a_valid_key_are_401(keyed_app: KeyedApp) -> None:
    with _client(keyed_app, None) as anonymous:
        for response in (
            anonymous.get("/v1/videos"),
            anonymous.get(f"/v1/videos/{MISSING}"),
            post_job(anonymous, synthetic_subject_png(0), synthetic_subject_png(1), **PARAMS),
        ):
            assert_problem(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == 'Bearer realm="kissgen"'
        wrong = anonymous.get("/v1/videos", headers={"Authorization": "Bearer kg_not-a-key"})
        assert_problem(wrong, 401, "unauthorized")
        assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
        by_header = anonymous.get("/v1/videos", headers={"X-API-Key": keyed_app.keys["globex"]})
        assert by_header.status_code == 200 and by_header.json()["object"] == "list"


def test_concurrent_job_cap_is_429_with_retry_after(acme_job: dict[str, Any]) -> None:
    refused = assert_problem(acme_job["second"], 429, "too_many_jobs")
    assert "acme" in refused["detail"] and int(acme_job["second"].headers["retry-after"]) >= 1
    assert acme_job["after"].status_code == 202, "once the job is done the tenant may submit again"


def test_another_tenants_job_is_not_found(
    keyed_app: KeyedApp, acme: httpx.Client, globex: httpx.Client, acme_job: dict[str, Any]
) -> None:
    video_id = acme_job["job"]["id"]
    assert acme.get(f"/v1/videos/{video_id}").status_code == 200
    missing = assert_problem(globex.get(f"/v1/videos/{MISSING}"), 404, "not_found")
    for response in (
        globex.get(f"/v1/videos/{video_id}"),
        globex.get(f"/v1/videos/{video_id}/content", params={"variant": "video"}),
        globex.delete(f"/v1/videos/{video_id}"),
    ):
        body = assert_problem(response, 404, "not_found")
        assert body["detail"].replace(video_id, MISSING) == missing["detail"], (
            "indistinguishable from missing"
        )
    assert acme.get(f"/v1/videos/{video_id}/content").status_code == 200, "globex's DELETE erased nothing"

    acme_ids = [job["id"] for job in acme.get("/v1/videos").json()["data"]]
    assert acme_ids[-1] == video_id and acme_job["after"].json()["id"] == acme_ids[0], "newest first"
    assert video_id not in [job["id"] for job in globex.get("/v1/videos").json()["data"]]
    page = acme.get("/v1/videos", params={"limit": 1}).json()
    assert len(page["data"]) == 1 and page["has_more"] and page["next_cursor"]
    rest = acme.get("/v1/videos", params={"limit": 1, "cursor": page["next_cursor"]}).json()
    assert [j["id"] for j in rest["data"]] == [video_id] and not rest["has_more"]
    assert_problem(acme.get("/v1/videos", params={"limit": 101}), 422, "invalid_request")

    audit = [json.loads(p.read_text()) for p in (keyed_app.store_root / "audit").rglob("*.json")]
    assert [r["tenant"] for r in audit if r["job_id"] == video_id] == ["acme"]


def test_rate_limit_is_429_with_retry_after(keyed_app: KeyedApp) -> None:
    with _client(keyed_app, "slow") as slow:
        assert [slow.get("/v1/videos").status_code for _ in range(2)] == [200, 200]
        limited = slow.get("/v1/videos")
    assert_problem(limited, 429, "rate_limited")
    assert 9 <= int(limited.headers["retry-after"]) <= 10, "6 per minute: a token every 10 s"
    with _client(keyed_app, "globex") as globex:
        assert globex.get("/v1/videos").status_code == 200, "other keys are not limited"


def test_idempotency_keys_are_per_tenant(acme: httpx.Client, globex: httpx.Client, acme_job: Any) -> None:
    key = secrets.token_hex(8)
    photos = synthetic_subject_png(1), synthetic_subject_png(2)
    wait_terminal(acme, acme_job["after"].headers["location"])  # acme's cap is one unfinished job
    responses = []
    for client in (acme, globex):
        client.headers["Idempotency-Key"] = key
        try:
            response = post_job(client, *photos, **PARAMS)
        finally:
            del client.headers["Idempotency-Key"]
        assert response.status_code == 202, response.text
        assert "idempotent-replayed" not in response.headers
        responses.append(response.json()["id"])
        assert client.delete(f"/v1/videos/{response.json()['id']}").status_code == 200
    assert responses[0] != responses[1]


def test_open_mode_lists_the_public_tenant(serve_app: ServeApp) -> None:
    with httpx.Client(base_url=serve_app.url, timeout=60) as client:
        response = client.get("/v1/videos", params={"limit": 5})
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "list" and len(response.json()["data"]) <= 5


def test_production_refuses_to_build_without_keys(tmp_path: Path) -> None:
    from graph import AppArgs, build_app
    from kiss_core.jobs.access import hash_key, new_key

    with pytest.raises(ValueError, match="refuses to start without API keys"):
        build_app(AppArgs(profile="production"))
    empty = tmp_path / "keys.yaml"
    empty.write_text("keys: []\n")
    with pytest.raises(ValueError, match="holds no API keys"):
        build_app(AppArgs(profile="production", settings={"access": {"keys_file": str(empty)}}))
    keyed = tmp_path / "keys.json"
    keyed.write_text(json.dumps([{"tenant": "acme", "key_sha256": hash_key(new_key())}]))
    with pytest.raises(SigningNotConfigured, match="cert_chain"):  # keys alone are not enough
        build_app(AppArgs(profile="production", settings={"access": {"keys_file": str(keyed)}}))
    signing = make_signing_cert(tmp_path)
    c2pa = {"cert_chain": str(signing.chain), "private_key": str(signing.key)}
    build_app(
        AppArgs(
            profile="production", settings={"access": {"keys_file": str(keyed)}, "provenance": {"c2pa": c2pa}}
        )
    )
    build_app(AppArgs(profile="local"))  # the local profile may run open
