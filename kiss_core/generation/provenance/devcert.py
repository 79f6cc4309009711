"""A development signing certificate, so that the local profile's outputs carry Content Credentials too.

Only when `provenance.c2pa.dev_certificate` is on (the local profile turns it on; graph.py refuses it in
production) and no certificate is configured: on first use a CA and a signing leaf are made with
`cryptography` under `{storage.local_root}/dev-c2pa/` and reused afterwards. They meet what c2pa-rs
checks of a signing certificate (C2PA 2.x, "Certificate profile"): the leaf is not self-signed, is not a CA
(basicConstraints CA:false), has keyUsage digitalSignature and an extended key usage C2PA accepts
(id-kp-documentSigning, emailProtection), and is issued by a CA (CA:true, keyCertSign) that goes into
the chain after it. Both carry the organisation `DEV_ORGANIZATION`, which verify reports as a
development certificate: such a manifest validates (the signature and hashes check out) but is never
trusted, because the development CA is nobody's trust anchor; it proves nothing about who made the file.

Creation is safe with several replicas starting at once: they take turns under a file lock
(`.dev-c2pa.lock` beside the directory, flock), the first makes the set, the others find it; the set is
written into a scratch directory and renamed onto `dev-c2pa/`, so a reader never sees half of one. A set
whose leaf has expired (or expires within a day) is moved aside and replaced the same way.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kiss_core.generation.provenance.credentials import DEV_ORGANIZATION, signing_configured
from kiss_core.settings import Settings

DEV_CA_NAME = "kissgen development CA (not trusted)"
DEV_SIGNER_NAME = "kissgen development signer (not trusted)"
DEV_DIR = "dev-c2pa"
_DOCUMENT_SIGNING = "1.3.6.1.5.5.7.3.36"  # id-kp-documentSigning (RFC 9336)
_CA_DAYS = 3650
_LEAF_DAYS = 730


@dataclass(frozen=True)
class DevCertificate:
    """PEM files: `chain` is the leaf then the CA (what the signer sends), `key` the leaf's, `ca` the root."""

    chain: Path
    key: Path
    ca: Path


def dev_certificate_dir(settings: Settings) -> Path:
    """Where the local profile keeps its development certificate: beside the local store's data."""
    return Path(settings.storage.local_root).expanduser().resolve() / DEV_DIR


def with_dev_certificate(settings: Settings) -> Settings:
    """`settings` signing with the development certificate when it is enabled and none is configured
    (a copy; the certificate is made on first use), else `settings` itself."""
    c2pa = settings.provenance.c2pa
    if not c2pa.dev_certificate or signing_configured(c2pa):
        return settings
    files = ensure_dev_certificate(dev_certificate_dir(settings))
    signing = settings.model_copy(deep=True)
    signing.provenance.c2pa.cert_chain = files.chain
    signing.provenance.c2pa.private_key = files.key
    return signing


def ensure_dev_certificate(folder: Path) -> DevCertificate:
    """The development certificate in `folder`, made there first if missing or expired (atomically)."""
    files = _files(folder)
    if _usable(files):
        return files
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.with_name(f".{folder.name}.lock")):
        if _usable(files):  # another replica made it while this one waited
            return files
        if folder.exists():  # expired or incomplete: moved aside, kept for the curious
            folder.rename(folder.with_name(f"{folder.name}.old-{secrets.token_hex(4)}"))
        scratch = folder.with_name(f".{folder.name}.tmp-{secrets.token_hex(6)}")
        try:
            _write(scratch)
            os.rename(scratch, folder)  # readers see no set or a whole one, never a half-written one
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return files


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created if missing) for the block, across processes on this host."""
    import fcntl

    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _files(folder: Path) -> DevCertificate:
    return DevCertificate(chain=folder / "chain.pem", key=folder / "key.pem", ca=folder / "ca.pem")


def _usable(files: DevCertificate) -> bool:
    """All three files are there and the leaf is valid for at least another day."""
    from cryptography import x509

    try:
        leaf = x509.load_pem_x509_certificate(files.chain.read_bytes())
        files.key.stat()
        files.ca.stat()
    except (OSError, ValueError):
        return False
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    return leaf.not_valid_after_utc > soon


@dataclass(frozen=True)
class SigningChain:
    """PEM bytes of a CA, the chain a signer sends (leaf then CA) and the leaf's PKCS#8 key."""

    ca: bytes
    chain: bytes
    key: bytes


def issue_signing_chain(
    organization: str, ca_name: str, signer_name: str, ca_days: int = _CA_DAYS, leaf_days: int = _LEAF_DAYS
) -> SigningChain:
    """A CA and an EC P-256 signing leaf it issued, meeting c2pa-rs's certificate profile (see above).

    The tests make their operator certificates with it too, so the profile is written down once."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common_name: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )

    def key_usage(ca: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=ca,
            crl_sign=ca,
            encipher_only=False,
            decipher_only=False,
        )

    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = name(ca_name)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_subject)
        .issuer_name(ca_subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=ca_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_cert = (
        x509.CertificateBuilder()
        .subject_name(name(signer_name))
        .issuer_name(ca_subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=leaf_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(ca=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [x509.ObjectIdentifier(_DOCUMENT_SIGNING), ExtendedKeyUsageOID.EMAIL_PROTECTION]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return SigningChain(
        ca=ca_cert.public_bytes(pem),
        chain=leaf_cert.public_bytes(pem) + ca_cert.public_bytes(pem),
        key=leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


def _write(folder: Path) -> None:
    """The development CA and leaf as PEM files in a new `folder` (the key: owner-only)."""
    made = issue_signing_chain(DEV_ORGANIZATION, DEV_CA_NAME, DEV_SIGNER_NAME)
    folder.mkdir(mode=0o700)
    files = _files(folder)
    files.ca.write_bytes(made.ca)
    files.chain.write_bytes(made.chain)
    key_fd = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(key_fd, "wb") as out:
        out.write(made.key)
    for path in (files.ca, files.chain, files.key):
        with path.open("rb+") as handle:
            os.fsync(handle.fileno())
