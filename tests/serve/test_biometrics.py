"""No biometric data leaves the service: the identity embedding of a face is in no response of the API
(create, read, list), while the job's own manifest keeps it for the stages (erased with the job)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from kiss_core.faces.synthetic import synthetic_subject_png
from kiss_core.keys import input_key
from tests.conftest import ServeApp
from tests.serve.helpers import post_job, wait_terminal

EMBEDDING_LENGTHS = (128, 512)  # dlib and ArcFace


def float_vectors(value: Any, path: str = "$") -> list[str]:
    """Where `value` holds a list of floats as long as an embedding, or a key named like one."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if "embedding" in key or "descriptor" in key:
                found.append(f"{path}.{key}")
            found += float_vectors(item, f"{path}.{key}")
    elif isinstance(value, list):
        if len(value) in EMBEDDING_LENGTHS and all(isinstance(v, float) for v in value):
            found.append(path)
        for index, item in enumerate(value):
            found += float_vectors(item, f"{path}[{index}]")
    return found


def test_no_response_of_a_job_carries_a_face_embedding(serve_app: ServeApp) -> None:
    with httpx.Client(base_url=serve_app.url, timeout=60) as client:
        created = post_job(client, synthetic_subject_png(0), synthetic_subject_png(1), seconds=1, fps=8)
        assert created.status_code == 202, created.text
        job = wait_terminal(client, created.headers["location"])
        listed = client.get("/v1/videos").json()
    assert job["status"] == "completed", job.get("error")
    assert len(job["subjects"]) == 2 and all(len(s["landmarks"]) == 68 for s in job["subjects"])
    for name, body in {"create": created.json(), "read": job, "list": listed}.items():
        assert float_vectors(body) == [], f"{name} response carries an embedding"
    manifest = json.loads((serve_app.store_root / "jobs" / job["id"] / "manifest.json").read_text())
    assert all(len(s["embedding"]) == 128 for s in manifest["subjects"]), "the stages still have it"
    assert (serve_app.store_root / input_key(job["id"], "a")).exists()


def test_the_walk_finds_an_embedding_where_there_is_one() -> None:
    assert float_vectors({"subjects": [{"embedding": [0.1] * 128}]}) == [
        "$.subjects[0].embedding",
        "$.subjects[0].embedding",
    ]
    assert float_vectors({"data": [[0.5] * 512]}) == ["$.data[0]"]
    assert float_vectors({"landmarks": [[1.0, 2.0]] * 68, "box": [1.0, 2.0, 3.0, 4.0]}) == []
