"""What a file says about its origin: its C2PA manifest (checked) and the job id in its watermark.

Used by `kissgen verify FILE` and the API's verification endpoint. Works offline: nothing is fetched,
trust is judged against the C2PA trust list built into c2pa-rs plus the optional `trust_anchors`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from pydantic import BaseModel, Field, ValidationError

from kiss_core.generation.provenance.credentials import (
    CONSENT_ASSERTION,
    DEV_ORGANIZATION,
    JOB_ASSERTION,
    SUPPORTED_MIME,
    TRAINED_ALGORITHMIC_MEDIA,
    read_manifest,
)
from kiss_core.generation.provenance.watermark import (
    WatermarkReading,
    read_frames_watermark,
    read_video_watermark,
)


class ConsentReport(BaseModel):
    """The manifest's com.kissgen.consent assertion: consent attested for both people (credentials.py)."""

    attested: bool = Field(description="Consent was attested for every person in the video.")
    subjects: int = Field(description="How many people the attestation covered (2).")
    audit_record: str = Field(description="The operator's audit record of the attestation (req_…).")
    policy_version: str = Field(description="The consent policy the attestation was made under.")


class C2paReport(BaseModel):
    """The active C2PA manifest, as far as it could be read and checked."""

    present: bool = Field(description="The file carries a C2PA manifest store.")
    valid: bool = Field(
        False, description="Signature and hashes check out (validation state Valid or Trusted)."
    )
    trusted: bool = Field(
        False, description="The signing certificate chains to a trusted root (C2PA list or trust_anchors)."
    )
    validation_state: str | None = Field(None, description="c2pa-rs's verdict: Invalid, Valid or Trusted.")
    validation_errors: list[str] = Field(
        default_factory=list, description="`code: explanation` of each failed check (untrusted included)."
    )
    claim_generator: str | None = Field(None, description="Name of the tool that made the claim.")
    claim_generator_version: str | None = None
    title: str | None = None
    actions: list[str] = Field(default_factory=list, description="Actions declared, e.g. c2pa.created.")
    digital_source_type: str | None = Field(
        None, description="IPTC digital source type of the creating action (trainedAlgorithmicMedia: AI)."
    )
    job_id: str | None = Field(None, description="The kissgen job id in the com.kissgen.job assertion.")
    consent: ConsentReport | None = Field(
        None,
        description="The com.kissgen.consent assertion: consent attested for both people, the audit record's"
        " id and the policy version (no personal data). Believe it only when the manifest is valid and"
        " trusted.",
    )
    signer: str | None = Field(None, description="Common name of the signing certificate.")
    issuer: str | None = Field(None, description="Organisation named in the signing certificate.")
    signed_at: str | None = Field(None, description="Time stamp of the signature, when one was obtained.")
    development_certificate: bool = Field(
        False,
        description="Signed with kissgen's development certificate (the local profile's, organisation"
        ' "kissgen development CA (not trusted)"): valid at best, never trusted; it proves nothing about'
        " who made the file.",
    )


class VerificationReport(BaseModel):
    """Everything `verify_media` found; `ai_generated` is the one-line answer."""

    mime: str
    c2pa: C2paReport
    watermark: WatermarkReading | None = Field(
        None, description="The watermark's reading; None when the media could not be decoded to frames."
    )
    ai_generated: bool = Field(
        description="A valid manifest declares trainedAlgorithmicMedia, or the watermark carries a job id."
    )

    @property
    def found(self) -> bool:
        """Whether any provenance was found: a valid manifest or a watermarked job id."""
        return self.c2pa.valid or (self.watermark is not None and self.watermark.job_id is not None)


def sniff_mime(data: bytes) -> str:
    """MP4 (an `ftyp` box first) or JPEG (SOI marker) from the leading bytes; ValueError otherwise."""
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return "video/mp4"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    raise ValueError(f"not an MP4 or a JPEG (the file starts with {data[:12].hex()})")


def c2pa_report(store: dict[str, Any] | None) -> C2paReport:
    """Flatten a manifest store (read_manifest's dict) into the fields a person checks."""
    if store is None:
        return C2paReport(present=False)
    state = store.get("validation_state")
    errors = [f"{s.get('code')}: {s.get('explanation', '')}" for s in store.get("validation_status") or []]
    manifest = (store.get("manifests") or {}).get(store.get("active_manifest") or "", {})
    generator = (manifest.get("claim_generator_info") or [{}])[0]
    actions: list[str] = []
    source_type = job_id = None
    consent: ConsentReport | None = None
    for assertion in manifest.get("assertions") or []:
        label, data = assertion.get("label", ""), assertion.get("data") or {}
        if label.startswith("c2pa.actions"):
            for action in data.get("actions") or []:
                actions.append(action.get("action"))
                if action.get("action") == "c2pa.created" and source_type is None:
                    source_type = action.get("digitalSourceType")
        elif label == JOB_ASSERTION:
            job_id = data.get("job_id")
        elif label == CONSENT_ASSERTION:
            try:
                consent = ConsentReport.model_validate(data)
            except ValidationError:  # a malformed assertion (someone else's tool): said, not a crash
                errors.append(f"{CONSENT_ASSERTION}: malformed assertion")
    signature = manifest.get("signature_info") or {}
    return C2paReport(
        present=True,
        valid=state in ("Valid", "Trusted"),
        trusted=state == "Trusted",
        validation_state=state,
        validation_errors=errors,
        claim_generator=generator.get("name"),
        claim_generator_version=generator.get("version"),
        title=manifest.get("title"),
        actions=actions,
        digital_source_type=source_type,
        job_id=job_id,
        consent=consent,
        signer=signature.get("common_name"),
        issuer=signature.get("issuer"),
        signed_at=signature.get("time"),
        development_certificate=signature.get("issuer") == DEV_ORGANIZATION,
    )


def _watermark(data: bytes, mime: str, max_frames: int) -> WatermarkReading | None:
    try:
        if mime == "video/mp4":
            return read_video_watermark(data, max_frames=max_frames)
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            return None
        return read_frames_watermark([cv2.cvtColor(image, cv2.COLOR_BGR2RGB)])
    except (av.FFmpegError, ValueError, OSError, IndexError):  # undecodable: no reading, not a crash
        return None


def verify_media(
    data: bytes, mime: str | None = None, trust_anchors: Path | None = None, max_frames: int = 48
) -> VerificationReport:
    """Read and check the C2PA manifest and the watermark of an MP4 or JPEG (mime sniffed when None)."""
    import c2pa

    mime = mime or sniff_mime(data)
    if mime not in SUPPORTED_MIME:
        raise ValueError(f"`mime` must be one of {', '.join(SUPPORTED_MIME)} but is {mime!r}")
    try:
        manifest = c2pa_report(read_manifest(data, mime, trust_anchors))
    except c2pa.C2paError as exc:
        manifest = C2paReport(present=False, validation_errors=[f"unreadable: {exc}"])
    watermark = _watermark(data, mime, max_frames)
    declared = manifest.valid and manifest.digital_source_type == TRAINED_ALGORITHMIC_MEDIA
    marked = watermark is not None and watermark.job_id is not None
    return VerificationReport(mime=mime, c2pa=manifest, watermark=watermark, ai_generated=declared or marked)
