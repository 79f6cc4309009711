"""The local profile's development certificate: made once under the local data directory, reused, made
atomically when several replicas start at once, refused where the operator's own is required; outputs
signed with it carry a manifest that validates, reported as development-signed and untrusted."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from kiss_core.generation.provenance.credentials import SigningNotConfigured, require_signing, sign_media
from kiss_core.generation.provenance.devcert import (
    DEV_DIR,
    DevCertificate,
    dev_certificate_dir,
    ensure_dev_certificate,
    with_dev_certificate,
)
from kiss_core.generation.provenance.verify import verify_media
from kiss_core.jobs.access import hash_key, new_key
from kiss_core.media.video import encode_jpeg
from kiss_core.schemas import VideoParams
from kiss_core.settings import C2paSettings, Settings
from tests.support.certs import make_signing_cert
from tests.support.studio import SyntheticStudio

JOB = "video_0a1b2c3d4e5f60718293a4b5"


def _signing(files: DevCertificate) -> C2paSettings:
    return C2paSettings(cert_chain=files.chain, private_key=files.key)


def _local(root: Path, **c2pa: object) -> Settings:
    return Settings(
        storage={"backend": "local", "local_root": str(root)},
        provenance={"c2pa": {"dev_certificate": True, **c2pa}},
    )


def test_made_once_under_the_local_root_and_reused(tmp_path: Path) -> None:
    settings = with_dev_certificate(_local(tmp_path))
    c2pa = settings.provenance.c2pa
    assert c2pa.cert_chain == tmp_path.resolve() / DEV_DIR / "chain.pem"
    assert c2pa.private_key == tmp_path.resolve() / DEV_DIR / "key.pem"
    assert stat.S_IMODE(c2pa.private_key.stat().st_mode) == 0o600
    first = c2pa.cert_chain.read_bytes(), c2pa.private_key.read_bytes()
    again = with_dev_certificate(_local(tmp_path)).provenance.c2pa
    assert (again.cert_chain.read_bytes(), again.private_key.read_bytes()) == first  # type: ignore[union-attr]


def test_replicas_starting_at_once_share_one_certificate(tmp_path: Path) -> None:
    folder = tmp_path / DEV_DIR
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: ensure_dev_certificate(folder), range(8)))
    chains = {files.chain.read_bytes() for files in made}
    assert len(chains) == 1
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [f".{DEV_DIR}.lock", DEV_DIR]  # no scratch directory left behind, nothing moved aside


def test_an_incomplete_set_is_replaced(tmp_path: Path) -> None:
    folder = tmp_path / DEV_DIR
    files = ensure_dev_certificate(folder)
    files.key.unlink()
    again = ensure_dev_certificate(folder)
    assert again.key.exists() and again.chain.exists()
    signed = sign_media(encode_jpeg(np.full((32, 32, 3), 90, np.uint8)), "image/jpeg", JOB, _signing(again))
    assert verify_media(signed, "image/jpeg").c2pa.valid  # the new key matches the new certificate


def test_only_when_enabled_and_no_certificate_is_configured(tmp_path: Path) -> None:
    plain = Settings(storage={"backend": "local", "local_root": str(tmp_path)})
    assert with_dev_certificate(plain) is plain  # the default: off
    own = make_signing_cert(tmp_path / "own")
    operator = _local(tmp_path, cert_chain=str(own.chain), private_key=str(own.key))
    assert with_dev_certificate(operator) is operator  # the operator's certificate wins
    assert not dev_certificate_dir(operator).exists()


def test_refused_where_the_operators_own_is_required(tmp_path: Path) -> None:
    files = ensure_dev_certificate(tmp_path / DEV_DIR)
    with pytest.raises(SigningNotConfigured, match="development certificate"):
        require_signing(_signing(files))
    from graph import AppArgs, build_app

    keys = {"keys": [{"tenant": "acme", "key_sha256": hash_key(new_key())}]}
    dev = {"access": keys, "provenance": {"c2pa": {"dev_certificate": True}}}
    with pytest.raises(ValueError, match=r"refuses provenance\.c2pa\.dev_certificate"):
        build_app(AppArgs(profile="production", settings=dev))
    c2pa = {"cert_chain": str(files.chain), "private_key": str(files.key)}
    with pytest.raises(SigningNotConfigured, match="development certificate"):
        build_app(AppArgs(profile="production", settings={"access": keys, "provenance": {"c2pa": c2pa}}))


@pytest.mark.slow
def test_a_local_profile_job_is_development_signed(tmp_path: Path) -> None:
    """What `make run` makes: the MP4, the still and the thumbnail each carry a manifest that validates,
    signed by the development certificate, valid but not trusted."""
    studio = SyntheticStudio(_local(tmp_path / "store"), str(tmp_path / "store"))
    result = studio.produce(studio.pair(0, 1), VideoParams(style="peck", seconds=1, fps=12, size="416x240"))
    assert result.provenance.c2pa
    job_id = result.keys["video"].split("/")[1]
    for variant in ("video", "image", "thumbnail"):
        report = verify_media(studio.store.get(result.keys[variant]))
        manifest = report.c2pa
        assert manifest.valid and not manifest.trusted, (variant, manifest)
        assert manifest.development_certificate and manifest.job_id == job_id
        assert manifest.validation_errors == ["signingCredential.untrusted: signing certificate untrusted"]
        assert manifest.issuer == "kissgen development CA (not trusted)"
