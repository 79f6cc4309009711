"""Object storage: one small interface (`ObjectStore`), a local-directory backend and an S3 backend.

Everything durable (inputs, manifests, outputs) goes through this interface, so the rest of the code
never knows which backend it runs on. Both backends accept the same keys: relative, `/`-separated,
no `..`, no empty segments — a key valid on one is valid on the other.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import random
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import quote, urlsplit

from kiss_core.errors import StorageError
from kiss_core.settings import StorageSettings

if TYPE_CHECKING:
    from minio.deleteobjects import DeleteError, DeleteObject

T = TypeVar("T")

_TMP_PREFIX = ".kiss-tmp-"
_DEFAULT_REGION = "us-east-1"


class ObjectNotFound(KeyError):
    """The key is not in the store. A KeyError, so `except KeyError` callers keep working."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"no object with key {self.key!r}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key,))


@runtime_checkable
class ObjectStore(Protocol):
    """What the service needs from storage; keys are relative `/`-separated paths."""

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    def put_if_absent(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
        """Create the object only if no object has the key (atomically, across processes and hosts):
        True if this call created it. `data` should be unique to the caller (a retried request that did
        create it is recognised by its content)."""
        ...

    def get(self, key: str) -> bytes:
        """Raises `ObjectNotFound` when the key is missing."""
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]:
        """All keys starting with `prefix` (recursive), sorted."""
        ...

    def delete(self, key: str) -> None:
        """No error when the key is missing: deletes are retried and must be idempotent."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Deletes every key under `prefix`; returns how many were deleted."""
        ...

    def presigned_url(self, key: str, expires_s: int, filename: str | None = None) -> str | None:
        """A URL a client can GET without credentials, or None when the backend cannot presign
        (the caller then streams the bytes itself)."""
        ...

    def set_expiry(self, days_by_prefix: Mapping[str, int]) -> bool:
        """Ask the backend to delete objects under each prefix after so many days (S3 lifecycle
        rules); False when it cannot, and the retention sweep alone enforces retention."""
        ...


def put_json(store: ObjectStore, key: str, obj: dict[str, Any]) -> None:
    store.put(key, json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode(), "application/json")


def get_json(store: ObjectStore, key: str) -> dict[str, Any]:
    value = json.loads(store.get(key))
    if not isinstance(value, dict):
        raise StorageError(f"object {key!r} holds JSON {type(value).__name__}, expected an object")
    return value


def check_key(key: str) -> str:
    """Refuses keys that could escape a root directory or mean different things on different backends."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"object key must be a non-empty string but is {key!r}")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"object key must be relative, without backslashes or NUL, but is {key!r}")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(f"object key must not have empty, '.' or '..' segments but is {key!r}")
        if segment.startswith(_TMP_PREFIX):
            raise ValueError(f"object key segments must not start with {_TMP_PREFIX!r} but key is {key!r}")
    return key


def check_prefix(prefix: str) -> str:
    """A prefix is '' (everything) or a valid key, optionally ending in '/'."""
    if prefix == "":
        return prefix
    check_key(prefix[:-1] if prefix.endswith("/") and len(prefix) > 1 else prefix)
    return prefix


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII fallback name and the exact UTF-8 name (RFC 6266 / 5987)."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename) or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


class LocalDirStore:
    """Keys are files under `root`. Writes are atomic (temp file + rename), so a reader in another
    process sees the old object or the new one, never half of one."""

    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = self.root.joinpath(*check_key(key).split("/"))
        # Symlinks inside root could still point outside it.
        if not path.resolve().is_relative_to(self.root):
            raise ValueError(f"object key {key!r} resolves outside the store root")
        return path

    def _write_aside(self, path: Path, data: bytes) -> str:
        """`data` in a complete, synced temp file beside `path` (its name); the caller links or renames it.

        A concurrent delete may prune an (empty) parent while we create it or before the temp file lands
        in it: mkdir then sees "exists" but no directory, or mkstemp "not found". Retry.
        """
        for attempt in range(20):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX)
            except (FileNotFoundError, FileExistsError):
                if attempt == 19:
                    raise
                continue
            break
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return tmp

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        tmp = self._write_aside(path, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def put_if_absent(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
        """The complete file is written aside, then hard-linked to the key: link(2) fails if the name
        exists, so exactly one of concurrent callers wins, and nobody ever reads a half-written file."""
        path = self._path(key)
        tmp = self._write_aside(path, data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        check_prefix(prefix)
        # Walk only the directory the prefix names; the rest of the prefix filters file names.
        base_dir = prefix.rpartition("/")[0]
        start = self.root.joinpath(*base_dir.split("/")) if base_dir else self.root
        keys: list[str] = []
        for dirpath, _dirnames, filenames in os.walk(start):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith(_TMP_PREFIX):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return
        self._prune(path.parent)

    def delete_prefix(self, prefix: str) -> int:
        count = 0
        for key in self.list(prefix):
            try:
                self._path(key).unlink()
                count += 1
            except FileNotFoundError:
                continue
            self._prune(self._path(key).parent)
        return count

    def presigned_url(self, key: str, expires_s: int, filename: str | None = None) -> str | None:
        check_key(key)
        return None

    def set_expiry(self, days_by_prefix: Mapping[str, int]) -> bool:
        return False

    def _prune(self, directory: Path) -> None:
        """Removes empty parents so deleted jobs leave no directories behind; a concurrent writer
        that recreates one is fine (`put` retries)."""
        while directory != self.root and directory.is_relative_to(self.root):
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent


def _is_transient(exc: BaseException) -> bool:
    """Connection failures and 5xx answers: the server is restarting or overloaded, a retry may help."""
    import urllib3
    from minio.error import InvalidResponseError, S3Error, ServerError

    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return True
    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    if isinstance(exc, InvalidResponseError):
        return (getattr(exc, "_code", 0) or 0) >= 500
    if isinstance(exc, S3Error):
        status = getattr(exc.response, "status", 0) or 0
        return status >= 500 or exc.code in (
            "SlowDown",
            "ServiceUnavailable",
            "InternalError",
            "RequestTimeout",
        )
    return False


class S3Store:
    """Any S3 server (MinIO, SeaweedFS, AWS) through the `minio` SDK.

    Transient failures (connection refused while the server restarts, 5xx) are retried with backoff
    for up to `retry_deadline_s`; after that, and for any other S3 failure, `StorageError` is raised,
    so callers deal with our error taxonomy only.
    """

    def __init__(self, settings: StorageSettings, retry_deadline_s: float = 30.0):
        import urllib3
        from minio import Minio

        self.settings = settings
        self.bucket = settings.bucket
        self.retry_deadline_s = retry_deadline_s
        # Few quick retries inside urllib3 for blips; the deadline loop in `_call` handles outages.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5.0, read=60.0),
            maxsize=16,
            retries=urllib3.Retry(
                total=2, backoff_factor=0.1, status_forcelist=(500, 502, 503, 504), allowed_methods=None
            ),
        )
        self._client = Minio(
            settings.endpoint,
            access_key=settings.access_key,
            secret_key=settings.secret_key,
            secure=settings.secure,
            region=settings.region,
            http_client=http,
        )
        self._signer = self._make_signer()
        self._call("create bucket", self._ensure_bucket)

    def _make_signer(self) -> Any:
        """A client that only signs URLs for the host clients use; with its region fixed it never
        talks to the network. `public_endpoint` may carry a scheme (https://cdn.example:443)."""
        from minio import Minio

        endpoint, secure = self.settings.endpoint, self.settings.secure
        public = self.settings.public_endpoint
        if public:
            if "://" in public:
                parts = urlsplit(public)
                endpoint, secure = parts.netloc, parts.scheme == "https"
            else:
                endpoint = public
        return Minio(
            endpoint,
            access_key=self.settings.access_key,
            secret_key=self.settings.secret_key,
            secure=secure,
            region=self.settings.region or _DEFAULT_REGION,
        )

    def _ensure_bucket(self) -> None:
        from minio.error import S3Error

        if self._client.bucket_exists(self.bucket):
            return
        try:
            self._client.make_bucket(self.bucket)
        except S3Error as exc:
            # Another replica created it between our check and our create.
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.retry_deadline_s
        delay = 0.2
        while True:
            try:
                return fn()
            except (ObjectNotFound, StorageError, ValueError):
                raise
            except Exception as exc:
                if not _is_transient(exc):
                    raise StorageError(f"S3 {what} failed in bucket {self.bucket!r}: {exc}") from exc
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StorageError(
                        f"S3 {what} failed in bucket {self.bucket!r}: server at {self.settings.endpoint} "
                        f"unreachable for {self.retry_deadline_s:.0f}s: {exc}"
                    ) from exc
                time.sleep(min(delay * (0.5 + random.random()), remaining))
                delay = min(delay * 2, 4.0)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        check_key(key)
        self._call(
            f"put {key!r}",
            lambda: self._client.put_object(
                self.bucket, key, io.BytesIO(data), len(data), content_type=content_type
            ),
        )

    def put_if_absent(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
        """A PUT with `If-None-Match: *` (S3 conditional writes: AWS S3, MinIO, SeaweedFS; 412 when the
        key exists). The minio SDK would send it as user metadata, so the request is made directly. A
        412 after a retried PUT may be our own first write: the content tells."""
        from minio.error import S3Error

        check_key(key)

        def create() -> bool:
            headers: dict[str, str | list[str] | tuple[str]] = {
                "If-None-Match": "*",
                "Content-Type": content_type,
            }
            try:
                self._client._execute("PUT", self.bucket, key, body=data, headers=headers)
            except S3Error as exc:
                if exc.code == "PreconditionFailed" or getattr(exc.response, "status", 0) == 412:
                    return False
                raise
            return True

        if self._call(f"put-if-absent {key!r}", create):
            return True
        try:
            return self.get(key) == data
        except ObjectNotFound:
            return False

    def get(self, key: str) -> bytes:
        from minio.error import S3Error

        check_key(key)

        def read() -> bytes:
            try:
                response = self._client.get_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject"):
                    raise ObjectNotFound(key) from None
                raise
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._call(f"get {key!r}", read)

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        check_key(key)

        def stat() -> bool:
            try:
                self._client.stat_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                    return False
                raise
            return True

        return self._call(f"stat {key!r}", stat)

    def list(self, prefix: str) -> list[str]:
        check_prefix(prefix)
        return self._call(
            f"list {prefix!r}",
            lambda: sorted(
                o.object_name
                for o in self._client.list_objects(self.bucket, prefix=prefix or None, recursive=True)
                if o.object_name and not o.is_dir
            ),
        )

    def delete(self, key: str) -> None:
        check_key(key)
        self._call(f"delete {key!r}", lambda: self._client.remove_object(self.bucket, key))

    def delete_prefix(self, prefix: str) -> int:
        from minio.deleteobjects import DeleteObject

        keys = self.list(prefix)
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            errors = self._call(
                f"delete under {prefix!r}",
                functools.partial(self._remove_objects, [DeleteObject(k) for k in batch]),
            )
            if errors:
                raise StorageError(
                    f"S3 delete under {prefix!r} failed for {len(errors)} of {len(batch)} keys: {errors[0]}"
                )
        return len(keys)

    def _remove_objects(self, objects: Sequence[DeleteObject]) -> Sequence[DeleteError]:
        """One multi-object delete; the errors of the keys it could not delete."""
        return list(self._client.remove_objects(self.bucket, objects))

    def presigned_url(self, key: str, expires_s: int, filename: str | None = None) -> str | None:
        check_key(key)
        if not 1 <= expires_s <= 7 * 24 * 3600:
            raise ValueError(f"`expires_s` has to be in 1..604800 but is {expires_s}")
        headers = {"response-content-disposition": content_disposition(filename)} if filename else None
        return self._signer.get_presigned_url(
            "GET", self.bucket, key, expires=timedelta(seconds=expires_s), response_headers=headers
        )

    def set_expiry(self, days_by_prefix: Mapping[str, int]) -> bool:
        """Replaces the bucket's lifecycle configuration with one expiration rule per prefix."""
        from minio.commonconfig import ENABLED, Filter
        from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule

        rules = [
            Rule(
                ENABLED,
                rule_filter=Filter(prefix=prefix),
                rule_id=f"kissgen-expire-{prefix.strip('/')}",
                expiration=Expiration(days=days),
            )
            for prefix, days in sorted(days_by_prefix.items())
        ]
        self._call(
            "set lifecycle", lambda: self._client.set_bucket_lifecycle(self.bucket, LifecycleConfig(rules))
        )
        return True

    def expiry(self) -> dict[str, int]:
        """The expiration days per prefix currently configured on the bucket (for checks and tests)."""
        config = self._call("get lifecycle", lambda: self._client.get_bucket_lifecycle(self.bucket))
        if config is None:
            return {}
        return {
            r.rule_filter.prefix: r.expiration.days
            for r in config.rules
            if r.rule_filter and r.rule_filter.prefix is not None
            if r.expiration and r.expiration.days is not None
        }


def open_store(settings: StorageSettings) -> ObjectStore:
    """The backend the settings name; the S3 one creates its bucket if needed."""
    if settings.backend == "s3":
        return S3Store(settings, retry_deadline_s=settings.retry_deadline_s)
    if settings.backend == "local":
        return LocalDirStore(settings.local_root)
    raise ValueError(f"`storage.backend` has to be 'local' or 's3' but is {settings.backend!r}")
