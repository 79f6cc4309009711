"""Content Credentials: a C2PA manifest, signed with the operator's certificate, in every MP4 and still.

The manifest declares what a viewer needs to know (c2pa-python 0.38, c2pa-rs underneath):
- a `c2pa.actions` assertion with one `c2pa.created` action whose `digitalSourceType` is IPTC's
  `trainedAlgorithmicMedia` (made by a trained model, not captured) and whose software agent is kissgen;
- claim generator info: name "kissgen" and the installed package's version;
- a `com.kissgen.job` assertion with the job id (the same id the invisible watermark carries);
- a `com.kissgen.consent` assertion: consent was attested for both people, under which policy version,
  in which audit record (see `consent_assertion` for what it holds and why nothing more).

The manifest is bound to the file's bytes by a hash (BMFF hash for MP4, data hash for JPEG), so any
change to the media after signing makes it read back invalid. Signing needs no network unless a
time-stamp authority is configured; reading never fetches anything (remote manifests and OCSP off).
"""

from __future__ import annotations

import functools
import importlib.metadata
import io
import json
from pathlib import Path
from typing import Any

from kiss_core.schemas import SUBJECTS, ConsentReference
from kiss_core.settings import C2paSettings, ProvenanceSettings, Settings

GENERATOR = "kissgen"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
JOB_ASSERTION = "com.kissgen.job"
CONSENT_ASSERTION = "com.kissgen.consent"
# The organisation of the development certificate (devcert.py): verify reports it as such, and
# require_signing refuses it where the operator's own certificate is required.
DEV_ORGANIZATION = "kissgen development CA (not trusted)"
SUPPORTED_MIME = ("video/mp4", "image/jpeg")


class SigningNotConfigured(RuntimeError):
    """The service must sign its outputs but has no usable certificate or key; not recoverable at run time."""


def generator_version() -> str:
    """The installed kissgen version (pyproject's `version`), or "0+unknown" when run from a bare tree."""
    try:
        return importlib.metadata.version(GENERATOR)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _c2pa_settings(settings: C2paSettings | ProvenanceSettings | Settings) -> C2paSettings:
    if isinstance(settings, Settings):
        return settings.provenance.c2pa
    if isinstance(settings, ProvenanceSettings):
        return settings.c2pa
    return settings


def signing_configured(settings: C2paSettings | ProvenanceSettings | Settings) -> bool:
    """Whether both a certificate chain and a key are configured (the local profile has neither)."""
    c2pa_settings = _c2pa_settings(settings)
    return c2pa_settings.cert_chain is not None and c2pa_settings.private_key is not None


def require_signing(settings: C2paSettings | ProvenanceSettings | Settings) -> None:
    """Raise `SigningNotConfigured` unless the certificate and key are configured, readable and sign.

    Called at start-up by profiles that must label their outputs, so that a missing secret mount stops
    the deployment instead of producing unsigned videos. It signs a tiny JPEG to prove the pair works
    (a key that does not match the certificate or the algorithm fails here, not on the first job).
    """
    c2pa_settings = _c2pa_settings(settings)
    if not signing_configured(c2pa_settings):
        raise SigningNotConfigured(
            "C2PA signing is required but `provenance.c2pa.cert_chain` and `provenance.c2pa.private_key` are"
            f" not both set (cert_chain={c2pa_settings.cert_chain}, private_key={c2pa_settings.private_key})"
        )
    for name in ("cert_chain", "private_key"):
        path: Path = getattr(c2pa_settings, name)
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise SigningNotConfigured(f"`provenance.c2pa.{name}` {path} is not readable: {exc}") from exc
        if "-----BEGIN" not in text:
            raise SigningNotConfigured(f"`provenance.c2pa.{name}` {path} is not a PEM file")
    assert c2pa_settings.cert_chain is not None
    if signer_organization(c2pa_settings.cert_chain.read_bytes()) == DEV_ORGANIZATION:
        raise SigningNotConfigured(
            f"`provenance.c2pa.cert_chain` {c2pa_settings.cert_chain} is kissgen's development certificate,"
            " which no verifier trusts: configure the operator's own certificate"
        )
    import c2pa

    try:
        sign_media(_probe_jpeg(), "image/jpeg", "video_" + "0" * 24, c2pa_settings)
    except c2pa.C2paError as exc:
        raise SigningNotConfigured(
            f"the C2PA certificate {c2pa_settings.cert_chain} and key {c2pa_settings.private_key} do not sign"
            f" with {c2pa_settings.alg}: {exc}"
        ) from exc


def signer_organization(chain_pem: bytes) -> str | None:
    """The organisation named in the subject of the chain's first (signing) certificate, if readable."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        leaf = x509.load_pem_x509_certificate(chain_pem)
    except ValueError:
        return None
    names = leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(names[0].value) if names else None


@functools.cache
def _probe_jpeg() -> bytes:
    import numpy as np

    from kiss_core.media.video import encode_jpeg

    return encode_jpeg(np.full((16, 16, 3), 128, np.uint8))


def consent_assertion(consent: ConsentReference) -> dict[str, Any]:
    """The `com.kissgen.consent` assertion: consent was attested for both people of the job.

    `{"attested": true, "subjects": 2, "audit_record": "req_…", "policy_version": "…"}`. Signed with the
    rest of the manifest, it lets a verifier tell an output this service made after a consent
    attestation from one whose labels were forged: an edited manifest reads invalid, one signed by
    anyone else is not trusted against the operator's CA. It gives the operator the key to the full
    record (`AuditLog.find`, kiss_core.jobs.audit) when someone asks about a video.

    Deliberately nothing more. The manifest travels with every copy of the file for ever and cannot be
    erased or recalled, so it holds no personal data: the audit record's id is a random token that means
    nothing outside the operator's audit store; the policy version is the same for everyone. Not in it:
    the photos' SHA-256 (kept in the audit record) — a hash of a person's photo is a pseudonymous
    identifier of it, so anyone holding the photo could link it to the video, which is personal data
    under the GDPR; the operator's consent references (they may hold names or contract numbers); the
    tenant (who made the video); the age estimates (derived from the face).
    """
    return {
        "attested": True,
        "subjects": len(SUBJECTS),
        "audit_record": consent.audit_record,
        "policy_version": consent.policy_version,
    }


def manifest_definition(job_id: str, mime: str, consent: ConsentReference | None = None) -> dict[str, Any]:
    """The manifest kissgen signs: what made the file, that a trained model did, which job and, when
    the job has one, the audit record of its consent attestation (without: no consent assertion)."""
    version = generator_version()
    kind = "video" if mime.startswith("video/") else "image"
    assertions: list[dict[str, Any]] = [
        {
            "label": "c2pa.actions",
            "data": {
                "actions": [
                    {
                        "action": "c2pa.created",
                        "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                        "softwareAgent": {"name": GENERATOR, "version": version},
                    }
                ]
            },
        },
        {"label": JOB_ASSERTION, "data": {"job_id": job_id, "generator": GENERATOR}},
    ]
    if consent is not None:
        assertions.append({"label": CONSENT_ASSERTION, "data": consent_assertion(consent)})
    return {
        "claim_generator_info": [{"name": GENERATOR, "version": version}],
        "title": f"kissgen {kind} {job_id}",
        "format": mime,
        "assertions": assertions,
    }


def _check_mime(mime: str) -> None:
    if mime not in SUPPORTED_MIME:
        raise ValueError(f"`mime` must be one of {', '.join(SUPPORTED_MIME)} but is {mime!r}")


def sign_media(
    data: bytes,
    mime: str,
    job_id: str,
    settings: C2paSettings | ProvenanceSettings | Settings,
    consent: ConsentReference | None = None,
) -> bytes:
    """The same media with a signed C2PA manifest embedded (MP4: a `uuid` box; JPEG: APP11 segments);
    `consent`: the job's audit record, asserted in the manifest.

    Call only when `signing_configured(settings)`. Raises c2pa.C2paError when the media cannot be
    parsed or the certificate/key are refused.
    """
    import c2pa

    _check_mime(mime)
    c2pa_settings = _c2pa_settings(settings)
    if not signing_configured(c2pa_settings):
        raise SigningNotConfigured("sign_media needs provenance.c2pa.cert_chain and private_key")
    assert c2pa_settings.cert_chain is not None and c2pa_settings.private_key is not None
    signer = c2pa.Signer.from_info(
        c2pa.C2paSignerInfo(
            c2pa_settings.alg,
            c2pa_settings.cert_chain.read_bytes(),
            c2pa_settings.private_key.read_bytes(),
            c2pa_settings.tsa_url,
        )
    )
    context = c2pa.Context(
        settings=c2pa.Settings.from_dict({"builder": {"thumbnail": {"enabled": c2pa_settings.thumbnail}}})
    )
    out = io.BytesIO()
    with signer, c2pa.Builder(manifest_definition(job_id, mime, consent), context=context) as builder:
        builder.sign(signer, mime, io.BytesIO(data), out)
    return out.getvalue()


def _reader_context(trust_anchors: Path | None) -> Any:
    import c2pa

    config: dict[str, Any] = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
    if trust_anchors is not None:
        config["trust"] = {"user_anchors": trust_anchors.read_text(encoding="ascii")}
    return c2pa.Context(settings=c2pa.Settings.from_dict(config))


def read_manifest(data: bytes, mime: str, trust_anchors: Path | None = None) -> dict[str, Any] | None:
    """The manifest store as c2pa.Reader reports it (JSON as a dict), or None when the file has none.

    The dict has `active_manifest`, `manifests`, `validation_state` (Invalid, Valid or Trusted) and,
    for problems, `validation_status`. `trust_anchors`: extra root certificates (PEM file) to trust.
    Raises c2pa.C2paError when the file cannot be parsed as `mime`.
    """
    import c2pa

    _check_mime(mime)
    reader = c2pa.Reader.try_create(mime, io.BytesIO(data), None, _reader_context(trust_anchors))
    if reader is None:
        return None
    with reader:
        return json.loads(reader.json())
