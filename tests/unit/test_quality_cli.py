"""`kissgen quality` on an MP4 built from two synthetic subjects (faces of nobody) pasted into frames."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from kiss_core.cli import main
from kiss_core.faces.synthetic import synthetic_subject, synthetic_subject_png
from kiss_core.media.video import encode_mp4

WIDTH, HEIGHT = 640, 352
SCALE = 0.5


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Reference photos of subjects 0 and 1, and a 6-frame MP4 in which they move towards each other."""
    folder = tmp_path_factory.mktemp("quality_cli")
    paths = {"a": folder / "a.png", "b": folder / "b.png", "video": folder / "clip.mp4"}
    paths["a"].write_bytes(synthetic_subject_png(0))
    paths["b"].write_bytes(synthetic_subject_png(1))
    small = [
        cv2.resize(synthetic_subject(i), None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_AREA)
        for i in (0, 1)
    ]
    height, width = small[0].shape[:2]
    frames = []
    for step in range(6):
        frame = np.full((HEIGHT, WIDTH, 3), 110, dtype=np.uint8)
        left, right = 40 + 12 * step, WIDTH - 40 - width - 12 * step
        frame[26 : 26 + height, left : left + width] = small[0]
        frame[26 : 26 + height, right : right + width] = small[1]  # b overlaps a's edge at the end
        frames.append(frame)
    paths["video"].write_bytes(encode_mp4(frames, 12))
    return paths


def test_quality_json_reports_both_subjects(
    clip: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["quality", str(clip["video"]), "--ref-a", str(clip["a"]), "--ref-b", str(clip["b"])]
    assert main([*args, "--json", "--frames", "6"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["threshold"] == pytest.approx(0.92)
    by_subject = {q["subject"]: q for q in report["subjects"]}
    assert sorted(by_subject) == ["a", "b"]
    for quality in by_subject.values():
        assert quality["frames_checked"] == 6 and quality["frames_found"] == 6
        assert quality["visible_share"] == 1.0
        assert quality["similarity_min"] > report["threshold"]
    assert report["both_found"] == 1.0
    assert report["contact"]["frame"] == 5  # the faces are closest at the end
    # The portraits' mouths end 200 px apart; the half-size faces are ~90 px wide (jaw span).
    assert 1.8 < report["contact"]["mouth_distance"] < 2.6
    # The pasted portraits are rectangles whose edges move outside the face boxes: some real change.
    assert 0 < report["flicker"]["mean"] <= report["flicker"]["p95"] < 20 and report["flicker"]["frames"] == 6
    assert report["lighting"]["delta_e_input"] is not None
    assert report["lighting"]["delta_e_output"] is not None


def test_quality_prints_a_summary(clip: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    args = ["quality", str(clip["video"]), "--ref-a", str(clip["a"]), "--ref-b", str(clip["b"])]
    assert main([*args, "--frames", "3"]) == 0
    out = capsys.readouterr().out
    assert "subject a:" in out and "subject b:" in out
    assert "contact:" in out and "flicker:" in out and "lighting:" in out
    assert "both people found in 100% of checked frames" in out


def test_quality_refuses_a_photo_without_a_face(
    clip: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blank = tmp_path / "blank.png"
    ok, data = cv2.imencode(".png", np.full((300, 300, 3), 128, dtype=np.uint8))
    assert ok
    blank.write_bytes(data.tobytes())
    assert main(["quality", str(clip["video"]), "--ref-a", str(blank), "--ref-b", str(clip["b"])]) == 1
    assert "face" in capsys.readouterr().err
