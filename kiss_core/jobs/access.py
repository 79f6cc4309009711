"""API keys, tenants and per-key rate limits, without Ray or FastAPI: see `AccessControl.authorize`.

Keys are long random tokens (`kg_` + 32 random bytes, URL-safe base64), so they are stored as plain
SHA-256 hashes: a slow password hash (bcrypt, scrypt) exists to make guessing a *low-entropy* secret
expensive, which buys nothing against 256 random bits and would cost milliseconds on every request.
A leaked keys file reveals no key. Presented keys are hashed and compared with `hmac.compare_digest`
against every configured hash, so timing says nothing about which hash came close.

Keys come from `access.keys` (settings) and `access.keys_file` (a YAML or JSON list of the same
records, e.g. a mounted secret). Each key is bound to a tenant; everything a request can see or
change is scoped to that tenant.

The keys file is read when the ingress replica starts and again when it changed: at most every
`access.reload_interval_s` a request stats it (modification time, size, inode), and only a changed
stat reads it and compares its SHA-256; a new content replaces the file's keys, so a key added or
revoked there takes effect within that interval (plus one request), without a restart. A new content
that does not parse, repeats a key, or leaves no key at all is refused: the replica logs an error
(once per content) and keeps the keys it had, so a half-written file or an empty secret mount never
locks everyone out, or lets everyone in.

Open mode: no keys configured and `access.required` false (the local profile's default). Every
request is then tenant `public`, with no rate limit and no per-tenant job cap. Open mode is decided
at start: a reload never turns a keyed service open.

Rate limits are token buckets per key, in the memory of each ingress replica: with N replicas behind
a load balancer a key gets up to N x its rate, unless `access.ingress_replicas` is set to N, which
divides every configured rate by N (exact with a fixed replica count; with autoscaling, set it to the
usual count and accept the range).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from kiss_core.errors import InvalidApiKey, RateLimited, Unauthorized
from kiss_core.settings import AccessSettings, ApiKeyRecord

log = logging.getLogger(__name__)

PUBLIC_TENANT = "public"
KEY_PREFIX = "kg_"

_RECORDS = TypeAdapter(list[ApiKeyRecord])


def new_key() -> str:
    """A fresh API key: `kg_` + 43 URL-safe characters (256 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """Hex SHA-256 of a key, as stored in `key_sha256`."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who a request acts for. `key_id` is None in open mode (then no limits apply)."""

    tenant: str
    key_id: str | None = None
    key_name: str = ""
    rate_per_minute: float | None = None
    burst: int | None = None
    max_concurrent_jobs: int | None = None


OPEN_PRINCIPAL = Principal(tenant=PUBLIC_TENANT)


def load_keys_file(path: Path) -> list[ApiKeyRecord]:
    """Key records from a YAML or JSON file: a list of records, or a mapping with a `keys` list."""
    import yaml

    text = Path(path).read_text(encoding="utf-8")
    data: Any = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if isinstance(data, dict):
        data = data.get("keys")
    if data is None:
        return []
    return _RECORDS.validate_python(data)


def configured_keys(settings: AccessSettings) -> list[ApiKeyRecord]:
    """Inline keys plus those of the keys file, refusing one hash given twice."""
    from_file = load_keys_file(settings.keys_file) if settings.keys_file is not None else []
    return _combine(settings.keys, from_file)


def _combine(inline: Iterable[ApiKeyRecord], from_file: Iterable[ApiKeyRecord]) -> list[ApiKeyRecord]:
    records = [*inline, *from_file]
    seen: set[str] = set()
    for record in records:
        if record.key_sha256 in seen:
            raise ValueError(f"access key {record.key_sha256[:12]}… ({record.name!r}) is configured twice")
        seen.add(record.key_sha256)
    return records


def _file_stat(path: Path) -> tuple[int, int, int] | None:
    """What changes when the keys file is rewritten or its secret mount swapped (None: it is missing)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class TokenBucket:
    """`rate` tokens per second up to `burst`; `take` answers 0 when allowed, else seconds to wait."""

    def __init__(self, rate_per_s: float, burst: int, now: float):
        self.rate = rate_per_s
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """One token bucket per key, created on first use (in-process: see the module docstring)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, divide_by: int = 1):
        self.clock = clock
        self.divide_by = divide_by
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def acquire(self, key_id: str, rate_per_minute: float, burst: int) -> float:
        """0 if the request may go ahead, else the seconds until this key has a token again."""
        rate_per_s = rate_per_minute / 60.0 / self.divide_by
        with self._lock:
            now = self.clock()
            bucket = self._buckets.get(key_id)
            if bucket is None or bucket.rate != rate_per_s:
                bucket = self._buckets[key_id] = TokenBucket(rate_per_s, burst, now)
            return bucket.take(now)

    def forget_except(self, key_ids: set[str]) -> None:
        """Drop the buckets of keys no longer configured (after a reload)."""
        with self._lock:
            for key_id in [k for k in self._buckets if k not in key_ids]:
                del self._buckets[key_id]


class AccessControl:
    """Authenticates requests against the configured keys and applies each key's rate limit."""

    def __init__(
        self,
        settings: AccessSettings,
        records: Iterable[ApiKeyRecord] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings
        self.clock = clock
        # Records given by the caller are fixed; otherwise the keys file is watched (see `reload`).
        self._watched = settings.keys_file if records is None else None
        self._stat = _file_stat(self._watched) if self._watched is not None else None
        self._digest: str | None = None
        self._refused: str | None = None  # digest of the last content refused (logged once)
        if records is None and settings.keys_file is not None:
            data = Path(settings.keys_file).read_bytes()
            self._digest = hashlib.sha256(data).hexdigest()
        self.records = list(configured_keys(settings) if records is None else records)
        if settings.required and not self.records:
            raise ValueError(
                "access.required is set but no API keys are configured (access.keys or access.keys_file)"
            )
        self._open = not self.records and not settings.required  # decided once: see the module docstring
        self._checked_at = clock()
        self._reload_lock = threading.Lock()
        self.limiter = RateLimiter(clock, divide_by=settings.ingress_replicas)

    @property
    def open(self) -> bool:
        """No keys configured at start and none required: every request is tenant `public`."""
        return self._open

    def reload(self, force: bool = False) -> bool:
        """Re-read the keys file if `access.reload_interval_s` passed since the last look and its stat
        changed; True when the keys changed. An invalid new content keeps the current keys (logged)."""
        if self._watched is None:
            return False
        now = self.clock()
        if not force and now - self._checked_at < self.settings.reload_interval_s:
            return False
        with self._reload_lock:
            self._checked_at = now
            stat = _file_stat(self._watched)
            if stat == self._stat and not force:
                return False
            self._stat = stat
            try:
                data = self._watched.read_bytes()
            except OSError as exc:
                self._refuse(f"missing:{stat}", f"it cannot be read ({exc})")
                return False
            digest = hashlib.sha256(data).hexdigest()
            if digest == self._digest:
                return False  # touched or swapped, same content
            try:
                from_file = load_keys_file(self._watched)
                records = _combine(self.settings.keys, from_file)
                if not records:
                    raise ValueError("it leaves no API key at all")
            except Exception as exc:  # yaml, json, pydantic, duplicate or empty: all keep the old keys
                self._refuse(digest, f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
                return False
            self.records = records
            self._digest, self._refused = digest, None
            self.limiter.forget_except({r.key_sha256 for r in records})
            log.info("access: reloaded %d API keys from %s", len(records), self._watched)
            return True

    def _refuse(self, digest: str, why: str) -> None:
        if digest != self._refused:
            log.error(
                "access: keeping the %d current API keys; the new %s is refused: %s",
                len(self.records),
                self._watched,
                why,
            )
        self._refused = digest

    def authenticate(self, header_value: str | None) -> Principal | None:
        """The principal of an `Authorization: Bearer <key>` value (or a bare key), or None."""
        if not header_value:
            return None
        self.reload()
        scheme, _, rest = header_value.strip().partition(" ")
        token = rest.strip() if scheme.lower() == "bearer" else header_value.strip()
        if not token:
            return None
        digest = hash_key(token)
        found: ApiKeyRecord | None = None
        for record in self.records:  # no early exit: the time taken does not depend on the match
            if hmac.compare_digest(digest, record.key_sha256):
                found = record
        if found is None:
            return None
        return Principal(
            tenant=found.tenant,
            key_id=found.key_sha256,
            key_name=found.name,
            rate_per_minute=found.rate_per_minute or self.settings.rate_per_minute,
            burst=found.burst or self.settings.burst,
            max_concurrent_jobs=found.max_concurrent_jobs or self.settings.max_concurrent_jobs,
        )

    def authorize(self, authorization: str | None, api_key: str | None = None) -> Principal:
        """Who sends the request (its key's principal) and whether that key may send one now (its rate
        limit); raises Unauthorized, InvalidApiKey or RateLimited."""
        if self.open:
            return OPEN_PRINCIPAL
        presented = authorization or api_key
        if not presented:
            raise Unauthorized("send your API key as `Authorization: Bearer <key>` (or `X-API-Key`)")
        principal = self.authenticate(presented)
        if principal is None:
            raise InvalidApiKey("the API key is invalid (unknown or revoked)")
        rate = principal.rate_per_minute or self.settings.rate_per_minute
        burst = principal.burst or self.settings.burst
        wait = self.limiter.acquire(principal.key_id or "", rate, burst)
        if wait > 0:
            raise RateLimited(
                f"this key allows {rate:g} requests per minute (burst {burst}); retry in {math.ceil(wait)} s",
                max(1, math.ceil(wait)),
            )
        return principal

    def webhook_secret_for(self, tenant: str) -> str | None:
        """The tenant's signing secret: the first of its key records that has one."""
        self.reload()
        for record in self.records:
            if record.tenant == tenant and record.webhook_secret:
                return record.webhook_secret
        return None
