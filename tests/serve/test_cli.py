"""`kissgen` against the running Serve application: demo subjects in, an MP4 out; errors readable."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiss_core.cli import main
from kiss_core.media.video import probe_mp4
from tests.conftest import ServeApp


def test_demo_subjects_then_create_downloads_a_video(
    serve_app: ServeApp, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo-subjects", str(tmp_path / "demo"), "--first", "2"]) == 0
    out = tmp_path / "kiss.mp4"
    argv = [
        "--url",
        serve_app.url,
        "create",
        str(tmp_path / "demo/a.png"),
        str(tmp_path / "demo/b.png"),
        "--consent",
    ]
    options = ["--style", "cheek", "--seconds", "1", "--fps", "10", "--size", "256x160", "-o", str(out)]
    code = main([*argv, *options])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert probe_mp4(out.read_bytes())["frames"] == 10
    assert "completed" in printed and "subject a: identity mean" in printed


def test_create_reports_a_refused_photo(
    serve_app: ServeApp, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["demo-subjects", str(tmp_path)])
    (tmp_path / "empty.png").write_bytes(b"not a photo")
    argv = ["--url", serve_app.url, "create", str(tmp_path / "a.png"), str(tmp_path / "empty.png")]
    assert main([*argv, "--consent"]) == 1
    err = capsys.readouterr().err
    assert "image_unreadable" in err and "(subject b)" in err
    assert main(argv) == 1, "without --consent the service refuses"
    assert "consent_required" in capsys.readouterr().err
