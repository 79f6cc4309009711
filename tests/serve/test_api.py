"""The whole product through a real Serve instance: HTTP in, a kiss video of two synthetic subjects out."""

from __future__ import annotations

import io
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from kiss_core.faces.synthetic import synthetic_subject_png
from kiss_core.media.video import decode_mp4, probe_mp4
from tests.conftest import ServeApp
from tests.serve.helpers import assert_problem, post_job, wait_terminal

PARAMS = {"style": "romantic", "intensity": 0.6, "seconds": 2, "fps": 12, "size": "416x240", "seed": 7}


@pytest.fixture(scope="module")
def client(serve_app: ServeApp) -> httpx.Client:
    with httpx.Client(base_url=serve_app.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def subjects() -> tuple[bytes, bytes]:
    return synthetic_subject_png(0), synthetic_subject_png(1)


@pytest.fixture(scope="module")
def completed_job(client: httpx.Client, subjects: tuple[bytes, bytes]) -> dict[str, Any]:
    response = post_job(client, *subjects, **PARAMS)
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["status"] == "queued" and created["object"] == "video"
    assert response.headers["location"] == f"/v1/videos/{created['id']}"
    job = wait_terminal(client, response.headers["location"])
    job["_created"] = created
    return job


def test_video_job_completes_with_requested_size_and_frames(
    client: httpx.Client, completed_job: dict[str, Any]
) -> None:
    job = completed_job
    assert job["status"] == "completed", job.get("error")
    assert job["progress"] == 100 and job["completed_at"]
    result = job["result"]
    assert (result["width"], result["height"], result["frames"], result["fps"]) == (416, 240, 24, 12)

    content = client.get(f"/v1/videos/{job['id']}/content", params={"variant": "video"})
    assert content.status_code == 200 and content.headers["content-type"] == "video/mp4"
    info = probe_mp4(content.content)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    frames, fps = decode_mp4(content.content)
    assert frames.shape == (24, 240, 416, 3)
    assert fps == pytest.approx(12)
    assert frames.std() > 10, "the video is not blank"


def test_both_identities_are_reported(completed_job: dict[str, Any]) -> None:
    quality = completed_job["result"]["quality"]
    subjects = {s["subject"]: s for s in quality["subjects"]}
    assert set(subjects) == {"a", "b"}
    for s in subjects.values():
        assert s["frames_checked"] > 0
        assert s["frames_found"] >= s["frames_checked"] // 2, s
        assert s["similarity_mean"] >= quality["threshold"], s
    analyses = {a["subject"]: a for a in completed_job["subjects"]}
    assert set(analyses) == {"a", "b"} and all(len(a["landmarks"]) == 68 for a in analyses.values())


def test_thumbnail_and_still_are_images(client: httpx.Client, completed_job: dict[str, Any]) -> None:
    for variant in ("thumbnail", "image"):
        response = client.get(f"/v1/videos/{completed_job['id']}/content", params={"variant": variant})
        assert response.status_code == 200
        image = Image.open(io.BytesIO(response.content))
        assert image.format == "JPEG"
    still = Image.open(
        io.BytesIO(client.get(f"/v1/videos/{completed_job['id']}/content?variant=image").content)
    )
    assert still.size == (416, 240)


def test_one_trace_spans_all_stages_across_processes(
    completed_job: dict[str, Any], otlp_receiver: Any
) -> None:
    names = {"video.submit", "face_analysis", "video.run", "identity", "generation", "render_encode"}

    def spans_of_job(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
        runs = [s for s in spans if s["attributes"].get("job_id") == completed_job["id"]]
        return [s for s in spans if runs and s["trace_id"] == runs[0]["trace_id"]]

    def all_stages_arrived(spans: list[dict[str, Any]]) -> bool:
        return names <= {s["name"] for s in spans_of_job(spans)}

    arrived = otlp_receiver.wait_for(all_stages_arrived, timeout=30)
    spans = spans_of_job(arrived)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)
    by_id = {s["span_id"]: s for s in spans}

    def parent(name: str) -> str:
        return by_id[by_name[name][0]["parent_span_id"]]["name"]

    assert len(by_name["face_analysis"]) == 2
    assert all(by_id[s["parent_span_id"]]["name"] == "video.submit" for s in by_name["face_analysis"])
    assert parent("video.run") == "video.submit"
    assert parent("identity") == "video.run"
    assert parent("generation") == "video.run"
    assert parent("render_encode") == "generation"
    services = {s["service_name"] for s in spans}
    assert {
        "kissgen.ingress",
        "kissgen.face_analyzer",
        "kissgen.identity_encoder",
        "kissgen.video_generator",
    } <= services
    assert len({s["pid"] for s in spans}) >= 4, "stages ran in separate replica processes"


def test_still_only_job(client: httpx.Client, subjects: tuple[bytes, bytes]) -> None:
    response = post_job(client, *subjects, style="peck", seconds=1, fps=8, size="256x256", output="image")
    assert response.status_code == 202, response.text
    job = wait_terminal(client, response.headers["location"])
    assert job["status"] == "completed", job.get("error")
    assert set(job["result"]["keys"]) == {"image", "thumbnail"}
    not_there = client.get(f"/v1/videos/{job['id']}/content", params={"variant": "video"})
    assert_problem(not_there, 409, "content_not_ready")


def test_unreadable_bytes_is_a_problem(client: httpx.Client, subjects: tuple[bytes, bytes]) -> None:
    response = post_job(client, b"\x89PNG but not really" * 10, subjects[1], **PARAMS)
    assert_problem(response, 422, "image_unreadable", subject="a")


def test_photo_without_a_face_is_a_problem(client: httpx.Client, subjects: tuple[bytes, bytes]) -> None:
    gradient = np.tile(np.linspace(0, 255, 400, dtype=np.uint8)[None, :, None], (300, 1, 3))
    buffer = io.BytesIO()
    Image.fromarray(gradient).save(buffer, format="PNG")
    response = post_job(client, subjects[0], buffer.getvalue(), **PARAMS)
    assert_problem(response, 422, "face_not_found", subject="b")


@pytest.mark.parametrize(
    ("consent", "subject"),
    [({}, "a"), ({"consent_a": "true"}, "b"), ({"consent_a": "true", "consent_b": "false"}, "b")],
)
def test_missing_consent_is_refused(
    client: httpx.Client, subjects: tuple[bytes, bytes], consent: dict[str, str], subject: str
) -> None:
    response = post_job(client, *subjects, consent=consent, **PARAMS)
    assert_problem(response, 422, "consent_required", subject=subject)


def test_malformed_consent_is_invalid(client: httpx.Client, subjects: tuple[bytes, bytes]) -> None:
    response = post_job(client, *subjects, consent={"consent_a": "maybe", "consent_b": "true"}, **PARAMS)
    body = assert_problem(response, 422, "invalid_request")
    assert [e["field"] for e in body["errors"]] == ["consent_a"]


def test_missing_field_is_a_problem(client: httpx.Client, subjects: tuple[bytes, bytes]) -> None:
    response = client.post("/v1/videos", data={"style": "peck"}, files={"subject_a": ("a.png", subjects[0])})
    body = assert_problem(response, 422, "invalid_request")
    assert {"field": "subject_b", "message": "a photo file is required"} in body["errors"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("style", "wild"),
        ("intensity", "2"),
        ("size", "833x480"),
        ("fps", "abc"),
        ("seconds", "0"),
        ("background", "c"),
    ],
)
def test_invalid_parameter_is_a_problem(
    client: httpx.Client, subjects: tuple[bytes, bytes], field: str, value: str
) -> None:
    response = post_job(client, *subjects, **{**PARAMS, field: value})
    body = assert_problem(response, 422, "invalid_request")
    assert any(e["field"] == field for e in body["errors"]), body


def test_unknown_video_is_404(client: httpx.Client) -> None:
    assert_problem(client.get("/v1/videos/video_0123456789abcdef01234567"), 404, "not_found")
    assert_problem(client.get("/v1/videos/..%2F..%2Fetc"), 404, "not_found")
    assert_problem(client.get("/v2/nothing-here"), 404, "not_found")
    assert_problem(client.put("/v1/videos"), 405, "method_not_allowed")


def test_delete_erases_the_job(
    client: httpx.Client, subjects: tuple[bytes, bytes], serve_app: ServeApp
) -> None:
    response = post_job(client, *subjects, style="peck", seconds=1, fps=8, size="256x144")
    video_id = response.json()["id"]
    job = wait_terminal(client, response.headers["location"])
    assert job["status"] == "completed"
    owned = [
        p
        for root in ("jobs", "inputs", "outputs")
        for p in (serve_app.store_root / root / video_id).rglob("*")
    ]
    assert len([p for p in owned if p.is_file()]) == 6
    deleted = client.delete(f"/v1/videos/{video_id}")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert_problem(client.get(f"/v1/videos/{video_id}"), 404, "not_found")
    assert not [p for p in serve_app.store_root.rglob("*") if p.is_file() and video_id in str(p.parent)]
    audit = [p.read_text() for p in (serve_app.store_root / "audit").rglob("*.json")]
    assert any(video_id in text for text in audit), "the audit record outlives the erased job"


def test_openapi_documents_the_api(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/v1/videos", "/v1/videos/{video_id}", "/v1/videos/{video_id}/content"} <= set(spec["paths"])
    body = spec["paths"]["/v1/videos"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"subject_a", "subject_b", "consent_a", "consent_b", "style", "seconds", "size"} <= set(
        body["properties"]
    )
    assert {"subject_a", "subject_b", "consent_a", "consent_b"} <= set(body["required"])
    assert client.get("/docs").status_code == 200
