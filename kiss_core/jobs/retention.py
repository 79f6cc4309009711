"""Retention: inputs are erased after a day, outputs and manifests after a week.

Two mechanisms, so that retention holds on any store: a sweep over the manifests (run by every
ingress replica; idempotent, so several replicas may sweep at once) and, on S3/MinIO, bucket
lifecycle rules per top-level prefix that expire objects even when no replica runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from kiss_core.errors import problem
from kiss_core.jobs.idempotency import IdempotencyStore
from kiss_core.jobs.store import InvalidTransition, JobStore
from kiss_core.schemas import TERMINAL_STATUSES
from kiss_core.settings import RetentionSettings
from kiss_core.storage import ObjectStore


@dataclass
class SweepReport:
    inputs_erased: list[str] = field(default_factory=list)  # job ids whose photos were erased
    jobs_erased: list[str] = field(default_factory=list)  # job ids erased entirely
    jobs_expired: list[str] = field(
        default_factory=list
    )  # unfinished jobs failed because their inputs expired


def lifecycle_days(retention: RetentionSettings) -> dict[str, int]:
    """Days per prefix for S3 lifecycle rules (whole days: S3 rounds expiry to days).

    `tenants/` holds the per-tenant list and active-job markers of each job; they go with its manifest
    (a job can never be active that long: its photos expire after a day); so do `queue/`, the global
    index of unfinished jobs, and `webhooks/`, the claims of deliveries still pending.
    """
    outputs = max(1, math.ceil(retention.outputs_days))
    inputs = max(1, math.ceil(retention.inputs_hours / 24))
    return {
        "inputs/": inputs,
        "idempotency/": inputs,
        "outputs/": outputs,
        "jobs/": outputs,
        "tenants/": outputs,
        "queue/": outputs,
        "webhooks/": outputs,
    }


def install_lifecycle(store: ObjectStore, retention: RetentionSettings) -> bool:
    return retention.lifecycle_rules and store.set_expiry(lifecycle_days(retention))


def sweep(jobs: JobStore, retention: RetentionSettings, now: datetime) -> SweepReport:
    """Erase what is past its retention. A job still unfinished when its photos expire is failed."""
    report = SweepReport()
    IdempotencyStore(jobs.store).expire(now - timedelta(hours=retention.inputs_hours))
    inputs_ttl = timedelta(hours=retention.inputs_hours)
    outputs_ttl = timedelta(days=retention.outputs_days)
    for manifest in jobs.manifests():
        finished_at = manifest.completed_at or manifest.updated_at
        if manifest.status in TERMINAL_STATUSES and finished_at + outputs_ttl <= now:
            jobs.delete(manifest.id)
            report.jobs_erased.append(manifest.id)
            continue
        if manifest.created_at + inputs_ttl <= now and jobs.erase_inputs(manifest.id):
            report.inputs_erased.append(manifest.id)
            if manifest.status not in TERMINAL_STATUSES:
                expired = problem(
                    code="inputs_expired",
                    status=500,
                    title="The job did not finish within the input retention period",
                    detail=f"the photos of {manifest.id} were erased after {retention.inputs_hours:g} h",
                )
                try:
                    jobs.fail(manifest.id, expired)
                    report.jobs_expired.append(manifest.id)
                except InvalidTransition:
                    pass
    return report
