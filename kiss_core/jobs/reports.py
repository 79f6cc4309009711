"""Abuse reports (`POST /v1/reports`, the page's "report this video"), kept append-only for operators.

One object per report under `reports/`, outside every job's prefix, so a report outlives the video it
is about (erasing the job, by DELETE or the retention sweep, leaves it), exactly like the audit trail
(kiss_core.jobs.audit). Keys are unique and never rewritten:
`reports/{YYYY}/{MM}/{DD}/{received_at}-{report_id}.json`. A report names either one of the caller's
videos (`video_id`, which must exist when the report is made) or a file by its SHA-256 (a file someone
holds, e.g. checked with POST /v1/verify). Operators read them with `kissgen reports`.
"""

from __future__ import annotations

import secrets
from datetime import date, datetime
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kiss_core.schemas import utcnow
from kiss_core.storage import ObjectNotFound, ObjectStore

REPORTS_PREFIX = "reports/"
ReportReason = Literal["not_consented", "minor", "explicit", "impersonation", "harassment", "other"]
REPORT_REASONS: tuple[str, ...] = get_args(ReportReason)
REPORT_TARGETS = ("video_id", "file_sha256")
MAX_DETAILS = 1000


class ReportRequest(BaseModel):
    """What a client reports: a reason from the fixed list, free text, and what it is about."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: ReportReason = Field(description="Why: " + ", ".join(REPORT_REASONS) + ".")
    details: str = Field("", max_length=MAX_DETAILS, description="Free text, at most 1000 characters.")
    video_id: str | None = Field(
        None,
        pattern=r"^video_[A-Za-z0-9]{1,64}$",
        description="One of the caller's videos (it must exist when the report is made).",
    )
    file_sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="Lower-case hex SHA-256 of a file (an MP4 or JPEG)."
    )

    @model_validator(mode="after")
    def _exactly_one_target(self) -> ReportRequest:
        if (self.video_id is None) == (self.file_sha256 is None):
            raise ValueError("give exactly one of video_id and file_sha256")
        return self


class ReportRecord(ReportRequest):
    """A stored report: the request plus who sent it and when. Never rewritten."""

    id: str = Field(description="rpt_ + 16 hex digits.")
    tenant: str = Field(description="The tenant (API key owner) that sent it.")
    received_at: datetime


class ReportLog:
    """Writes one immutable object per report; lists them for operators."""

    def __init__(self, store: ObjectStore):
        self.store = store

    def record(self, report: ReportRequest, tenant: str) -> ReportRecord:
        now = utcnow()
        entry = ReportRecord(
            **report.model_dump(), id="rpt_" + secrets.token_hex(8), tenant=tenant, received_at=now
        )
        key = f"{REPORTS_PREFIX}{now:%Y/%m/%d}/{now:%Y%m%dT%H%M%S%fZ}-{entry.id}.json"
        self.store.put(key, entry.model_dump_json().encode(), "application/json")
        return entry

    def list(self, since: date | None = None) -> list[ReportRecord]:
        """Every report received on `since` or later (all without it), oldest first. The day is read from
        the key, so older days are not downloaded."""
        first_day = f"{since:%Y/%m/%d}" if since is not None else ""
        found = []
        for key in sorted(self.store.list(REPORTS_PREFIX)):
            if key[len(REPORTS_PREFIX) : len(REPORTS_PREFIX) + 10] < first_day:
                continue
            try:
                found.append(ReportRecord.model_validate_json(self.store.get(key)))
            except (ObjectNotFound, ValueError):  # removed meanwhile, or not a report
                continue
        return found
