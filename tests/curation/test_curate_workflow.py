"""`kissgen curate` end to end on real Ray Data (the session cluster), real face models, real files:
every corpus clip gets its decision and its one reason; kept segments hold the contact, in the
training format; a rerun skips everything by content hash; S3 in and out through the real server.
"""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import av
import numpy as np
import pytest

from kiss_core.curation import manifest
from kiss_core.curation.clip import FaceModels, curate_clip
from kiss_core.curation.config import CurateConfig
from kiss_core.storage import S3Store
from tests.curation.conftest import Corpus
from tests.support.s3server import S3Endpoint, s3_server  # noqa: F401
from workflows.cli import main

pytestmark = pytest.mark.slow


def _by_path(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(row["source_path"], []).append(row)
    return out


def _frames(data: bytes) -> tuple[int, float, int, int]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return count, float(stream.average_rate or 0), stream.codec_context.width, stream.codec_context.height


def check_kept_segment(dest: Path, name: str, rows: list[dict], contact_s: float) -> None:
    (source,) = [r for r in rows if r["kind"] == "source"]
    (segment,) = [r for r in rows if r["kind"] == "segment"]
    assert segment["source_id"] == source["source_id"] and segment["licence"] == "kissgen-synthetic"
    assert segment["consent_refs"] == ["synthetic/a", "synthetic/b"]
    # The trimmed clip holds the planned contact (the start of the hold). Its contact_frame is where the
    # lips first meet, during the plan's closing-in phase: at most 0.75 s (3 samples at 4 fps) before.
    assert segment["segment_start_s"] <= contact_s <= segment["segment_end_s"]
    found_s = segment["segment_start_s"] + segment["contact_frame"] / 16
    assert 0 <= contact_s - found_s <= 0.75, (name, found_s, contact_s)
    count, fps, width, height = _frames((dest / segment["clip"]).read_bytes())
    expected_size = (480, 832) if "portrait" in name else (832, 480)
    assert (width, height) == expected_size == (segment["width"], segment["height"])
    assert count == segment["num_frames"] and count % 4 == 1 and 33 <= count <= 81 and fps == 16
    tracks = np.load(dest / segment["tracks"])
    assert tracks["landmarks"].shape == (count, 2, 68, 2) and tracks["landmarks"].dtype == np.float32
    assert tracks["valid"].shape == (count, 2) and tracks["valid"].dtype == bool
    contact = tracks["landmarks"][segment["contact_frame"]]
    assert tracks["valid"][segment["contact_frame"]].all()
    assert contact[0, :, 0].mean() < contact[1, :, 0].mean()  # person 0 is on the left
    assert segment["caption"].startswith("Two fully clothed adults")


def test_curate_a_directory_decides_every_clip_for_its_reason(
    ray_cluster: None, curation_corpus: Corpus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "dataset"
    assert main(["curate", str(curation_corpus.root), str(dest)]) == 0
    rows = manifest.read_rows(dest)
    by_path = _by_path(rows)
    assert set(by_path) == set(curation_corpus.expected)
    outcome = {}
    for name in curation_corpus.expected:
        (source,) = [r for r in by_path[name] if r["kind"] == "source"]
        outcome[name] = (source["decision"], tuple(source["reasons"]))
    assert outcome == {n: (e.decision, e.reasons) for n, e in curation_corpus.expected.items()}
    for name, expected in curation_corpus.expected.items():
        if expected.decision == "kept":
            assert expected.contact_s is not None
            check_kept_segment(dest, name, by_path[name], expected.contact_s)
    styles = {r["source_path"]: r["style"] for r in rows if r["kind"] == "segment"}
    assert styles["clean_cheek.mp4"] == "cheek" and styles["clean_peck.mp4"] == "peck"

    segments = manifest.read_segments(dest)
    assert len(segments) == sum(e.decision == "kept" for e in curation_corpus.expected.values())
    report = json.loads((dest / "report" / "report.json").read_text())
    assert report["clips"] == len(curation_corpus.expected) and report["segments"] == len(segments)
    assert report["reasons"]["unsafe_path"] == 2 and report["decisions"]["kept"] == len(segments)
    for picture in ("scores.png", "contact_sheet.png"):
        assert (dest / "report" / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Rerun: every clip already decided (content hash + path) is skipped, the manifest is the same.
    capsys.readouterr()
    assert main(["curate", str(curation_corpus.root), str(dest)]) == 0
    assert f"{len(curation_corpus.expected) - 3} already done" in capsys.readouterr().out  # listing refusals
    again = manifest.read_rows(dest)
    key = lambda r: (r["source_path"], r["kind"], r["decision"], tuple(r["reasons"]), r["segment_id"])  # noqa: E731
    assert sorted(map(key, again)) == sorted(map(key, rows))


def test_curate_clip_without_ray_and_a_crash_is_failed(curation_corpus: Corpus, tmp_path: Path) -> None:
    models, config = FaceModels.load(), CurateConfig()
    path = curation_corpus.root / "clean_peck.mp4"
    result = curate_clip(path, path.with_suffix(".json").read_bytes(), models, config)
    assert result.decision == "kept" and len(result.segments) == 1
    assert set(json.loads(result.row["stage_seconds"])) >= {"decode", "faces", "kiss", "export"}
    broken = curate_clip(tmp_path, b"{}", models, config)  # a directory: reading it raises
    assert broken.decision == "failed" and "IsADirectoryError" in broken.row["error"]


def test_curate_from_and_to_s3(
    ray_cluster: None,
    curation_corpus: Corpus,
    s3_server: S3Endpoint,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = s3_server.settings()
    for field in ("endpoint", "access_key", "secret_key", "region"):
        monkeypatch.setenv(f"KISS_STORAGE__{field.upper()}", str(getattr(settings, field)))
    store = S3Store(settings)
    prefix = f"curate-{uuid.uuid4().hex[:8]}/"
    names = ["clean_peck.mp4", "clean_peck.json", "no_sidecar.mp4", "zero_bytes.mp4", "zero_bytes.json"]
    for name in names:
        store.put(f"{prefix}src/{name}", (curation_corpus.root / name).read_bytes())
    url = f"s3://{settings.bucket}/{prefix}"
    assert main(["curate", url + "src", url + "dst/", "--workers", "1"]) == 0
    rows = manifest.read_rows(store.get(f"{prefix}dst/manifest.parquet"))
    decided = {(r["source_path"], r["kind"]): (r["decision"], r["reasons"]) for r in rows}
    assert decided == {
        ("clean_peck.mp4", "source"): ("kept", []),
        ("clean_peck.mp4", "segment"): ("kept", []),
        ("no_sidecar.mp4", "source"): ("rejected", ["no_sidecar"]),
        ("zero_bytes.mp4", "source"): ("rejected", ["empty_file"]),
    }
    (segment,) = [r for r in rows if r["kind"] == "segment"]
    assert _frames(store.get(f"{prefix}dst/{segment['clip']}"))[0] == segment["num_frames"]
    assert store.exists(f"{prefix}dst/{segment['tracks']}")
    assert store.exists(f"{prefix}dst/report/report.json")
