"""A throw-away certificate authority and C2PA signing certificate: the tests' "operator" certificate.

Built by the same `issue_signing_chain` as the local profile's development certificate (a CA that
issues an EC P-256 leaf with the key usages c2pa-rs accepts; validators refuse a self-signed signer),
under another organisation, so verify does not report it as a development certificate. Nothing here
is trusted by anyone else; the CA is what a test adds as its trust anchor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kiss_core.generation.provenance.devcert import issue_signing_chain


@dataclass(frozen=True)
class SigningCertFiles:
    """PEM files: `chain` is the leaf followed by the CA (what the signer sends), `key` the leaf's key."""

    chain: Path
    key: Path
    ca: Path
    organization: str
    common_name: str


def make_signing_cert(
    folder: Path, organization: str = "Kissgen Test Operator", common_name: str = "kissgen test signer"
) -> SigningCertFiles:
    """Write ca.pem, chain.pem (leaf + CA) and key.pem (PKCS#8, unencrypted) into `folder`."""
    made = issue_signing_chain(organization, "kissgen test CA", common_name, ca_days=30, leaf_days=30)
    folder.mkdir(parents=True, exist_ok=True)
    paths = SigningCertFiles(
        chain=folder / "chain.pem",
        key=folder / "key.pem",
        ca=folder / "ca.pem",
        organization=organization,
        common_name=common_name,
    )
    paths.ca.write_bytes(made.ca)
    paths.chain.write_bytes(made.chain)
    paths.key.write_bytes(made.key)
    return paths
