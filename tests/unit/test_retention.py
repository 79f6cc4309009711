"""Retention on the local store: the sweep erases inputs after a day and everything after a week."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from kiss_core.jobs.audit import AuditLog
from kiss_core.jobs.retention import lifecycle_days, sweep
from kiss_core.jobs.store import JobStore
from kiss_core.schemas import Attestation, JobManifest, JobResult, QualityReport, SubjectConsent, VideoParams
from kiss_core.settings import RetentionSettings
from kiss_core.storage import LocalDirStore
from tests.support.mean_face import mean_face_analysis

NOW = datetime.fromisoformat("2026-11-25T12:00:00+00:00")
RETENTION = RetentionSettings()


@pytest.fixture
def jobs(tmp_path: Path) -> JobStore:
    return JobStore(LocalDirStore(tmp_path))


def _job(jobs: JobStore, age: timedelta, status: str) -> JobManifest:
    """A job created `age` before NOW, with outputs when completed; its audit record is written too."""
    analyses = {s: mean_face_analysis(s, (480, 600), (140, 200, 340, 440), 0.0, 0.0) for s in "ab"}
    photos = {"a": b"photo-a", "b": b"photo-b"}
    manifest = jobs.create(VideoParams(), photos, analyses)
    consent = Attestation(a=SubjectConsent(consented=True), b=SubjectConsent(consented=True))
    AuditLog(jobs.store).record(manifest.id, consent, photos, analyses)
    created = NOW - age
    changes: dict[str, object] = {"created_at": created, "updated_at": created}
    if status == "completed":
        report = QualityReport(threshold=0.92, subjects=[])
        result = JobResult(
            output="video",
            width=8,
            height=8,
            fps=8,
            frames=8,
            seconds=1,
            contact_frame=4,
            keys={"video": f"outputs/{manifest.id}/video.mp4"},
            quality=report,
        )
        jobs.store.put(f"outputs/{manifest.id}/video.mp4", b"mp4")
        changes |= {"status": "completed", "completed_at": created, "result": result}
    manifest = manifest.model_copy(update=changes)
    jobs.save(manifest)
    return manifest


def test_fresh_jobs_are_left_alone(jobs: JobStore) -> None:
    job = _job(jobs, timedelta(hours=2), "completed")
    report = sweep(jobs, RETENTION, NOW)
    assert report.inputs_erased == report.jobs_erased == []
    assert jobs.store.exists(job.input_keys["a"]) and jobs.get(job.id).status == "completed"


def test_inputs_go_after_a_day_outputs_stay(jobs: JobStore) -> None:
    job = _job(jobs, timedelta(hours=25), "completed")
    report = sweep(jobs, RETENTION, NOW)
    assert report.inputs_erased == [job.id] and report.jobs_erased == []
    assert not jobs.store.exists(job.input_keys["a"]) and not jobs.store.exists(job.input_keys["b"])
    assert jobs.store.exists(f"outputs/{job.id}/video.mp4") and jobs.get(job.id).status == "completed"
    assert sweep(jobs, RETENTION, NOW).inputs_erased == [], "a second sweep has nothing left to do"


def test_everything_but_the_audit_goes_after_a_week(jobs: JobStore) -> None:
    job = _job(jobs, timedelta(days=8), "completed")
    report = sweep(jobs, RETENTION, NOW)
    assert report.jobs_erased == [job.id]
    assert [k for k in jobs.store.list("") if not k.startswith("audit/")] == []
    assert len(AuditLog(jobs.store).for_job(job.id)) == 1


def test_unfinished_job_whose_inputs_expire_fails(jobs: JobStore) -> None:
    job = _job(jobs, timedelta(hours=30), "queued")
    report = sweep(jobs, RETENTION, NOW)
    assert report.jobs_expired == [job.id]
    failed = jobs.get(job.id)
    assert failed.status == "failed" and failed.error is not None and failed.error.code == "inputs_expired"


def test_lifecycle_days_round_up_to_whole_days() -> None:
    assert lifecycle_days(RETENTION) == {
        "inputs/": 1,
        "idempotency/": 1,
        "outputs/": 7,
        "jobs/": 7,
        "tenants/": 7,
        "queue/": 7,
        "webhooks/": 7,
    }
    assert lifecycle_days(RetentionSettings(inputs_hours=36, outputs_days=2.5)) == {
        "inputs/": 2,
        "idempotency/": 2,
        "outputs/": 3,
        "jobs/": 3,
        "tenants/": 3,
        "queue/": 3,
        "webhooks/": 3,
    }
