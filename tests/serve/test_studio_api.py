"""The web studio's API on the real Serve app: check a photo without storing it (POST /v1/analyses), what
the service offers (GET /v1/capabilities), cancel vs delete, abuse reports (POST /v1/reports and
`kissgen reports`), and hostile input to each of them answered with problem+json."""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from PIL import Image

from deployments.http.service import VideoService
from kiss_core.cli import main as kissgen
from kiss_core.faces.synthetic import synthetic_subject_png
from kiss_core.jobs.audit import CONSENT_TEXT
from kiss_core.jobs.reports import REPORT_REASONS
from kiss_core.schemas import VideoParams
from kiss_core.settings import Settings
from tests.conftest import ServeApp
from tests.serve.helpers import assert_problem, post_job, wait_terminal
from tests.serve.test_biometrics import float_vectors
from tests.support.photos import skimage_path

# Long enough (240 frames at 832x480) to be canceled while it renders.
LONG: dict[str, Any] = {"style": "romantic", "seconds": 10, "fps": 24, "size": "832x480"}
SHORT: dict[str, Any] = {"style": "peck", "seconds": 1, "fps": 8, "size": "128x128"}


@pytest.fixture(scope="module")
def client(serve_app: ServeApp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=serve_app.url, timeout=120) as c:
        yield c


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every object under the store's root: key -> (size, mtime_ns)."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


def analyze(client: httpx.Client, photo: bytes, subject: str | None = None, **extra: Any) -> httpx.Response:
    data = {"subject": subject} if subject is not None else {}
    files = {"photo": ("photo.png", photo, "image/png")}
    return client.post("/v1/analyses", data=data, files=files, **extra)


def test_analysis_finds_the_face_and_stores_nothing(client: httpx.Client, serve_app: ServeApp) -> None:
    unfinished_before = {
        j["id"] for j in client.get("/v1/videos").json()["data"] if j["status"] in ("queued", "in_progress")
    }
    before = snapshot(serve_app.store_root)

    response = analyze(client, synthetic_subject_png(2), "b")
    refused = analyze(client, skimage_path("coffee.png").read_bytes(), "b")

    after = snapshot(serve_app.store_root)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "analysis" and body["subject"] == "b" and body["faces_found"] == 1
    x0, y0, x1, y1 = body["box"]
    assert 0 <= x0 < x1 <= body["image_width"] and 0 <= y0 < y1 <= body["image_height"]
    assert len(body["landmarks"]) == 68 and all(len(p) == 2 for p in body["landmarks"])
    nose_x, nose_y = body["landmarks"][30]  # iBUG 68: the tip of the nose
    assert x0 < nose_x < x1 and y0 < nose_y < y1, "the landmarks belong to the face in the box"
    assert body["age_estimate"] >= 25, "the age gate ran"
    assert float_vectors(body) == [] and "embedding" not in body, "no biometric template leaves"
    assert_problem(refused, 422, "face_not_found", subject="b")

    changed = {k for k in after.keys() | before.keys() if after.get(k) != before.get(k)}
    # Jobs other tests left running may write meanwhile; nothing else may change.
    strays = [k for k in changed if not any(job_id in k for job_id in unfinished_before)]
    assert strays == [], f"an analysis stored something: {strays}"


def test_capabilities_describe_the_cpu_profile_without_a_key(client: httpx.Client) -> None:
    response = client.get("/v1/capabilities")
    assert response.status_code == 200, response.text
    caps = response.json()
    assert caps["object"] == "capabilities"
    assert caps["backends"] == [{"name": "preview", "default": True}]
    assert caps["qualities"] == [] and caps["loras"] == []
    assert caps["styles"] == ["peck", "romantic", "french", "cheek"]
    assert caps["backgrounds"] == ["auto", "a", "b", "blur"]
    assert caps["api_key_required"] is False
    assert caps["consent_text"] == CONSENT_TEXT and "adult" in CONSENT_TEXT
    assert caps["report_reasons"] == list(REPORT_REASONS)
    assert caps["limits"]["max_upload_bytes"] > 0 and caps["limits"]["max_request_bytes"] > 0
    for shape, size in caps["shapes"].items():
        assert VideoParams(size=size).size == size, shape
    width, height = map(int, caps["shapes"]["portrait"].split("x"))
    assert height > width
    default = VideoParams()
    assert caps["seconds"]["default"] == default.seconds and caps["fps"] == default.fps
    assert caps["intensity"] == {"min": 0.0, "max": 1.0, "default": default.intensity}


def test_capabilities_list_diffusion_backends_qualities_and_their_loras(tmp_path: Path) -> None:
    """A service with a diffusion backend (named by `enabled`, as a head without the weights does) and
    keys: the backend, both qualities, the LoRAs made for it (not a step-distillation one, not another
    backend's), and that a key is needed."""
    loras = tmp_path / "models" / "loras"
    loras.mkdir(parents=True)
    for name, meta in {
        "soft-light": {"base": "wan-i2v", "trigger_words": ["soft light", "film grain"]},
        "lightning": {"base": "wan-i2v", "fast": True},
        "vace-only": {"base": "wan-vace", "trigger_words": "pose"},
    }.items():
        (loras / f"{name}.yaml").write_text(yaml.safe_dump(meta))
        (loras / f"{name}.safetensors").write_bytes(b"")
    settings = Settings.model_validate(
        {
            "storage": {"backend": "local", "local_root": str(tmp_path / "store")},
            "generator": {
                "model_root": str(tmp_path / "models"),
                "enabled": ["wan-i2v"],
                "backend": "wan-i2v",
            },
            "access": {"keys": [{"tenant": "acme", "key_sha256": "0" * 64}]},
        }
    )
    caps = VideoService(settings, stages=None).capabilities()  # type: ignore[arg-type]  # not run here
    assert caps["backends"] == [{"name": "preview", "default": False}, {"name": "wan-i2v", "default": True}]
    assert caps["qualities"] == ["standard", "fast"]
    assert caps["loras"] == [
        {"name": "soft-light", "base": "wan-i2v", "trigger_words": ["soft light", "film grain"]}
    ]
    assert caps["api_key_required"] is True


def wait_rendering(client: httpx.Client, location: str, timeout_s: float = 120.0) -> dict[str, Any]:
    """Polls the job until its generator reported frames (or it ended)."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(location).json()
        rendering = job["stage"] == "generation" and job["progress"] > 10
        if rendering or job["status"] in ("completed", "failed", "canceled"):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"{location} never rendered: {job}")
        time.sleep(0.05)


def test_cancel_stops_a_running_job_and_keeps_its_record_delete_erases_it(
    client: httpx.Client, serve_app: ServeApp
) -> None:
    created = post_job(client, synthetic_subject_png(0), synthetic_subject_png(1), **LONG)
    assert created.status_code == 202, created.text
    location, video_id = created.headers["location"], created.json()["id"]
    running = wait_rendering(client, location)
    assert running["status"] == "in_progress", "the job must still run to be canceled"

    response = client.post(f"{location}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "canceled" and response.json()["id"] == video_id
    # The generator (one replica, one video at a time) takes the next job only once the canceled one
    # stopped: when it is done, nothing of the canceled job can still be written.
    after = post_job(client, synthetic_subject_png(2), synthetic_subject_png(3), **SHORT)
    assert wait_terminal(client, after.headers["location"])["status"] == "completed"

    job = client.get(location)
    assert job.status_code == 200 and job.json()["status"] == "canceled"
    assert job.json()["result"] is None and job.json()["error"] is None
    root = serve_app.store_root
    assert not list((root / "inputs" / video_id).glob("*")), "its photos are erased"
    assert not list((root / "outputs" / video_id).glob("*")), "no partial output is left"
    assert (root / "jobs" / video_id / "manifest.json").is_file(), "its record stays"
    assert video_id in [j["id"] for j in client.get("/v1/videos").json()["data"]]
    assert_problem(client.get(f"{location}/content"), 409, "content_not_ready")

    assert_problem(client.post(f"{location}/cancel"), 409, "job_finished")
    assert_problem(client.post(f"{after.headers['location']}/cancel"), 409, "job_finished")

    assert client.delete(location).status_code == 200
    assert_problem(client.get(location), 404, "not_found")
    assert_problem(client.post(f"{location}/cancel"), 404, "not_found")
    assert not (root / "jobs" / video_id).exists()
    client.delete(after.headers["location"])


def test_cancel_of_an_unknown_video_is_not_found(client: httpx.Client) -> None:
    assert_problem(client.post("/v1/videos/video_0123456789abcdef01234567/cancel"), 404, "not_found")
    assert_problem(client.post("/v1/videos/..%2F..%2Fetc/cancel"), 404, "not_found")


def test_reports_are_stored_outlive_the_video_and_are_listed_for_operators(
    client: httpx.Client, serve_app: ServeApp, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    created = post_job(client, synthetic_subject_png(0), synthetic_subject_png(3), **SHORT)
    assert created.status_code == 202, created.text
    video_id = created.json()["id"]
    details = "She never agreed to this.\nPlease remove it."
    response = client.post(
        "/v1/reports", json={"reason": "not_consented", "video_id": video_id, "details": details}
    )
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["object"] == "report" and report["id"].startswith("rpt_") and report["received_at"]
    digest = hashlib.sha256(b"a file someone found").hexdigest()
    by_hash = client.post("/v1/reports", json={"reason": "explicit", "file_sha256": digest})
    assert by_hash.status_code == 201, by_hash.text

    wait_terminal(client, created.headers["location"])
    assert client.delete(created.headers["location"]).status_code == 200
    (stored,) = [p for p in (serve_app.store_root / "reports").rglob("*.json") if report["id"] in p.name]
    assert stored.relative_to(serve_app.store_root).parts[:1] == ("reports",)
    record = json.loads(stored.read_text())
    assert record["video_id"] == video_id and record["details"] == details and record["tenant"] == "public"

    config = tmp_path / "settings.yaml"
    config.write_text(
        yaml.safe_dump({"storage": {"backend": "local", "local_root": str(serve_app.store_root)}})
    )
    capsys.readouterr()
    assert kissgen(["reports", "--json", "--config", str(config)]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["id"] for r in listed} >= {report["id"], by_hash.json()["id"]}
    assert kissgen(["reports", "--config", str(config)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if report["id"] in line]
    assert len(lines) == 1 and "not_consented" in lines[0] and video_id in lines[0]


def test_a_report_about_an_unknown_video_is_not_found(client: httpx.Client) -> None:
    response = client.post(
        "/v1/reports", json={"reason": "minor", "video_id": "video_0123456789abcdef01234567"}
    )
    assert_problem(response, 404, "not_found")


def fields_of(body: dict[str, Any]) -> set[str]:
    return {e["field"] for e in body.get("errors", [])}


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "fields"),
    [
        ({"content": b""}, 422, "invalid_request", set()),
        (
            {"content": b"not json", "headers": {"content-type": "application/json"}},
            422,
            "invalid_request",
            {"body"},
        ),
        (
            {"content": b"[1, 2]", "headers": {"content-type": "application/json"}},
            422,
            "invalid_request",
            {"body"},
        ),
        (
            {"content": b"[" * 5000 + b"]" * 5000, "headers": {"content-type": "application/json"}},
            422,
            "invalid_request",
            {"body"},
        ),
        (
            {"data": {"reason": "minor", "video_id": "video_1"}},
            422,
            "invalid_request",
            set(),
        ),  # a form, not JSON
        ({"json": {"reason": "boring", "file_sha256": "a" * 64}}, 422, "invalid_request", {"reason"}),
        (
            {"json": {"reason": "other", "file_sha256": "a" * 64, "details": "x" * 1001}},
            422,
            "invalid_request",
            {"details"},
        ),
        (
            {"json": {"reason": "other", "file_sha256": "a" * 64, "details": 7}},
            422,
            "invalid_request",
            {"details"},
        ),
        ({"json": {"reason": "other"}}, 422, "invalid_request", {"video_id", "file_sha256"}),
        (
            {"json": {"reason": "other", "video_id": "video_1", "file_sha256": "a" * 64}},
            422,
            "invalid_request",
            {"video_id", "file_sha256"},
        ),
        ({"json": {"reason": "other", "file_sha256": "A" * 64}}, 422, "invalid_request", {"file_sha256"}),
        ({"json": {"reason": "other", "video_id": "../../jobs"}}, 422, "invalid_request", {"video_id"}),
        (
            {"json": {"reason": "other", "file_sha256": "a" * 64, "tenant": "acme"}},
            422,
            "invalid_request",
            {"tenant"},
        ),
        (
            {"json": {"reason": "other", "file_sha256": "a" * 64, "details": "x" * 20_000}},
            413,
            "payload_too_large",
            set(),
        ),
    ],
)
def test_hostile_reports_get_problems(
    client: httpx.Client, kwargs: dict[str, Any], status: int, code: str, fields: set[str]
) -> None:
    body = assert_problem(client.post("/v1/reports", **kwargs), status, code)
    assert fields <= fields_of(body), body


def test_hostile_analyses_get_problems(client: httpx.Client) -> None:
    photo = synthetic_subject_png(0)
    assert fields_of(assert_problem(client.post("/v1/analyses"), 422, "invalid_request")) == {"photo"}
    wrong_type = client.post("/v1/analyses", json={"photo": "aGVsbG8="})
    assert fields_of(assert_problem(wrong_type, 422, "invalid_request")) == {"photo"}
    no_photo = client.post("/v1/analyses", data={"subject": "a"}, files={"other": ("x", b"x")})
    assert {"photo", "other"} <= fields_of(assert_problem(no_photo, 422, "invalid_request"))
    assert fields_of(assert_problem(analyze(client, photo, "c"), 422, "invalid_request")) == {"subject"}
    text_photo = client.post("/v1/analyses", data={"photo": "not a file"})
    assert "photo" in fields_of(assert_problem(text_photo, 422, "invalid_request"))
    ppm = io.BytesIO()  # an image, but not a photo format the service takes
    Image.new("RGB", (128, 128), (200, 120, 90)).save(ppm, "PPM")
    assert_problem(analyze(client, ppm.getvalue(), "b"), 415, "unsupported_image", subject="b")
    assert_problem(analyze(client, b"%PDF-1.7 not a photo", "b"), 422, "image_unreadable", subject="b")
    assert_problem(
        analyze(client, b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "a"), 422, "image_unreadable", subject="a"
    )
    two = client.post("/v1/analyses", files=[("photo", ("a.png", photo)), ("photo", ("b.png", photo))])
    assert_problem(two, 422, "invalid_request")
    huge = analyze(client, b"\xff" * (15 * 2**20 + 1), "b")
    assert_problem(huge, 413, "image_too_large", subject="b")
