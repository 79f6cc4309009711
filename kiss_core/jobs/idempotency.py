"""Idempotency-Key for POST /v1/videos (IETF draft "The Idempotency-Key HTTP Header Field").

Same key and same request: the same job comes back. Same key, different request: 422. A retry
while the first request is still being handled: 409. Records live under `idempotency/` and expire
with the inputs (24 h). Within one ingress replica the in-flight check is exact; across replicas it
relies on the pending record written before the photos are analysed, which closes all but a
few-millisecond window.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from kiss_core.errors import ClientError, InvalidRequest
from kiss_core.schemas import SUBJECTS, Attestation, SubjectPhotos, VideoParams, photo_list
from kiss_core.storage import ObjectNotFound, ObjectStore

IDEMPOTENCY_PREFIX = "idempotency/"
PENDING_TIMEOUT = timedelta(seconds=120)  # a pending record older than this belongs to a crashed request
MAX_KEY_LENGTH = 255


class IdempotencyKeyReused(ClientError):
    code = "idempotency_key_reused"
    status = 422
    title = "The Idempotency-Key was already used for a different request"


class IdempotencyInFlight(ClientError):
    code = "idempotency_key_in_flight"
    status = 409
    title = "A request with this Idempotency-Key is still being processed"


class IdempotencyRecord(BaseModel):
    fingerprint: str
    job_id: str | None  # None while the first request is being handled
    created_at: datetime


def check_key(key: str) -> str:
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidRequest(
            f"`Idempotency-Key` must be 1..{MAX_KEY_LENGTH} printable characters but has {len(key)}",
            None,
            [{"field": "Idempotency-Key", "message": "invalid"}],
        )
    return key


def fingerprint(
    params: VideoParams,
    attestation: Attestation | None,
    photos: Mapping[str, SubjectPhotos],
    webhook_url: str | None = None,
) -> str:
    """A digest of everything the request asks for, every photo included (in the order sent: another
    order may choose another best photo). A subject with one photo hashes as before several were
    possible, so records written then still match."""
    hashes = {
        s: [hashlib.sha256(p).hexdigest() for p in photo_list(photos[s])] for s in SUBJECTS if s in photos
    }
    body: dict[str, Any] = {
        "params": params.model_dump(mode="json"),
        "consent": attestation.model_dump(mode="json") if attestation else None,
        "photos": {s: h[0] if len(h) == 1 else h for s, h in hashes.items()},
    }
    if webhook_url is not None:  # absent otherwise, so records written before webhooks still match
        body["webhook_url"] = webhook_url
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class IdempotencyStore:
    """Records of one tenant: the same key sent by two tenants names two records (tenant names cannot
    contain `:`, so `{tenant}:{key}` never collides across tenants)."""

    def __init__(self, store: ObjectStore, tenant: str = "public"):
        self.store = store
        self.tenant = tenant

    def for_tenant(self, tenant: str) -> IdempotencyStore:
        return IdempotencyStore(self.store, tenant)

    def _key(self, key: str) -> str:
        return f"{IDEMPOTENCY_PREFIX}{hashlib.sha256(f'{self.tenant}:{key}'.encode()).hexdigest()}.json"

    def _read(self, key: str) -> IdempotencyRecord | None:
        try:
            return IdempotencyRecord.model_validate_json(self.store.get(self._key(key)))
        except ObjectNotFound:
            return None

    def _write(self, key: str, record: IdempotencyRecord) -> None:
        self.store.put(self._key(key), record.model_dump_json().encode(), "application/json")

    def begin(self, key: str, digest: str, now: datetime) -> str | None:
        """The job id to replay, or None after reserving the key for a new request."""
        existing = self._read(key)
        if existing is not None:
            if existing.fingerprint != digest:
                raise IdempotencyKeyReused("this Idempotency-Key was used with a different request body")
            if existing.job_id is not None:
                return existing.job_id
            if existing.created_at + PENDING_TIMEOUT > now:
                raise IdempotencyInFlight("the first request with this Idempotency-Key is still running")
        self._write(key, IdempotencyRecord(fingerprint=digest, job_id=None, created_at=now))
        return None

    def complete(self, key: str, digest: str, job_id: str, now: datetime) -> None:
        self._write(key, IdempotencyRecord(fingerprint=digest, job_id=job_id, created_at=now))

    def abandon(self, key: str) -> None:
        """The request failed before a job existed: the key may be used again."""
        self.store.delete(self._key(key))

    def expire(self, older_than: datetime) -> int:
        """Deletes records created before `older_than` (the retention sweep calls this)."""
        removed = 0
        for object_key in self.store.list(IDEMPOTENCY_PREFIX):
            try:
                record = IdempotencyRecord.model_validate_json(self.store.get(object_key))
            except (ObjectNotFound, ValueError):
                continue
            if record.created_at < older_than:
                self.store.delete(object_key)
                removed += 1
        return removed
