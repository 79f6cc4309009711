"""The append-only audit trail of consent attestations.

One object per accepted request under `audit/`, outside every job's prefix, so erasing a job leaves
its audit record (which holds hashes of the photos, never the photos). Keys are unique and never
rewritten: `audit/{YYYY}/{MM}/{DD}/{received_at}-{request_id}.json`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping

from kiss_core.errors import ConsentRequired
from kiss_core.schemas import (
    SUBJECTS,
    Attestation,
    AuditRecord,
    SubjectAnalysis,
    SubjectPhotos,
    photo_list,
    utcnow,
)
from kiss_core.storage import ObjectStore

AUDIT_PREFIX = "audit/"
POLICY_VERSION = "2026-11-consent-v1"
# What a person attests for each photo: the refusal below says it, the page's checkbox shows
# CONSENT_TEXT (GET /v1/capabilities), so both always promise the same.
ATTESTS = "is an adult and consented to this video"
# A request may carry several photos of each person: one attestation covers every photo of them.
CONSENT_TEXT = f"I attest that the person in this photo (or photos) {ATTESTS}."


def require_consent(attestation: Attestation | None) -> Attestation:
    """Refuse a request unless it attests consent for each person; the error names the first missing."""
    missing = [s for s in SUBJECTS if attestation is None or not attestation.of(s).consented]
    if attestation is None or missing:
        subject = missing[0]
        raise ConsentRequired(
            f"consent_{subject} must be true: attest that the person in subject_{subject} (every photo"
            f" of them) {ATTESTS}",
            subject,
        )
    return attestation


class AuditLog:
    """Writes one immutable record per accepted request; reads them back for operators and tests."""

    def __init__(self, store: ObjectStore):
        self.store = store

    def record(
        self,
        job_id: str,
        attestation: Attestation,
        photos: Mapping[str, SubjectPhotos],
        analyses: Mapping[str, SubjectAnalysis],
        tenant: str = "public",
        best: Mapping[str, int] | None = None,
    ) -> AuditRecord:
        """`photos`: each subject's photo, or several in the order sent (every one's hash is recorded);
        `best[subject]` (default 0) the one the video is composed from, whose `analyses` entry holds
        the age estimate recorded."""
        now = utcnow()
        hashes: dict[str, list[str]] = {
            s: [hashlib.sha256(p).hexdigest() for p in photo_list(photos[s])] for s in SUBJECTS
        }
        entry = AuditRecord(
            request_id="req_" + secrets.token_hex(8),
            job_id=job_id,
            tenant=tenant,
            received_at=now,
            policy_version=POLICY_VERSION,
            photo_sha256={s: hashes[s][(best or {}).get(s, 0)] for s in SUBJECTS},
            photos_sha256=hashes,
            consent=attestation,
            age_estimates={s: analyses[s].age_estimate for s in SUBJECTS if s in analyses},
        )
        key = f"{AUDIT_PREFIX}{now:%Y/%m/%d}/{now:%Y%m%dT%H%M%S%fZ}-{entry.request_id}.json"
        self.store.put(key, entry.model_dump_json().encode(), "application/json")
        return entry

    def find(self, request_id: str) -> AuditRecord | None:
        """The record with this request id (e.g. one a video's C2PA manifest names), or None: a listing
        of `audit/` matched on the key's suffix, then one read (an operator tool, not a hot path)."""
        suffix = f"-{request_id}.json"
        for key in self.store.list(AUDIT_PREFIX):
            if key.endswith(suffix):
                return AuditRecord.model_validate_json(self.store.get(key))
        return None

    def for_job(self, job_id: str) -> list[AuditRecord]:
        """Every record that names this job (a scan: an operator tool, not a hot path)."""
        records = [AuditRecord.model_validate_json(self.store.get(k)) for k in self.store.list(AUDIT_PREFIX)]
        return [r for r in records if r.job_id == job_id]
