"""Where clips come from and where the dataset goes: a local directory or `s3://bucket/prefix`, and the
listing of SOURCE, which never follows a symlink nor leaves SOURCE.

The listing is the first line of defence: a symlink (a loop, or one pointing outside SOURCE), a name
that is not UTF-8, or an S3 key with `..` is reported as a rejected entry and never opened.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kiss_core.curation.reasons import Reason
from kiss_core.curation.sidecar import MAX_SIDECAR_BYTES, sidecar_name
from kiss_core.settings import StorageSettings
from kiss_core.storage import LocalDirStore, ObjectNotFound, ObjectStore, S3Store, check_key


class Store(Protocol):
    """What curation needs of object storage (ObjectStore has it; so has PrefixedStore)."""

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]: ...


@dataclass(frozen=True)
class Location:
    """A local directory (`root`) or an S3 bucket and key prefix ("" or ending in "/")."""

    url: str
    root: Path | None = None
    bucket: str | None = None
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> Location:
        if url.startswith("s3://"):
            bucket, _, prefix = url[5:].partition("/")
            if not bucket:
                raise ValueError(f"`{url}` has no bucket; use s3://bucket/prefix")
            prefix = prefix.strip("/")
            return cls(url=url, bucket=bucket, prefix=f"{prefix}/" if prefix else "")
        return cls(url=url, root=Path(url).absolute())

    @property
    def is_local(self) -> bool:
        return self.root is not None

    def store(self, storage: StorageSettings) -> Store:
        """The object store under this location; keys are relative to it (the prefix is added on S3)."""
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            return LocalDirStore(self.root)
        assert self.bucket is not None
        s3 = S3Store(storage.model_copy(update={"bucket": self.bucket}), storage.retry_deadline_s)
        return PrefixedStore(s3, self.prefix) if self.prefix else s3


class PrefixedStore:
    """An ObjectStore seen through a key prefix (what the pipeline needs of it: put/get/exists/list)."""

    def __init__(self, inner: ObjectStore, prefix: str):
        self.inner = inner
        self.prefix = prefix

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.inner.put(self.prefix + key, data, content_type)

    def get(self, key: str) -> bytes:
        return self.inner.get(self.prefix + key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(self.prefix + key)

    def list(self, prefix: str) -> list[str]:
        return [k[len(self.prefix) :] for k in self.inner.list(self.prefix + prefix)]


@dataclass(frozen=True)
class Entry:
    """One listed video: `name` relative to SOURCE (printable even when not UTF-8), or why it is refused."""

    name: str
    refused: Reason | None = None

    @property
    def name_id(self) -> str:
        """The source_id of an entry that is never opened: sha256 of its name (its bytes are not read)."""
        return hashlib.sha256(("name:" + self.name).encode("utf-8", "backslashreplace")).hexdigest()


def _printable(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _is_video(raw_name: bytes, extensions: tuple[str, ...]) -> bool:
    lower = raw_name.lower()
    return any(lower.endswith(ext.encode()) for ext in extensions)


def list_local(root: Path, extensions: tuple[str, ...]) -> Iterator[Entry]:
    """Video files under `root`, sorted, recursing into real directories only (never a symlink)."""
    stack = [b""]
    while stack:
        relative = stack.pop()
        directory = os.path.join(os.fsencode(root), relative) if relative else os.fsencode(root)
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            raw = os.path.join(relative, entry.name) if relative else entry.name
            if entry.is_dir(follow_symlinks=False):
                stack.append(raw)
                continue
            if not _is_video(entry.name, extensions):
                continue
            if entry.is_symlink():
                yield Entry(_printable(raw), Reason.UNSAFE_PATH)
                continue
            try:
                name = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield Entry(_printable(raw), Reason.BAD_FILENAME)
                continue
            yield Entry(name) if entry.is_file(follow_symlinks=False) else Entry(name, Reason.UNSAFE_PATH)


def list_store(store: Store, extensions: tuple[str, ...]) -> Iterator[Entry]:
    """Video keys of an S3 location; a key that is not a safe relative path is refused."""
    for key in store.list(""):
        if not any(key.lower().endswith(ext) for ext in extensions):
            continue
        try:
            check_key(key)
        except ValueError:
            yield Entry(key, Reason.UNSAFE_PATH)
            continue
        yield Entry(key)


def open_local(root: Path, name: str) -> Path:
    """The path of a listed local file, checked again at open time: a regular file inside `root`."""
    path = root / name
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode) or not path.resolve().is_relative_to(root.resolve()):
        raise PermissionError(f"{name!r} is not a regular file inside SOURCE")
    return path


def read_local_sidecar(root: Path, name: str) -> bytes | None:
    """The sidecar's bytes, or None when absent or not a regular file (a symlinked sidecar is not read)."""
    path = root / sidecar_name(name)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read(MAX_SIDECAR_BYTES + 1)


def read_store_sidecar(store: Store, name: str) -> bytes | None:
    try:
        return store.get(sidecar_name(name))
    except ObjectNotFound:
        return None


@contextlib.contextmanager
def fetched(store: Store, name: str) -> Iterator[Path]:
    """An S3 object as a temporary local file (PyAV seeks in it), removed afterwards."""
    suffix = Path(name).suffix
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix="kissgen-curate-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(store.get(name))
        yield Path(tmp)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
