"""Where everything lives in object storage: one function per key, so the layout is written once.

One top-level prefix per kind of data, so each kind can carry its own bucket lifecycle rule (inputs
expire after a day, outputs after a week; see kiss_core.jobs.retention):
    jobs/{id}/manifest.json   the JobManifest
    inputs/{id}/{a,b}         the photos as uploaded
    outputs/{id}/...          video.mp4, thumbnail.jpg, image.jpg (deterministic keys: reruns overwrite)
The audit trail (kiss_core.jobs.audit) lives apart under audit/ and outlives the job.

Per tenant, two small index objects (empty markers) make tenant-scoped questions cheap:
    tenants/{tenant}/videos/{inverted created_at}-{id}   every job, newest first in key order (listing)
    tenants/{tenant}/active/{id}                          while the job is queued or running (job cap)
One global index of the same kind orders every unfinished job for queue positions and ETAs:
    queue/{created_at µs}-{id}                             while the job is queued or running, oldest first
The progress preview of a running diffusion job (a small JPEG, overwritten) is the output "progress".
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Mapping
from datetime import datetime

from kiss_core.errors import InvalidRequest

OUTPUT_NAMES: Mapping[str, tuple[str, str]] = {
    "video": ("video.mp4", "video/mp4"),
    "thumbnail": ("thumbnail.jpg", "image/jpeg"),
    "image": ("image.jpg", "image/jpeg"),
    "progress": ("progress.jpg", "image/jpeg"),
}


def new_job_id() -> str:
    return "video_" + secrets.token_hex(12)


JOB_PREFIXES = ("jobs/", "inputs/", "outputs/")


def job_prefixes(job_id: str) -> list[str]:
    """Every prefix under which this job owns objects (erasure deletes them all)."""
    return [f"{root}{job_id}/" for root in JOB_PREFIXES]


def input_key(job_id: str, subject: str, photo: int = 0) -> str:
    """Where a subject's photo is stored; `photo`: its index in the order sent (0: the first photo, the
    key of one-photo requests; the second is `{subject}_2`, and so on)."""
    return f"inputs/{job_id}/{subject}" if photo == 0 else f"inputs/{job_id}/{subject}_{photo + 1}"


def output_key(job_id: str, variant: str) -> str:
    return f"outputs/{job_id}/{OUTPUT_NAMES[variant][0]}"


TENANTS_PREFIX = "tenants/"
_MAX_MICROS = 10**16 - 1  # inverted timestamps (µs) sort newest first until the year 2286
_INDEX_NAME = re.compile(r"^\d{16}-video_[0-9a-f]+$")


def tenant_index_key(tenant: str, created_at: datetime, job_id: str) -> str:
    micros = int(created_at.timestamp()) * 1_000_000 + created_at.microsecond
    return f"{TENANTS_PREFIX}{tenant}/videos/{_MAX_MICROS - micros:016d}-{job_id}"


def tenant_active_key(tenant: str, job_id: str) -> str:
    return f"{TENANTS_PREFIX}{tenant}/active/{job_id}"


def tenant_slot_key(tenant: str, index: int) -> str:
    """One of the tenant's job-cap slots (0 .. cap-1), created only if absent (kiss_core.jobs.slots)."""
    return f"{TENANTS_PREFIX}{tenant}/slots/{index:04d}"


def tenant_slot_released_key(tenant: str, job_id: str) -> str:
    """Prefix of the locks (`.{generation}`, created only if absent) under which one party frees the
    job's slot; deleted once it is free."""
    return f"{TENANTS_PREFIX}{tenant}/slots-released/{job_id}"


QUEUE_PREFIX = "queue/"


def queue_key(created_at: datetime, job_id: str) -> str:
    """The job's marker in the global queue index: key order is creation order."""
    micros = int(created_at.timestamp()) * 1_000_000 + created_at.microsecond
    return f"{QUEUE_PREFIX}{micros:016d}-{job_id}"


WEBHOOKS_PENDING_PREFIX = "webhooks/pending/"


def webhook_pending_key(job_id: str) -> str:
    """A terminal job's webhook not yet delivered: a claim (owner, until) of the replica delivering it,
    written before the job goes terminal, deleted once the delivery has its outcome (runner.py)."""
    return f"{WEBHOOKS_PENDING_PREFIX}{job_id}"


def encode_cursor(index_name: str) -> str:
    return base64.urlsafe_b64encode(index_name.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        name = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        name = ""
    if not _INDEX_NAME.match(name):
        raise InvalidRequest(
            f"`cursor` {cursor[:40]!r} is not a cursor this API returned",
            None,
            [{"field": "cursor", "message": "invalid"}],
        )
    return name
