"""LocalDirStore: the same behaviour as the S3 store, plus what only a directory can get wrong."""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path

import pytest

from kiss_core.settings import StorageSettings
from kiss_core.storage import LocalDirStore, ObjectNotFound, ObjectStore, get_json, open_store, put_json


@pytest.fixture
def store(tmp_path: Path) -> LocalDirStore:
    return LocalDirStore(tmp_path / "store")


def test_put_get_exists_overwrite(store: LocalDirStore) -> None:
    assert isinstance(store, ObjectStore)
    store.put("jobs/j1/inputs/a.jpg", b"\xff\xd8abc", "image/jpeg")
    assert store.get("jobs/j1/inputs/a.jpg") == b"\xff\xd8abc"
    assert store.exists("jobs/j1/inputs/a.jpg")
    assert not store.exists("jobs/j1/inputs/b.jpg")
    assert not store.exists("jobs/j1")  # a "directory" is not an object
    store.put("jobs/j1/inputs/a.jpg", b"new")
    assert store.get("jobs/j1/inputs/a.jpg") == b"new"
    store.put("empty", b"")
    assert store.get("empty") == b""


def test_missing_key_raises_object_not_found(store: LocalDirStore) -> None:
    with pytest.raises(ObjectNotFound) as info:
        store.get("jobs/nope/manifest.json")
    assert isinstance(info.value, KeyError)
    assert "jobs/nope/manifest.json" in str(info.value)
    store.put("jobs/x/file", b"1")
    with pytest.raises(ObjectNotFound):
        store.get("jobs/x")  # a directory
    with pytest.raises(ObjectNotFound):
        store.get("jobs/x/file/deeper")  # under a file


def test_list_is_recursive_sorted_and_by_string_prefix(store: LocalDirStore) -> None:
    for key in (
        "jobs/b/out/video.mp4",
        "jobs/a/manifest.json",
        "jobs/a/in/a.jpg",
        "jobs/ab/manifest.json",
        "top",
    ):
        store.put(key, b"x")
    assert store.list("jobs/a/") == ["jobs/a/in/a.jpg", "jobs/a/manifest.json"]
    assert store.list("jobs/a") == ["jobs/a/in/a.jpg", "jobs/a/manifest.json", "jobs/ab/manifest.json"]
    assert store.list("") == sorted(
        ["jobs/a/in/a.jpg", "jobs/a/manifest.json", "jobs/ab/manifest.json", "jobs/b/out/video.mp4", "top"]
    )
    assert store.list("jobs/zzz/") == []
    assert store.list("nothing") == []


def test_delete_and_delete_prefix(store: LocalDirStore) -> None:
    for key in ("jobs/a/1", "jobs/a/sub/2", "jobs/ab/3", "jobs/b/4"):
        store.put(key, b"x")
    store.delete("jobs/b/4")
    store.delete("jobs/b/4")  # missing: no error
    store.delete("never/was")
    assert not store.exists("jobs/b/4")
    assert not (store.root / "jobs" / "b").exists()  # empty directories are pruned
    assert store.delete_prefix("jobs/a/") == 2
    assert store.list("") == ["jobs/ab/3"]
    assert store.delete_prefix("jobs/a/") == 0
    assert store.delete_prefix("") == 1
    assert store.list("") == []
    assert store.root.exists()


def test_json_round_trip(store: LocalDirStore) -> None:
    put_json(store, "jobs/j/manifest.json", {"id": "j", "status": "queued", "name": "Zoë"})
    assert get_json(store, "jobs/j/manifest.json") == {"id": "j", "status": "queued", "name": "Zoë"}


def test_cannot_presign(store: LocalDirStore) -> None:
    store.put("a", b"1")
    assert store.presigned_url("a", 60, filename="a.mp4") is None


@pytest.mark.parametrize(
    "key",
    ["", "/etc/passwd", "../x", "a/../../x", "a/..", "a//b", "a/", "./a", "a\\..\\b", "C:\\x", "a\x00b"],
)
def test_keys_that_could_escape_are_refused(store: LocalDirStore, key: str) -> None:
    for call in (
        lambda: store.put(key, b"x"),
        lambda: store.get(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
    ):
        with pytest.raises(ValueError):
            call()
    assert not any(store.root.parent.glob("x")), "nothing may be written outside the root"


def test_prefix_that_could_escape_is_refused(store: LocalDirStore) -> None:
    for prefix in ("../", "/", "a/../../"):
        with pytest.raises(ValueError):
            store.list(prefix)
        with pytest.raises(ValueError):
            store.delete_prefix(prefix)


def test_symlink_out_of_root_is_refused(store: LocalDirStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, store.root / "link")
    with pytest.raises(ValueError):
        store.put("link/secret", b"x")
    assert not (outside / "secret").exists()


def _rewrite(root: str, key: str, rounds: int, size: int) -> None:
    writer = LocalDirStore(Path(root))
    for i in range(rounds):
        writer.put(key, bytes([i % 256]) * size)


def test_writes_are_atomic_for_readers_in_other_processes(store: LocalDirStore) -> None:
    """A reader never sees a torn object while another process rewrites it, and no temp files stay."""
    size, rounds = 256 * 1024, 150
    store.put("jobs/j/manifest.json", b"\x00" * size)
    ctx = multiprocessing.get_context("spawn")
    writers = [
        ctx.Process(target=_rewrite, args=(str(store.root), "jobs/j/manifest.json", rounds, size))
        for _ in range(2)
    ]
    for writer in writers:
        writer.start()
    seen = 0
    while any(w.is_alive() for w in writers) or seen == 0:
        data = store.get("jobs/j/manifest.json")
        assert len(data) == size and data == data[:1] * size, "reader saw a half-written object"
        seen += 1
    for writer in writers:
        writer.join(30)
        assert writer.exitcode == 0
    assert store.list("") == ["jobs/j/manifest.json"]
    assert sorted(p.name for p in (store.root / "jobs" / "j").iterdir()) == ["manifest.json"]


def test_concurrent_put_and_delete_of_siblings(store: LocalDirStore) -> None:
    """Deleting the last object of a directory prunes it; a concurrent put into it must still succeed."""
    errors: list[BaseException] = []

    def churn(worker: int) -> None:
        try:
            for i in range(200):
                key = f"jobs/shared/w{worker}-{i}"
                store.put(key, b"x")
                assert store.get(key) == b"x"
                store.delete(key)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert store.list("") == []


def test_open_store_local(tmp_path: Path) -> None:
    store = open_store(StorageSettings(backend="local", local_root=tmp_path / "root"))
    assert isinstance(store, LocalDirStore)
    store.put("k", b"v")
    assert (tmp_path / "root" / "k").read_bytes() == b"v"
