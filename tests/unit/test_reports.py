"""Abuse reports: the request's rules, the append-only log, and `kissgen reports` reading it back."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from kiss_core.cli import main, settings_from_config
from kiss_core.jobs.reports import REPORT_REASONS, ReportLog, ReportRequest
from kiss_core.schemas import utcnow
from kiss_core.storage import LocalDirStore

SHA = "ab" * 32


def test_a_report_names_exactly_one_thing_with_a_known_reason() -> None:
    assert ReportRequest(reason="minor", video_id="video_0123abcd").details == ""
    assert ReportRequest(reason="other", file_sha256=SHA, details="x" * 1000).file_sha256 == SHA
    for bad in (
        {"reason": "minor"},  # neither
        {"reason": "minor", "video_id": "video_1", "file_sha256": SHA},  # both
        {"reason": "boring", "video_id": "video_1"},
        {"reason": "minor", "video_id": "video_1", "details": "x" * 1001},
        {"reason": "minor", "file_sha256": SHA.upper()},
        {"reason": "minor", "video_id": "../../etc/passwd"},
        {"reason": "minor", "video_id": "video_1", "tenant": "someone-else"},  # not the client's to say
    ):
        with pytest.raises(ValidationError):
            ReportRequest.model_validate(bad)
    assert REPORT_REASONS == ("not_consented", "minor", "explicit", "impersonation", "harassment", "other")


def test_reports_are_kept_one_object_each_and_listed_oldest_first(tmp_path: Path) -> None:
    store = LocalDirStore(tmp_path)
    log = ReportLog(store)
    first = log.record(ReportRequest(reason="not_consented", video_id="video_aa"), "acme")
    second = log.record(ReportRequest(reason="other", file_sha256=SHA, details="seen online"), "public")
    keys = store.list("reports/")
    assert len(keys) == 2 and all(k.endswith(".json") for k in keys)
    today = f"{utcnow():%Y/%m/%d}"
    assert all(k.startswith(f"reports/{today}/") for k in keys)
    assert [r.id for r in log.list()] == [first.id, second.id]
    assert log.list(utcnow().date() + timedelta(days=2)) == []
    assert [r.tenant for r in log.list(utcnow().date() - timedelta(days=1))] == ["acme", "public"]
    stored = json.loads(store.get(next(k for k in keys if first.id in k)))
    assert stored["reason"] == "not_consented" and stored["video_id"] == "video_aa"


def test_kissgen_reports_reads_the_store_the_settings_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "store"
    ReportLog(LocalDirStore(root)).record(
        ReportRequest(reason="impersonation", video_id="video_bb", details="line one\nline two"), "acme"
    )
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text(yaml.safe_dump({"storage": {"backend": "local", "local_root": str(root)}}))

    assert main(["reports", "--config", str(settings_file)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "acme  impersonation  video_bb  line one line two" in out[0]

    assert main(["reports", "--json", "--since", "2000-01-01", "--config", str(settings_file)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["details"] == "line one\nline two"

    assert main(["reports", "--since", "yesterday", "--config", str(settings_file)]) == 2


def test_a_serve_config_gives_the_settings_its_application_gets(tmp_path: Path) -> None:
    config = {
        "applications": [
            {
                "name": "kissgen",
                "import_path": "graph:build_app",
                "runtime_env": {"env_vars": {"KISS_STORAGE__BACKEND": "s3", "OTHER": "x"}},
                "args": {"profile": "production", "settings": {"storage": {"bucket": "reports-test"}}},
            }
        ]
    }
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    before = os.environ.get("KISS_STORAGE__BACKEND")
    settings = settings_from_config(path)
    assert settings.storage.backend == "s3" and settings.storage.bucket == "reports-test"
    assert os.environ.get("KISS_STORAGE__BACKEND") == before, "the environment is put back"
