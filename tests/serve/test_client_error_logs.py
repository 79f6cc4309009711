"""A client error leaves one log line with its code and trace id, no traceback; a server error keeps its
traceback. Driven through the real Serve application, reading the replicas' log files."""

from __future__ import annotations

import io
import logging
import secrets
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from deployments.logs import ClientErrorFilter
from kiss_core.errors import FaceNotFound, StorageError
from kiss_core.faces.synthetic import synthetic_subject_png
from tests.conftest import ServeApp
from tests.serve.helpers import assert_problem, post_job

PARAMS = {"style": "peck", "seconds": 1, "fps": 8, "size": "256x144"}


def _replica_log(deployment: str) -> Path:
    """The log file of the `kissgen` app's one replica of `deployment` (Serve names it after the replica)."""
    import ray

    (name,) = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::kissgen#{deployment}#")
    ]
    replica_id = name.rpartition("#")[2]
    logs_dir = Path(ray._private.worker._global_node.get_logs_dir_path())  # this cluster's session
    return logs_dir / "serve" / f"replica_kissgen_{deployment}_{replica_id}.log"


def _no_face_png() -> bytes:
    gradient = np.tile(np.linspace(0, 255, 400, dtype=np.uint8)[None, :, None], (300, 1, 3))
    buffer = io.BytesIO()
    Image.fromarray(gradient).save(buffer, format="PNG")
    return buffer.getvalue()


def _records_of(text: str, needle: str) -> list[str]:
    """The log records (a first line and its continuation lines) of every request a line naming
    `needle` belongs to, found by Serve's request id (the fifth field of its text format)."""
    records: list[str] = []
    for line in text.splitlines():
        if line[:5].strip() in ("INFO", "DEBUG", "WARNI", "ERROR", "CRITI"):
            records.append(line)
        elif records:
            records[-1] += "\n" + line
    request_ids = {r.split()[4] for r in records if needle in r.splitlines()[0]}
    return [r for r in records if len(r.split()) > 4 and r.split()[4] in request_ids]


def test_a_422_leaves_one_line_with_its_code_and_trace_id_and_no_traceback(serve_app: ServeApp) -> None:
    logs = {d: _replica_log(d) for d in ("Ingress", "FaceAnalyzer")}
    sizes = {d: path.stat().st_size for d, path in logs.items()}
    trace_id = secrets.token_hex(16)
    headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
    with httpx.Client(base_url=serve_app.url, timeout=60, headers=headers) as client:
        response = post_job(client, synthetic_subject_png(0), _no_face_png(), **PARAMS)
    assert_problem(response, 422, "face_not_found", subject="b")

    found: dict[str, list[str]] = {}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        new = {d: path.read_bytes()[sizes[d] :].decode(errors="replace") for d, path in logs.items()}
        found = {d: _records_of(text, f"trace_id={trace_id}") for d, text in new.items()}
        if all(found.values()):
            break
        time.sleep(0.3)
    for deployment, records in found.items():
        lines = [r for r in records if "code=face_not_found" in r]
        assert len(lines) == 1, (deployment, records)
        assert "subject=b" in lines[0] and lines[0].startswith("INFO"), lines[0]
        assert not any("Traceback" in r or r.startswith("ERROR") for r in records), (deployment, records)


def _record(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        info = sys.exc_info()
    return logging.LogRecord("ray.serve", logging.ERROR, __file__, 1, "Request failed.", (), info)


def test_the_filter_shortens_client_errors_only() -> None:
    client = FaceNotFound("no face", "a")
    client.trace_id = "ab" * 16  # type: ignore[attr-defined]  (what stage_span tags)
    record = _record(client)
    assert ClientErrorFilter().filter(record)
    assert record.levelno == logging.INFO and record.exc_info is None
    assert record.getMessage() == (
        f"Request refused: client error code=face_not_found status=422 subject=a trace_id={'ab' * 16}"
    )

    server = _record(StorageError("S3 is down"))
    assert ClientErrorFilter().filter(server)
    assert server.levelno == logging.ERROR, "a server error stays an error"
    assert server.exc_info is not None, "and keeps its traceback"
