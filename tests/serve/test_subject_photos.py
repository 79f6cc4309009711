"""Several photos of each person through the real Serve application: repeated subject_a / subject_b
fields, the same-person check and the photo limit before anything is stored, every photo in the audit
record, and `kissgen create --a … --a …`. Synthetic subjects only: another photo of one is the same
synthetic face mirrored or slightly rotated; a stranger is another synthetic subject."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kiss_core.cli import main
from kiss_core.faces.synthetic import synthetic_subject, synthetic_subject_png
from kiss_core.jobs.audit import AuditLog
from kiss_core.jobs.store import JobStore
from kiss_core.media.images import encode_png
from kiss_core.media.video import probe_mp4
from kiss_core.storage import LocalDirStore
from tests.conftest import ServeApp
from tests.serve.helpers import CONSENT, assert_problem, wait_terminal
from tests.support.photo_variants import mirrored, rotated

PARAMS = {"style": "peck", "seconds": "1", "fps": "8", "size": "256x144", "seed": "3"}


@pytest.fixture(scope="module")
def client(serve_app: ServeApp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=serve_app.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def photos() -> dict[str, list[bytes]]:
    """Three photos of synthetic subject 0, two of subject 1, and (as "stranger") subject 2."""
    a, b = synthetic_subject(0), synthetic_subject(1)
    return {
        "a": [encode_png(a), encode_png(mirrored(a)), encode_png(rotated(a))],
        "b": [encode_png(rotated(b)), encode_png(b)],
        "stranger": [synthetic_subject_png(2)],
    }


def post(client: httpx.Client, a: list[bytes], b: list[bytes]) -> httpx.Response:
    """POST /v1/videos with each photo as one more subject_a / subject_b part, in this order."""
    files = [("subject_a", (f"a{i}.png", p, "image/png")) for i, p in enumerate(a, 1)]
    files += [("subject_b", (f"b{i}.png", p, "image/png")) for i, p in enumerate(b, 1)]
    return client.post("/v1/videos", data={**CONSENT, **PARAMS}, files=files)


def stored(app: ServeApp) -> set[str]:
    return set(LocalDirStore(app.store_root).list(""))


def test_photos_of_two_people_are_refused_before_anything_is_stored(
    client: httpx.Client, serve_app: ServeApp, photos: dict[str, list[bytes]]
) -> None:
    before = stored(serve_app)
    response = post(client, [photos["a"][0], photos["stranger"][0], photos["a"][1]], photos["b"])
    body = assert_problem(response, 422, "subject_photos_mismatch", "a")
    assert "subject_a" in body["detail"]
    assert [e["photos"] for e in body["errors"]] == [[1, 2], [2, 3]], "photo 2 is the stranger"
    assert all(e["field"] == "subject_a" and e["similarity"] < e["threshold"] for e in body["errors"])
    assert stored(serve_app) - before == set(), "no input, audit record or job was written"


def test_more_than_three_photos_of_a_person_are_refused(
    client: httpx.Client, serve_app: ServeApp, photos: dict[str, list[bytes]]
) -> None:
    before = stored(serve_app)
    b = synthetic_subject(1)
    four = [*photos["b"], encode_png(mirrored(b)), encode_png(rotated(b, -5))]
    body = assert_problem(post(client, photos["a"][:1], four), 422, "too_many_photos", "b")
    assert body["errors"] == [{"field": "subject_b", "message": "4 photos, at most 3"}]
    assert body["limit"] == 3  # machine-readable: the studio page takes its limit from it
    # More files than both people may have at all: refused while the body is parsed.
    whole = assert_problem(post(client, [*photos["a"], *four], four), 422, "too_many_photos")
    assert whole["limit"] == 3
    assert stored(serve_app) - before == set()
    capabilities = client.get("/v1/capabilities").json()
    assert capabilities["limits"]["max_photos_per_subject"] == 3


def test_three_and_two_photos_make_one_job_with_every_photo_audited(
    client: httpx.Client, serve_app: ServeApp, photos: dict[str, list[bytes]]
) -> None:
    response = post(client, photos["a"], photos["b"])
    assert response.status_code == 202, response.text
    job = wait_terminal(client, response.headers["location"])
    assert job["status"] == "completed", job.get("error")
    assert "reference_keys" not in job and "reference_analyses" not in job, "internal, like the embeddings"
    quality = job["result"]["quality"]
    for subject in quality["subjects"]:  # measured against each person's mean embedding
        assert subject["frames_found"] > 0 and subject["similarity_mean"] >= quality["threshold"], subject

    store = LocalDirStore(serve_app.store_root)
    manifest = JobStore(store).get(job["id"])
    sent: dict[str, Any] = {"a": photos["a"], "b": photos["b"]}
    for s in "ab":
        keys = [manifest.input_keys[s], *manifest.reference_keys[s]]
        assert sorted(store.get(k) for k in keys) == sorted(sent[s]), "every photo stored once"
    (record,) = AuditLog(store).for_job(job["id"])
    assert record.photos_sha256 == {s: [hashlib.sha256(p).hexdigest() for p in sent[s]] for s in "ab"}
    for s in "ab":
        assert record.photo_sha256[s] == hashlib.sha256(store.get(manifest.input_keys[s])).hexdigest()

    assert client.delete(f"/v1/videos/{job['id']}").status_code in (200, 204)
    assert store.list(f"inputs/{job['id']}/") == [], "every photo is erased with the job"


def test_cli_create_takes_several_photos_of_each_person(
    serve_app: ServeApp, tmp_path: Path, photos: dict[str, list[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    paths = {}
    for name, data in (("a1", photos["a"][0]), ("a2", photos["a"][1]), ("b1", photos["b"][0])):
        paths[name] = tmp_path / f"{name}.png"
        paths[name].write_bytes(data)
    out = tmp_path / "kiss.mp4"
    argv = ["--url", serve_app.url, "create", "--a", str(paths["a1"]), "--a", str(paths["a2"])]
    argv += ["--b", str(paths["b1"]), "--consent", "--style", "cheek", "--seconds", "1", "--fps", "8"]
    assert main([*argv, "--size", "256x144", "-o", str(out)]) == 0, capsys.readouterr()
    assert probe_mp4(out.read_bytes())["frames"] == 8
    assert "completed" in capsys.readouterr().out

    stranger = tmp_path / "stranger.png"
    stranger.write_bytes(photos["stranger"][0])
    refused = ["--url", serve_app.url, "create", str(paths["a1"]), str(paths["b1"]), "--a", str(stranger)]
    assert main([*refused, "--consent"]) == 1
    assert "subject_photos_mismatch" in capsys.readouterr().err
