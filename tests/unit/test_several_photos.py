"""Several photos of a subject through admission, the store, the audit and the identity stage, with the
real stages in-process on a local store. Generation uses synthetic subjects only: another photo of a
subject is the same synthetic face mirrored, brighter or slightly rotated; a stranger is another one."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import numpy as np
import pytest

from kiss_core.errors import FaceNotFound, InvalidRequest, SubjectPhotosMismatch, TooManyPhotos
from kiss_core.faces.synthetic import synthetic_subject, synthetic_subject_png
from kiss_core.jobs.admission import JobAdmission
from kiss_core.jobs.audit import AuditLog
from kiss_core.jobs.idempotency import fingerprint
from kiss_core.jobs.runner import JobRunner
from kiss_core.jobs.stages import InProcessStages
from kiss_core.jobs.store import JobStore
from kiss_core.media.images import encode_png
from kiss_core.schemas import Attestation, AuditRecord, JobManifest, StageRequest, SubjectConsent, VideoParams
from kiss_core.settings import JobSettings, Settings
from kiss_core.storage import LocalDirStore
from tests.support.photo_variants import brighter, mirrored, rotated

PARAMS = VideoParams(style="peck", seconds=1, fps=8, size="256x144")
ATTESTED = Attestation(a=SubjectConsent(consented=True), b=SubjectConsent(consented=True))


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


@pytest.fixture
def store(tmp_path: Path) -> LocalDirStore:
    return LocalDirStore(tmp_path)


@pytest.fixture
def stages(settings: Settings, store: LocalDirStore) -> InProcessStages:
    return InProcessStages(settings, store)


@pytest.fixture(scope="module")
def several() -> dict[str, list[bytes]]:
    """Three photos of synthetic subject 0, two of subject 1. (Not a brighter one: it scores best, and the
    256x144 peck composed from it was blocked by the output check's age model, 24.7 against 25.)"""
    a, b = synthetic_subject(0), synthetic_subject(1)
    return {
        "a": [encode_png(a), encode_png(mirrored(a)), encode_png(rotated(a))],
        "b": [encode_png(rotated(b)), encode_png(b)],
    }


def _admission(settings: Settings, store: LocalDirStore, stages: InProcessStages) -> JobAdmission:
    return JobAdmission(JobStore(store), stages, settings.limits, faces=settings.faces)


def test_several_photos_are_stored_audited_and_make_the_identity_reference(
    settings: Settings, store: LocalDirStore, stages: InProcessStages, several: dict[str, list[bytes]]
) -> None:
    manifest = asyncio.run(_admission(settings, store, stages).submit(PARAMS, several, ATTESTED))
    job = manifest.id
    names = ("a", "a_2", "a_3", "b", "b_2")
    assert sorted(store.list(f"inputs/{job}/")) == [f"inputs/{job}/{n}" for n in names]
    for s in "ab":  # the composed photo and the others: every photo stored once, analysed once
        keys = [manifest.input_keys[s], *manifest.reference_keys[s]]
        assert sorted(store.get(k) for k in keys) == sorted(several[s])
        assert len(manifest.reference_analyses[s]) == len(several[s]) - 1
    chosen = {a.subject: a for a in manifest.subjects}

    (record,) = AuditLog(store).for_job(job)
    assert record.photos_sha256 == {s: [hashlib.sha256(p).hexdigest() for p in several[s]] for s in "ab"}
    for s in "ab":
        assert record.photo_sha256[s] == hashlib.sha256(store.get(manifest.input_keys[s])).hexdigest()
        assert record.age_estimates[s] == chosen[s].age_estimate

    request = StageRequest.for_job(manifest, {})
    assert request.reference_keys == manifest.reference_keys
    conditioning = stages.identity(request)
    for s in "ab":
        analyses = [chosen[s], *manifest.reference_analyses[s]]
        units = [np.asarray(a.embedding) / np.linalg.norm(a.embedding) for a in analyses]
        mean = np.mean(units, axis=0)
        condition = conditioning.subjects[s]
        np.testing.assert_allclose(condition.embedding, mean / np.linalg.norm(mean), atol=1e-5)
        assert len(condition.crops) == len(several[s]) and condition.crops[0] is condition.crop

    runner = JobRunner(JobStore(store), stages, JobSettings(max_attempts=1))
    done = asyncio.run(runner.run(job))
    assert done.status == "completed", done.error
    JobStore(store).delete(job)
    assert store.list(f"inputs/{job}/") == [], "erasure takes every photo"


def test_photos_of_two_people_are_refused_before_anything_is_stored(
    settings: Settings, store: LocalDirStore, stages: InProcessStages, several: dict[str, list[bytes]]
) -> None:
    photos = {"a": several["a"][:2], "b": [several["b"][0], synthetic_subject_png(2)]}
    with pytest.raises(SubjectPhotosMismatch) as caught:
        asyncio.run(_admission(settings, store, stages).submit(PARAMS, photos, ATTESTED))
    assert caught.value.subject == "b" and [e["photos"] for e in caught.value.errors or []] == [[1, 2]]
    assert store.list("") == [], "no input, no audit record, no job"


def test_more_photos_than_the_limit_or_the_same_one_twice_are_refused_unanalysed(
    settings: Settings, store: LocalDirStore, stages: InProcessStages, several: dict[str, list[bytes]]
) -> None:
    admission = _admission(settings, store, stages)
    extra = {"a": [*several["a"], encode_png(brighter(synthetic_subject(0)))], "b": several["b"]}
    with pytest.raises(TooManyPhotos) as caught:
        asyncio.run(admission.submit(PARAMS, extra, ATTESTED))
    assert caught.value.subject == "a" and "4 photos" in caught.value.detail
    twice = {"a": several["a"][0], "b": [several["b"][0], several["b"][0]]}
    with pytest.raises(InvalidRequest) as refused:
        asyncio.run(admission.submit(PARAMS, twice, ATTESTED))
    assert refused.value.subject == "b"
    assert store.list("") == []


def test_a_refused_photo_among_several_is_named_by_its_number(
    settings: Settings, store: LocalDirStore, stages: InProcessStages, several: dict[str, list[bytes]]
) -> None:
    blank = encode_png(np.full((200, 200, 3), 128, np.uint8))
    photos = {"a": [several["a"][0], blank], "b": several["b"]}
    with pytest.raises(FaceNotFound) as caught:
        asyncio.run(_admission(settings, store, stages).submit(PARAMS, photos, ATTESTED))
    assert caught.value.subject == "a" and caught.value.detail.startswith("photo 2 of subject_a: ")
    assert caught.value.errors == [{"field": "subject_a", "photo": 2, "message": FaceNotFound.title}]
    assert store.list("") == []


def test_the_request_fingerprint_covers_every_photo_and_keeps_one_photo_s(
    several: dict[str, list[bytes]],
) -> None:
    one = {"a": several["a"][0], "b": several["b"][0]}
    assert fingerprint(PARAMS, ATTESTED, one) == fingerprint(
        PARAMS, ATTESTED, {s: [p] for s, p in one.items()}
    ), "a one-photo list is the one photo"
    digests = {
        fingerprint(PARAMS, ATTESTED, photos)
        for photos in (
            one,
            several,
            {"a": several["a"][:2], "b": several["b"]},
            {**several, "a": several["a"][::-1]},
        )
    }
    assert len(digests) == 4, "another photo, one photo fewer or another order is another request"


def test_manifests_and_audit_records_from_before_several_photos_still_load(
    settings: Settings, store: LocalDirStore, stages: InProcessStages, several: dict[str, list[bytes]]
) -> None:
    one = {"a": several["a"][0], "b": several["b"][0]}
    manifest = asyncio.run(_admission(settings, store, stages).submit(PARAMS, one, ATTESTED))
    assert manifest.reference_keys == {} and manifest.reference_analyses == {}
    old = manifest.model_dump(mode="json", exclude={"reference_keys", "reference_analyses"})
    loaded = JobManifest.model_validate(old)
    assert loaded.reference_keys == {} and StageRequest.for_job(loaded, {}).reference_keys == {}
    (record,) = AuditLog(store).for_job(manifest.id)
    assert record.photos_sha256 == {s: [hashlib.sha256(one[s]).hexdigest()] for s in "ab"}
    old_record = AuditRecord.model_validate(record.model_dump(mode="json", exclude={"photos_sha256"}))
    assert old_record.photo_sha256 == record.photo_sha256 and old_record.photos_sha256 == {}
