"""Durable jobs: the manifest in object storage is the single source of truth of a job's state.

Layout of one job: one top-level prefix per kind of data, so each kind can carry its own bucket
lifecycle rule (inputs expire after a day, outputs after a week; see kiss_core.retention):
    jobs/{id}/manifest.json   the JobManifest
    inputs/{id}/{a,b}         the photos as uploaded
    outputs/{id}/...          video.mp4, thumbnail.jpg, image.jpg (deterministic keys: reruns overwrite)
The audit trail (kiss_core.audit) lives apart under audit/ and outlives the job.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kiss_core.errors import JobNotFound
from kiss_core.schemas import (
    SUBJECTS,
    TERMINAL_STATUSES,
    JobManifest,
    JobResult,
    JobStatus,
    Lease,
    Problem,
    SubjectAnalysis,
    VideoParams,
    utcnow,
)
from kiss_core.storage import ObjectNotFound, ObjectStore

# Allowed status transitions; a terminal status never changes again.
_TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"in_progress", "failed", "canceled"}),
    "in_progress": frozenset({"queued", "in_progress", "completed", "failed", "canceled"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "canceled": frozenset(),
}

OUTPUT_NAMES: Mapping[str, tuple[str, str]] = {
    "video": ("video.mp4", "video/mp4"),
    "thumbnail": ("thumbnail.jpg", "image/jpeg"),
    "image": ("image.jpg", "image/jpeg"),
}


def new_job_id() -> str:
    return "video_" + secrets.token_hex(12)


JOB_PREFIXES = ("jobs/", "inputs/", "outputs/")


def job_prefixes(job_id: str) -> list[str]:
    """Every prefix under which this job owns objects (erasure deletes them all)."""
    return [f"{root}{job_id}/" for root in JOB_PREFIXES]


def input_key(job_id: str, subject: str) -> str:
    return f"inputs/{job_id}/{subject}"


def output_key(job_id: str, variant: str) -> str:
    return f"outputs/{job_id}/{OUTPUT_NAMES[variant][0]}"


class InvalidTransition(RuntimeError):
    pass


class JobStore:
    """Creates, reads and moves jobs through their states on any ObjectStore."""

    def __init__(self, store: ObjectStore):
        self.store = store

    def _manifest_key(self, job_id: str) -> str:
        return f"jobs/{job_id}/manifest.json"

    def create(
        self,
        params: VideoParams,
        photos: Mapping[str, bytes],
        analyses: Mapping[str, SubjectAnalysis],
        trace_context: dict[str, str] | None = None,
        job_id: str | None = None,
    ) -> JobManifest:
        """Store the inputs, then the manifest: once this returns the job survives any crash."""
        job_id = job_id or new_job_id()
        input_keys = {}
        for subject in SUBJECTS:
            key = input_key(job_id, subject)
            self.store.put(key, photos[subject], "application/octet-stream")
            input_keys[subject] = key
        now = utcnow()
        manifest = JobManifest(
            id=job_id,
            created_at=now,
            updated_at=now,
            params=params,
            subjects=[analyses[s] for s in SUBJECTS],
            input_keys=input_keys,
            trace_context=trace_context or {},
        )
        self.save(manifest)
        return manifest

    def save(self, manifest: JobManifest) -> None:
        data = manifest.model_dump_json().encode()
        self.store.put(self._manifest_key(manifest.id), data, "application/json")

    def get(self, job_id: str) -> JobManifest:
        if not job_id.startswith("video_") or not job_id[6:].isalnum():
            raise JobNotFound(f"There is no video with id {job_id!r}.")
        try:
            data = self.store.get(self._manifest_key(job_id))
        except ObjectNotFound:
            raise JobNotFound(f"There is no video with id {job_id!r}.") from None
        return JobManifest.model_validate_json(data)

    def update(self, job_id: str, *, status: JobStatus | None = None, **changes: Any) -> JobManifest:
        """Read-modify-write of the manifest, refusing transitions out of a terminal state."""
        manifest = self.get(job_id)
        if status is not None and status != manifest.status:
            if status not in _TRANSITIONS[manifest.status]:
                raise InvalidTransition(f"job {job_id} cannot go from {manifest.status} to {status}")
            changes["status"] = status
            if status in TERMINAL_STATUSES:
                changes["completed_at"] = utcnow()
        changes["updated_at"] = utcnow()
        updated = manifest.model_copy(update=changes)
        self.save(updated)
        return updated

    def complete(self, job_id: str, result: JobResult) -> JobManifest:
        return self.update(job_id, status="completed", stage="done", progress=100, result=result)

    def fail(self, job_id: str, problem: dict[str, Any]) -> JobManifest:
        return self.update(job_id, status="failed", error=Problem.model_validate(problem))

    def _lease_key(self, job_id: str) -> str:
        return f"jobs/{job_id}/lease.json"

    def write_lease(self, job_id: str, owner: str, until: datetime) -> Lease:
        lease = Lease(owner=owner, until=until)
        self.store.put(self._lease_key(job_id), lease.model_dump_json().encode(), "application/json")
        return lease

    def read_lease(self, job_id: str) -> Lease | None:
        try:
            return Lease.model_validate_json(self.store.get(self._lease_key(job_id)))
        except (ObjectNotFound, ValueError):
            return None

    def release_lease(self, job_id: str) -> None:
        self.store.delete(self._lease_key(job_id))

    def delete(self, job_id: str) -> int:
        """Erase everything the job owns (inputs, outputs, then the manifest); the audit record stays."""
        self.get(job_id)
        return sum(self.store.delete_prefix(prefix) for prefix in reversed(job_prefixes(job_id)))

    def erase_inputs(self, job_id: str) -> int:
        return self.store.delete_prefix(f"inputs/{job_id}/")

    def manifests(self) -> list[JobManifest]:
        """Every job's manifest (a scan of jobs/: for sweeps and recovery, not for hot paths)."""
        found = []
        for key in self.store.list("jobs/"):
            if key.endswith("/manifest.json"):
                try:
                    found.append(JobManifest.model_validate(json.loads(self.store.get(key))))
                except (ObjectNotFound, ValueError):
                    continue
        return found

    def unfinished(self) -> list[JobManifest]:
        """Jobs that were accepted but not finished: candidates for recovery after a restart."""
        return [m for m in self.manifests() if m.status not in TERMINAL_STATUSES]
