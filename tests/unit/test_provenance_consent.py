"""The C2PA manifest asserts the consent attestation behind a job (com.kissgen.consent): the audit
record's id and the policy version, nothing personal; verify reports it.

A whole job in-process (admission writes the audit record, the runner renders and signs with a test
CA's certificate) on two synthetic subjects, then each output read back with verify_media.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from kiss_core.faces.synthetic import synthetic_subject_png
from kiss_core.generation.provenance.credentials import CONSENT_ASSERTION, read_manifest, sign_media
from kiss_core.generation.provenance.verify import c2pa_report, verify_media
from kiss_core.jobs.admission import JobAdmission
from kiss_core.jobs.audit import POLICY_VERSION, AuditLog
from kiss_core.jobs.runner import JobRunner
from kiss_core.jobs.stages import InProcessStages
from kiss_core.jobs.store import JobStore
from kiss_core.media.video import encode_jpeg
from kiss_core.schemas import Attestation, ConsentReference, StageRequest, SubjectConsent, VideoParams
from kiss_core.settings import C2paSettings, JobSettings, Settings
from kiss_core.storage import LocalDirStore
from tests.support.certs import SigningCertFiles, make_signing_cert

PARAMS = VideoParams(style="peck", seconds=1, fps=8, size="256x144")
ATTESTED = Attestation(
    a=SubjectConsent(consented=True, reference="contract Jane Doe 2026-114"),
    b=SubjectConsent(consented=True, reference="contract John Roe 2026-115"),
)
JOB = "video_0a1b2c3d4e5f60718293a4b5"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> SigningCertFiles:
    return make_signing_cert(tmp_path_factory.mktemp("c2pa"))


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    return {"a": synthetic_subject_png(0), "b": synthetic_subject_png(1)}


@pytest.fixture(scope="module")
def job(certs: SigningCertFiles, photos: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory):
    """One job through admission and the runner, signed: (store, finished manifest)."""
    c2pa = {"cert_chain": str(certs.chain), "private_key": str(certs.key), "trust_anchors": str(certs.ca)}
    settings = Settings(provenance={"c2pa": c2pa})
    store = LocalDirStore(tmp_path_factory.mktemp("store"))
    stages = InProcessStages(settings, store)
    admission = JobAdmission(JobStore(store), stages, settings.limits)
    manifest = asyncio.run(admission.submit(PARAMS, photos, ATTESTED))
    runner = JobRunner(JobStore(store), stages, JobSettings(max_attempts=1))
    done = asyncio.run(runner.run(manifest.id))
    assert done.status == "completed", done.error
    return store, done


def test_the_job_names_its_audit_record(job) -> None:
    store, done = job
    (record,) = AuditLog(store).for_job(done.id)
    assert done.consent == ConsentReference(audit_record=record.request_id, policy_version=POLICY_VERSION)
    assert StageRequest.for_job(done, {}).consent == done.consent  # what the generator is given
    assert AuditLog(store).find(record.request_id) == record
    assert AuditLog(store).find("req_0000000000000000") is None
    assert "consent" not in done.public()  # internal: not in API responses


@pytest.mark.parametrize("variant", ["video", "image", "thumbnail"])
def test_every_output_asserts_consent_with_the_jobs_audit_record(
    job, certs: SigningCertFiles, photos: dict[str, bytes], variant: str
) -> None:
    store, done = job
    (record,) = AuditLog(store).for_job(done.id)
    data = store.get(done.result.keys[variant])
    report = verify_media(data, trust_anchors=certs.ca)
    assert report.c2pa.valid and report.c2pa.trusted and report.c2pa.job_id == done.id
    consent = report.c2pa.consent
    assert consent is not None and consent.attested and consent.subjects == 2
    assert consent.audit_record == record.request_id and consent.policy_version == record.policy_version

    # No personal data in the manifest: exactly these four fields, no reference, hash, tenant or age.
    mime = "video/mp4" if variant == "video" else "image/jpeg"
    store_json = read_manifest(data, mime)
    assert store_json is not None
    manifest = store_json["manifests"][store_json["active_manifest"]]
    (asserted,) = [a["data"] for a in manifest["assertions"] if a["label"] == CONSENT_ASSERTION]
    assert set(asserted) == {"attested", "subjects", "audit_record", "policy_version"}
    text = json.dumps(store_json)
    for secret in [*record.photo_sha256.values(), "Jane Doe", "John Roe", record.tenant]:
        assert secret not in text
    assert hashlib.sha256(photos["a"]).hexdigest() not in text


def test_without_an_audit_record_nothing_is_asserted(certs: SigningCertFiles) -> None:
    """A job accepted before manifests kept their audit record (or a style preview): no assertion."""
    settings = C2paSettings(cert_chain=certs.chain, private_key=certs.key)
    jpeg = encode_jpeg(np.full((32, 32, 3), 90, np.uint8))
    report = verify_media(sign_media(jpeg, "image/jpeg", JOB, settings), "image/jpeg")
    assert report.c2pa.valid and report.c2pa.consent is None


def test_a_malformed_consent_assertion_is_reported_not_fatal(certs: SigningCertFiles, tmp_path: Path) -> None:
    """Someone else's tool may write the label with other data: the report says so and carries on."""
    manifest = {
        "active_manifest": "m",
        "validation_state": "Valid",
        "manifests": {"m": {"assertions": [{"label": CONSENT_ASSERTION, "data": {"attested": "maybe"}}]}},
    }
    report = c2pa_report(manifest)
    assert report.consent is None and report.valid
    assert report.validation_errors == [f"{CONSENT_ASSERTION}: malformed assertion"]
