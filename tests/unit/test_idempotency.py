"""Idempotency records on a real (local) store: replay, mismatch, in-flight, crash recovery, expiry."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from kiss_core.errors import InvalidRequest
from kiss_core.jobs.idempotency import (
    PENDING_TIMEOUT,
    IdempotencyInFlight,
    IdempotencyKeyReused,
    IdempotencyStore,
    check_key,
    fingerprint,
)
from kiss_core.schemas import Attestation, SubjectConsent, VideoParams
from kiss_core.storage import LocalDirStore

NOW = datetime.fromisoformat("2026-11-25T12:00:00+00:00")
CONSENT = Attestation(a=SubjectConsent(consented=True), b=SubjectConsent(consented=True))


@pytest.fixture
def records(tmp_path: Path) -> IdempotencyStore:
    return IdempotencyStore(LocalDirStore(tmp_path))


def test_fingerprint_covers_params_consent_and_photos() -> None:
    photos = {"a": b"A", "b": b"B"}
    base = fingerprint(VideoParams(), CONSENT, photos)
    assert base == fingerprint(VideoParams(), CONSENT, dict(photos))
    assert base != fingerprint(VideoParams(style="peck"), CONSENT, photos)
    assert base != fingerprint(VideoParams(), CONSENT, {"a": b"A", "b": b"other"})
    assert base != fingerprint(VideoParams(), None, photos)


def test_replay_mismatch_and_in_flight(records: IdempotencyStore) -> None:
    assert records.begin("k1", "digest", NOW) is None
    with pytest.raises(IdempotencyInFlight):
        records.begin("k1", "digest", NOW + timedelta(seconds=1))
    records.complete("k1", "digest", "video_1", NOW)
    assert records.begin("k1", "digest", NOW + timedelta(seconds=2)) == "video_1"
    with pytest.raises(IdempotencyKeyReused):
        records.begin("k1", "another digest", NOW)


def test_a_crashed_first_request_does_not_block_the_key_for_ever(records: IdempotencyStore) -> None:
    assert records.begin("k2", "digest", NOW) is None
    assert records.begin("k2", "digest", NOW + PENDING_TIMEOUT + timedelta(seconds=1)) is None


def test_abandoned_key_can_be_used_again_and_old_records_expire(records: IdempotencyStore) -> None:
    records.begin("k3", "digest", NOW)
    records.abandon("k3")
    assert records.begin("k3", "a corrected request", NOW) is None
    records.complete("k4", "digest", "video_4", NOW - timedelta(days=2))
    assert records.expire(NOW - timedelta(hours=24)) == 1
    assert records.begin("k4", "digest", NOW) is None, "an expired key starts afresh"


@pytest.mark.parametrize("key", ["", "x" * 256, "bad\nkey"])
def test_malformed_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidRequest):
        check_key(key)
