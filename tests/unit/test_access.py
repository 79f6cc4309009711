"""API keys, tenants and rate limits without Ray: hashing, authentication, the token bucket, tenant
scoping of jobs and idempotency keys on a real local store."""

from __future__ import annotations

import asyncio
import json
import pickle
from datetime import datetime
from pathlib import Path

import pytest

from kiss_core.errors import (
    InvalidApiKey,
    InvalidRequest,
    JobNotFound,
    RateLimited,
    TooManyJobs,
    Unauthorized,
)
from kiss_core.jobs.access import (
    OPEN_PRINCIPAL,
    AccessControl,
    TokenBucket,
    configured_keys,
    hash_key,
    new_key,
)
from kiss_core.jobs.idempotency import IdempotencyStore
from kiss_core.jobs.store import JobStore
from kiss_core.keys import tenant_active_key
from kiss_core.settings import AccessSettings, ApiKeyRecord, Settings
from kiss_core.storage import LocalDirStore


class FakeClock:
    """A clock the test moves by hand (time is the edge the token bucket cannot own)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _record(tenant: str, key: str, **limits: object) -> ApiKeyRecord:
    return ApiKeyRecord(tenant=tenant, key_sha256=hash_key(key), name=f"{tenant}-key", **limits)


def test_keys_are_long_random_tokens_stored_as_sha256() -> None:
    key = new_key()
    assert key.startswith("kg_") and len(key) >= 40 and key != new_key()
    digest = hash_key(key)
    assert len(digest) == 64 and key not in digest
    assert digest == hash_key(key) and digest != hash_key(key + "x")


def test_authenticate_bearer_and_bare_key_to_the_right_tenant() -> None:
    key_a, key_b = new_key(), new_key()
    access = AccessControl(
        AccessSettings(max_concurrent_jobs=3),
        [_record("acme", key_a, max_concurrent_jobs=1), _record("globex", key_b)],
    )
    assert not access.open
    principal = access.authenticate(f"Bearer {key_a}")
    assert principal is not None and principal.tenant == "acme" and principal.max_concurrent_jobs == 1
    assert access.authenticate(f"bearer   {key_b}").tenant == "globex"  # type: ignore[union-attr]
    globex = access.authorize(None, key_b)  # X-API-Key
    assert globex.tenant == "globex" and globex.max_concurrent_jobs == 3, "defaults fill the record's gaps"
    for bad in (None, "", "Bearer ", f"Bearer {key_a}x", key_a[:-1], f"Basic {key_a}"):
        assert access.authenticate(bad) is None, bad


def test_authorize_refuses_missing_and_invalid_keys_with_a_bearer_challenge() -> None:
    key = new_key()
    access = AccessControl(AccessSettings(), [_record("acme", key)])
    with pytest.raises(Unauthorized) as missing:
        access.authorize(None, None)
    assert not isinstance(missing.value, InvalidApiKey)
    assert missing.value.headers() == {"WWW-Authenticate": 'Bearer realm="kissgen"'}
    with pytest.raises(InvalidApiKey) as invalid:
        access.authorize(f"Bearer {new_key()}")
    problem = invalid.value.to_problem()
    assert problem["status"] == 401 and problem["code"] == "unauthorized"
    assert 'error="invalid_token"' in invalid.value.headers()["WWW-Authenticate"]
    again = pickle.loads(pickle.dumps(invalid.value))  # errors cross Ray processes by pickling
    assert type(again) is InvalidApiKey and again.headers() == invalid.value.headers()


def test_open_mode_only_without_keys_and_not_required(tmp_path: Path) -> None:
    assert AccessControl(AccessSettings()).authorize(None) is OPEN_PRINCIPAL
    assert OPEN_PRINCIPAL.tenant == "public" and OPEN_PRINCIPAL.max_concurrent_jobs is None
    with pytest.raises(ValueError, match="no API keys"):
        AccessControl(AccessSettings(required=True))
    empty = tmp_path / "keys.yaml"
    empty.write_text("[]\n")
    with pytest.raises(ValueError, match="no API keys"):
        AccessControl(AccessSettings(required=True, keys_file=empty))


def test_keys_file_yaml_and_json_and_settings_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_a, key_b, key_c = new_key(), new_key(), new_key()
    yaml_file = tmp_path / "keys.yaml"
    yaml_file.write_text(
        f"keys:\n  - tenant: acme\n    key_sha256: {hash_key(key_a)}\n    rate_per_minute: 6\n"
    )
    json_file = tmp_path / "keys.json"
    json_file.write_text(json.dumps([{"tenant": "globex", "key_sha256": hash_key(key_b)}]))
    settings = AccessSettings(keys=[_record("initech", key_c)], keys_file=yaml_file)
    assert [r.tenant for r in configured_keys(settings)] == ["initech", "acme"]
    access = AccessControl(AccessSettings(keys_file=json_file))
    assert access.authorize(f"Bearer {key_b}").tenant == "globex"

    monkeypatch.setenv("KISS_ACCESS__REQUIRED", "true")
    monkeypatch.setenv("KISS_ACCESS__KEYS_FILE", str(yaml_file))
    from_env = Settings().access
    assert from_env.required and AccessControl(from_env).authorize(None, key_a).rate_per_minute == 6

    duplicate = AccessSettings(keys=[_record("acme", key_a)], keys_file=yaml_file)
    with pytest.raises(ValueError, match="configured twice"):
        configured_keys(duplicate)
    with pytest.raises(ValueError):
        ApiKeyRecord(tenant="has:colon", key_sha256=hash_key(key_a))  # tenants cannot collide in idempotency


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate_per_s=0.5, burst=2, now=0.0)
    assert bucket.take(0.0) == 0 and bucket.take(0.0) == 0
    assert bucket.take(0.0) == pytest.approx(2.0)  # one token every 2 s
    assert bucket.take(1.0) == pytest.approx(1.0)
    assert bucket.take(2.0) == 0
    assert bucket.take(100.0) == 0 and bucket.take(100.0) == 0 and bucket.take(100.0) > 0, "capped at burst"


def test_rate_limit_per_key_with_retry_after_and_replica_division() -> None:
    clock = FakeClock()
    key_a, key_b = new_key(), new_key()
    records = [_record("acme", key_a, rate_per_minute=6, burst=2), _record("globex", key_b, burst=1)]
    access = AccessControl(AccessSettings(rate_per_minute=60), records, clock=clock)
    access.authorize(f"Bearer {key_a}")
    access.authorize(f"Bearer {key_a}")
    with pytest.raises(RateLimited) as limited:
        access.authorize(f"Bearer {key_a}")
    assert (
        limited.value.to_problem()["status"] == 429 and limited.value.to_problem()["code"] == "rate_limited"
    )
    assert limited.value.headers() == {"Retry-After": "10"}  # 6/min: a token every 10 s
    access.authorize(f"Bearer {key_b}")  # another key has its own bucket
    clock.now += 9.5
    with pytest.raises(RateLimited) as almost:
        access.authorize(f"Bearer {key_a}")
    assert almost.value.retry_after_s == 1, "rounded up, never 0"
    clock.now += 0.5
    access.authorize(f"Bearer {key_a}")

    halved = AccessControl(AccessSettings(ingress_replicas=2), records, clock=clock)
    halved.authorize(f"Bearer {key_a}")
    halved.authorize(f"Bearer {key_a}")
    with pytest.raises(RateLimited) as divided:
        halved.authorize(f"Bearer {key_a}")
    assert divided.value.retry_after_s == 20, "two replicas share the key's 6/min: 3/min each"


def test_webhook_secret_per_tenant() -> None:
    secret = "whsec_" + "A" * 43 + "="
    access = AccessControl(
        AccessSettings(), [_record("acme", new_key(), webhook_secret=secret), _record("globex", new_key())]
    )
    assert access.webhook_secret_for("acme") == secret and access.webhook_secret_for("globex") is None


def _manifest(jobs: JobStore, tenant: str, photos: dict[str, bytes]) -> str:
    from kiss_core.schemas import VideoParams
    from tests.support.mean_face import mean_face_analysis

    analyses = {s: mean_face_analysis(s, (480, 600), (140, 200, 340, 440), 0.0, 0.0) for s in "ab"}
    return jobs.create(VideoParams(), photos, analyses, tenant=tenant).id


def test_jobs_are_scoped_listed_newest_first_and_capped_per_tenant(tmp_path: Path) -> None:
    jobs = JobStore(LocalDirStore(tmp_path))
    photos = {"a": b"A", "b": b"B"}
    acme = [_manifest(jobs, "acme", photos) for _ in range(5)]
    other = _manifest(jobs, "globex", photos)
    assert jobs.get(acme[0], "acme").tenant == "acme"
    with pytest.raises(JobNotFound) as hidden:
        jobs.get(acme[0], "globex")
    with pytest.raises(JobNotFound) as missing:
        jobs.get("video_0123456789abcdef01234567", "globex")
    assert hidden.value.to_problem()["detail"].replace(acme[0], "X") == missing.value.to_problem()[
        "detail"
    ].replace("video_0123456789abcdef01234567", "X"), "another tenant's job looks exactly like a missing one"

    first, cursor = jobs.list_tenant("acme", limit=2)
    second, cursor2 = jobs.list_tenant("acme", limit=2, cursor=cursor)
    third, end = jobs.list_tenant("acme", limit=2, cursor=cursor2)
    listed = [m.id for m in first + second + third]
    assert listed == acme[::-1] and end is None, "newest first, each job once"
    assert [m.id for m in jobs.list_tenant("globex")[0]] == [other]
    with pytest.raises(InvalidRequest):
        jobs.list_tenant("acme", cursor="not-a-cursor")

    assert sorted(jobs.active("acme")) == sorted(acme)
    jobs.fail(acme[0], {"type": "t", "title": "t", "status": 500, "detail": "d", "code": "x"})
    jobs.delete(acme[1])
    assert sorted(jobs.active("acme")) == sorted(acme[2:]), "terminal and erased jobs leave the count"
    assert acme[1] not in [m.id for m in jobs.list_tenant("acme", limit=100)[0]]
    # A marker left behind (crash between marker and manifest) is pruned when verified.
    jobs.store.put(tenant_active_key("acme", "video_00000000000000000000dead"), b"")
    assert len(jobs.active("acme")) == 4 and len(jobs.active("acme", verify=True)) == 3


def test_tenant_job_cap_is_refused_with_retry_after(tmp_path: Path) -> None:
    from kiss_core.jobs.admission import JobAdmission
    from kiss_core.schemas import Attestation, SubjectConsent, VideoParams
    from kiss_core.settings import LimitSettings

    jobs = JobStore(LocalDirStore(tmp_path))
    _manifest(jobs, "acme", {"a": b"A", "b": b"B"})
    admission = JobAdmission(jobs, stages=None, limits=LimitSettings(retry_after_s=7))  # type: ignore[arg-type]
    consent = Attestation(a=SubjectConsent(consented=True), b=SubjectConsent(consented=True))
    with pytest.raises(TooManyJobs) as refused:
        asyncio.run(
            admission.submit(VideoParams(), {"a": b"A", "b": b"B"}, consent, tenant="acme", max_tenant_jobs=1)
        )
    assert refused.value.to_problem()["code"] == "too_many_jobs" and refused.value.headers() == {
        "Retry-After": "7"
    }


def test_idempotency_keys_do_not_collide_across_tenants(tmp_path: Path) -> None:
    now = datetime.fromisoformat("2026-11-25T12:00:00+00:00")
    records = IdempotencyStore(LocalDirStore(tmp_path))
    acme, globex = records.for_tenant("acme"), records.for_tenant("globex")
    assert acme.begin("same-key", "digest-a", now) is None
    acme.complete("same-key", "digest-a", "video_a", now)
    assert globex.begin("same-key", "digest-b", now) is None, "another tenant's key is not a reuse"
    globex.complete("same-key", "digest-b", "video_b", now)
    assert acme.begin("same-key", "digest-a", now) == "video_a"
    assert globex.begin("same-key", "digest-b", now) == "video_b"
    assert records.begin("same-key", "digest-c", now) is None, "the open-mode tenant is separate too"


def _write_keys(path: Path, records: list[dict[str, object]]) -> None:
    """Replace the file as a secret mount does: a new file renamed over the old one."""
    staging = path.with_suffix(".new")
    staging.write_text(json.dumps(records))
    staging.replace(path)


def test_keys_file_changes_apply_after_the_reload_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old_key, new_key_ = new_key(), new_key()
    path = tmp_path / "keys.json"
    _write_keys(path, [{"tenant": "acme", "key_sha256": hash_key(old_key)}])
    clock = FakeClock()
    access = AccessControl(AccessSettings(keys_file=path, reload_interval_s=5), clock=clock)
    assert access.authorize(f"Bearer {old_key}").tenant == "acme"

    # Added: not seen before the interval has passed, then in effect without a restart.
    _write_keys(
        path,
        [
            {"tenant": "acme", "key_sha256": hash_key(old_key)},
            {"tenant": "globex", "key_sha256": hash_key(new_key_)},
        ],
    )
    clock.now += 1
    with pytest.raises(InvalidApiKey):
        access.authorize(f"Bearer {new_key_}")
    clock.now += 5
    assert access.authorize(f"Bearer {new_key_}").tenant == "globex"

    # Revoked: 401 after the next interval.
    _write_keys(path, [{"tenant": "globex", "key_sha256": hash_key(new_key_)}])
    clock.now += 5
    with pytest.raises(InvalidApiKey):
        access.authorize(f"Bearer {old_key}")
    assert access.authorize(f"Bearer {new_key_}").tenant == "globex"

    # Broken, duplicated, empty or missing: the current keys stay, one error logged per content.
    for broken in ("[{not json", json.dumps([{"tenant": "x"}]), "[]"):
        staging = path.with_suffix(".new")
        staging.write_text(broken)
        staging.replace(path)
        caplog.clear()
        for _ in range(2):
            clock.now += 5
            assert access.authorize(f"Bearer {new_key_}").tenant == "globex", broken
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and "keeping the 1 current API keys" in errors[0].getMessage(), broken
    path.unlink()
    clock.now += 5
    assert access.authorize(f"Bearer {new_key_}").tenant == "globex"
    with pytest.raises(InvalidApiKey):
        access.authorize(f"Bearer {old_key}")

    # Fixed again: the new content applies.
    _write_keys(path, [{"tenant": "acme", "key_sha256": hash_key(old_key)}])
    clock.now += 5
    assert access.authorize(f"Bearer {old_key}").tenant == "acme"
    assert not access.open, "a keyed service never turns open on a reload"


def test_webhook_secret_follows_the_keys_file(tmp_path: Path) -> None:
    key = new_key()
    path = tmp_path / "keys.json"
    _write_keys(path, [{"tenant": "acme", "key_sha256": hash_key(key)}])
    clock = FakeClock()
    access = AccessControl(AccessSettings(keys_file=path, reload_interval_s=5), clock=clock)
    assert access.webhook_secret_for("acme") is None
    secret = "whsec_" + "A" * 44
    _write_keys(path, [{"tenant": "acme", "key_sha256": hash_key(key), "webhook_secret": secret}])
    clock.now += 5
    assert access.webhook_secret_for("acme") == secret
