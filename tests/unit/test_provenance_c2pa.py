"""C2PA manifests: signed into an MP4 and a JPEG with a test CA's certificate, read back with c2pa.Reader."""

from __future__ import annotations

import importlib.metadata
import io
import json
from pathlib import Path

import c2pa
import numpy as np
import pytest

from kiss_core.generation.provenance.credentials import (
    JOB_ASSERTION,
    TRAINED_ALGORITHMIC_MEDIA,
    SigningNotConfigured,
    read_manifest,
    require_signing,
    sign_media,
    signing_configured,
)
from kiss_core.generation.provenance.verify import verify_media
from kiss_core.media.video import decode_mp4, encode_jpeg, encode_mp4
from kiss_core.settings import C2paSettings, Settings
from tests.support.certs import SigningCertFiles, make_signing_cert
from tests.support.clips import moving_clip

JOB = "video_0a1b2c3d4e5f60718293a4b5"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> SigningCertFiles:
    return make_signing_cert(tmp_path_factory.mktemp("c2pa"))


@pytest.fixture(scope="module")
def settings(certs: SigningCertFiles) -> C2paSettings:
    return C2paSettings(cert_chain=certs.chain, private_key=certs.key, trust_anchors=certs.ca)


@pytest.fixture(scope="module")
def media() -> dict[str, bytes]:
    frames = moving_clip(12, 416, 240)
    return {"video/mp4": encode_mp4(frames, 12), "image/jpeg": encode_jpeg(frames[0])}


@pytest.fixture(scope="module")
def signed(media: dict[str, bytes], settings: C2paSettings) -> dict[str, bytes]:
    return {mime: sign_media(data, mime, JOB, settings) for mime, data in media.items()}


def reader_json(data: bytes, mime: str, ca: Path | None) -> dict:
    config: dict = {"verify": {"remote_manifest_fetch": False}}
    if ca is not None:
        config["trust"] = {"user_anchors": ca.read_text()}
    context = c2pa.Context(settings=c2pa.Settings.from_dict(config))
    with c2pa.Reader(mime, io.BytesIO(data), None, context) as reader:
        return json.loads(reader.json())


@pytest.mark.parametrize("mime", ["video/mp4", "image/jpeg"])
def test_manifest_reads_back_with_its_fields(
    signed: dict[str, bytes], certs: SigningCertFiles, mime: str
) -> None:
    store = reader_json(signed[mime], mime, certs.ca)
    assert store["validation_state"] == "Trusted"
    manifest = store["manifests"][store["active_manifest"]]
    generator = manifest["claim_generator_info"][0]
    assert generator["name"] == "kissgen"
    assert generator["version"] == importlib.metadata.version("kissgen")
    assertions = {a["label"]: a["data"] for a in manifest["assertions"]}
    actions = next(data["actions"] for label, data in assertions.items() if label.startswith("c2pa.actions"))
    assert [a["action"] for a in actions] == ["c2pa.created"]
    assert actions[0]["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert actions[0]["softwareAgent"]["name"] == "kissgen"
    assert assertions[JOB_ASSERTION]["job_id"] == JOB
    assert JOB in manifest["title"]
    assert manifest["signature_info"]["common_name"] == certs.common_name
    assert manifest["signature_info"]["issuer"] == certs.organization


@pytest.mark.parametrize("mime", ["video/mp4", "image/jpeg"])
def test_untrusted_root_is_valid_but_not_trusted(signed: dict[str, bytes], mime: str) -> None:
    """Without the operator's CA as an anchor, the signature checks out but the signer is unknown."""
    store = read_manifest(signed[mime], mime)
    assert store is not None and store["validation_state"] == "Valid"
    assert [s["code"] for s in store["validation_status"]] == ["signingCredential.untrusted"]


def test_signed_media_still_plays(media: dict[str, bytes], signed: dict[str, bytes]) -> None:
    original, _ = decode_mp4(media["video/mp4"])
    frames, _ = decode_mp4(signed["video/mp4"])
    assert np.array_equal(original, frames)
    overhead = {mime: len(signed[mime]) - len(media[mime]) for mime in media}
    print(f"C2PA overhead: {overhead}")
    assert all(0 < extra < 16_000 for extra in overhead.values())


def test_unsigned_media_has_no_manifest(media: dict[str, bytes]) -> None:
    assert read_manifest(media["video/mp4"], "video/mp4") is None
    assert read_manifest(media["image/jpeg"], "image/jpeg") is None


@pytest.mark.parametrize("mime", ["video/mp4", "image/jpeg"])
def test_tampering_after_signing_is_reported(
    signed: dict[str, bytes], settings: C2paSettings, mime: str
) -> None:
    data = bytearray(signed[mime])
    if mime == "video/mp4":
        data[data.find(b"mdat") + 400] ^= 0x55
    else:
        data[-200] ^= 0x55  # in the entropy-coded image data, before the EOI marker
    intact = verify_media(signed[mime], mime, trust_anchors=settings.trust_anchors)
    assert intact.c2pa.valid and intact.c2pa.trusted and not intact.c2pa.validation_errors
    report = verify_media(bytes(data), mime, trust_anchors=settings.trust_anchors)
    assert report.c2pa.present and not report.c2pa.valid
    assert report.c2pa.validation_state == "Invalid"
    assert any("mismatch" in error for error in report.c2pa.validation_errors)


def test_signing_configuration(certs: SigningCertFiles, settings: C2paSettings, tmp_path: Path) -> None:
    assert not signing_configured(Settings())  # the local profile signs nothing
    assert signing_configured(settings)
    require_signing(settings)  # a working pair passes
    with pytest.raises(SigningNotConfigured, match="not both set"):
        require_signing(C2paSettings(required=True))
    with pytest.raises(SigningNotConfigured, match="not readable"):
        require_signing(C2paSettings(cert_chain=tmp_path / "missing.pem", private_key=certs.key))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    with pytest.raises(SigningNotConfigured, match="not a PEM"):
        require_signing(C2paSettings(cert_chain=certs.chain, private_key=garbage))
    with pytest.raises(SigningNotConfigured, match="ps256"):
        require_signing(C2paSettings(cert_chain=certs.chain, private_key=certs.key, alg="ps256"))
    leaf_only = tmp_path / "self_signed_ca_as_leaf.pem"
    leaf_only.write_bytes(certs.ca.read_bytes())
    with pytest.raises(SigningNotConfigured):  # the CA's certificate with the leaf's key: no match
        require_signing(C2paSettings(cert_chain=leaf_only, private_key=certs.key))


def test_unsupported_mime_is_refused(media: dict[str, bytes], settings: C2paSettings) -> None:
    with pytest.raises(ValueError, match="mime"):
        sign_media(media["image/jpeg"], "image/png", JOB, settings)
