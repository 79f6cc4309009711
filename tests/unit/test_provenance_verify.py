"""`kissgen verify FILE` and verify_media on what the service produces: marked, labelled, signed media."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kiss_core.cli import main
from kiss_core.generation.provenance.credentials import TRAINED_ALGORITHMIC_MEDIA, sign_media
from kiss_core.generation.provenance.label import FrameLabeler
from kiss_core.generation.provenance.verify import sniff_mime, verify_media
from kiss_core.generation.provenance.watermark import WatermarkEmbedder
from kiss_core.media.video import encode_jpeg, encode_mp4
from kiss_core.settings import C2paSettings, LabelSettings
from tests.support.certs import SigningCertFiles, make_signing_cert
from tests.support.clips import moving_clip

JOB = "video_77aa0c1d2e3f405162738495"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> SigningCertFiles:
    return make_signing_cert(tmp_path_factory.mktemp("verify_certs"))


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory, certs: SigningCertFiles) -> dict[str, Path]:
    """The service's order: watermark, label, encode, sign; plus the same clip with none of it."""
    folder = tmp_path_factory.mktemp("verify")
    settings = C2paSettings(cert_chain=certs.chain, private_key=certs.key)
    clip = moving_clip(24)
    embedder, labeler = WatermarkEmbedder(JOB), FrameLabeler(LabelSettings(), 832, 480)
    marked = [frame.copy() for frame in clip]
    for frame in marked:
        embedder.apply(frame)
        labeler.apply(frame)
    paths = {
        "video": folder / "kiss.mp4",
        "still": folder / "kiss.jpg",
        "plain": folder / "plain.mp4",
        "unsigned": folder / "unsigned.mp4",
    }
    video = encode_mp4(marked, 24)
    paths["video"].write_bytes(sign_media(video, "video/mp4", JOB, settings))
    paths["still"].write_bytes(sign_media(encode_jpeg(marked[12]), "image/jpeg", JOB, settings))
    paths["plain"].write_bytes(encode_mp4(clip, 24))
    paths["unsigned"].write_bytes(video)
    return paths


def run_verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    status = main(["verify", *args])
    out = capsys.readouterr().out
    return status, (json.loads(out) if out.strip() else {})


def test_cli_reports_manifest_and_watermark(
    outputs: dict[str, Path], certs: SigningCertFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    status, report = run_verify(capsys, str(outputs["video"]), "--trust-anchors", str(certs.ca))
    assert status == 0
    assert report["mime"] == "video/mp4" and report["ai_generated"] is True
    manifest = report["c2pa"]
    assert manifest["present"] and manifest["valid"] and manifest["trusted"]
    assert manifest["validation_state"] == "Trusted" and manifest["validation_errors"] == []
    assert manifest["job_id"] == JOB
    assert manifest["claim_generator"] == "kissgen"
    assert manifest["digital_source_type"] == TRAINED_ALGORITHMIC_MEDIA
    assert manifest["actions"] == ["c2pa.created"]
    assert manifest["signer"] == certs.common_name and manifest["issuer"] == certs.organization
    watermark = report["watermark"]
    assert watermark["job_id"] == JOB
    assert watermark["frames_checked"] == 24 and watermark["frames_matching"] == 24


def test_cli_on_a_still(outputs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    status, report = run_verify(capsys, str(outputs["still"]))
    assert status == 0
    assert report["mime"] == "image/jpeg"
    assert report["c2pa"]["valid"] and not report["c2pa"]["trusted"]  # no anchor given: unknown CA
    assert report["c2pa"]["validation_errors"] == [
        "signingCredential.untrusted: signing certificate untrusted"
    ]
    assert report["c2pa"]["job_id"] == JOB and report["watermark"]["job_id"] == JOB
    assert report["watermark"]["frames_checked"] == 1


def test_cli_finds_the_watermark_without_a_manifest(
    outputs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest is stripped by many re-uploads; the watermark is what is left."""
    status, report = run_verify(capsys, str(outputs["unsigned"]), "--frames", "8")
    assert status == 0
    assert report["c2pa"]["present"] is False and report["watermark"]["job_id"] == JOB
    assert report["watermark"]["frames_checked"] == 8 and report["ai_generated"] is True


def test_cli_exit_1_when_nothing_is_found(
    outputs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    status, report = run_verify(capsys, str(outputs["plain"]), "--frames", "8")
    assert status == 1
    assert report["ai_generated"] is False
    assert report["c2pa"]["present"] is False and report["watermark"]["job_id"] is None


def test_cli_refuses_other_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    assert main(["verify", str(png)]) == 1
    assert "not an MP4 or a JPEG" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "missing.mp4")]) == 1


def test_sniff_mime(outputs: dict[str, Path]) -> None:
    assert sniff_mime(outputs["video"].read_bytes()) == "video/mp4"
    assert sniff_mime(outputs["still"].read_bytes()) == "image/jpeg"
    with pytest.raises(ValueError):
        sniff_mime(b"GIF89a" + bytes(20))


def test_verify_media_on_truncated_video(outputs: dict[str, Path]) -> None:
    """A broken file gives a report (nothing valid), not an exception."""
    data = outputs["video"].read_bytes()
    report = verify_media(data[: len(data) // 2])
    assert not report.c2pa.valid
    assert report.ai_generated is (report.watermark is not None and report.watermark.job_id is not None)
    assert report.mime == "video/mp4"
