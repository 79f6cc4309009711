"""S3Store against a real S3 server (SeaweedFS) that verifies signatures."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from kiss_core.errors import StorageError
from kiss_core.storage import ObjectNotFound, ObjectStore, S3Store, get_json, open_store, put_json
from tests.support.s3server import S3Endpoint, run_seaweed_s3, s3_server  # noqa: F401


@pytest.fixture
def store(s3_server: S3Endpoint) -> S3Store:  # noqa: F811
    return S3Store(s3_server.settings())


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}/"


def test_put_get_exists_overwrite(store: S3Store, prefix: str) -> None:
    assert isinstance(store, ObjectStore)
    key = prefix + "inputs/a.jpg"
    store.put(key, b"\xff\xd8abc", "image/jpeg")
    assert store.get(key) == b"\xff\xd8abc"
    assert store.exists(key)
    assert not store.exists(prefix + "inputs/b.jpg")
    store.put(key, b"new")
    assert store.get(key) == b"new"
    store.put(prefix + "empty", b"")
    assert store.get(prefix + "empty") == b""


def test_missing_key_raises_object_not_found(store: S3Store, prefix: str) -> None:
    with pytest.raises(ObjectNotFound) as info:
        store.get(prefix + "manifest.json")
    assert isinstance(info.value, KeyError)


def test_list_delete_delete_prefix(store: S3Store, prefix: str) -> None:
    for key in ("a/1", "a/sub/2", "ab/3", "b/4"):
        store.put(prefix + key, b"x")
    assert store.list(prefix + "a/") == [prefix + "a/1", prefix + "a/sub/2"]
    assert store.list(prefix + "a") == [prefix + "a/1", prefix + "a/sub/2", prefix + "ab/3"]
    assert store.list(prefix) == [prefix + k for k in ("a/1", "a/sub/2", "ab/3", "b/4")]
    store.delete(prefix + "b/4")
    store.delete(prefix + "b/4")  # missing: no error
    assert not store.exists(prefix + "b/4")
    assert store.delete_prefix(prefix + "a/") == 2
    assert store.list(prefix) == [prefix + "ab/3"]
    assert store.delete_prefix(prefix + "a/") == 0
    assert store.delete_prefix(prefix) == 1
    assert store.list(prefix) == []


def test_json_round_trip(store: S3Store, prefix: str) -> None:
    put_json(store, prefix + "manifest.json", {"id": "j", "name": "Zoë"})
    assert get_json(store, prefix + "manifest.json") == {"id": "j", "name": "Zoë"}


def test_keys_are_checked_like_the_local_store(store: S3Store) -> None:
    for key in ("../x", "/abs", "a//b", "a\\b", ""):
        with pytest.raises(ValueError):
            store.put(key, b"x")


def test_presigned_url_serves_the_bytes_and_signature_is_verified(store: S3Store, prefix: str) -> None:
    key = prefix + "out/video.mp4"
    store.put(key, b"\x00\x00\x00\x18ftypmp42-video-bytes", "video/mp4")
    url = store.presigned_url(key, 120)
    assert url is not None
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == b"\x00\x00\x00\x18ftypmp42-video-bytes"
    assert response.headers["content-type"] == "video/mp4"

    signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
    tampered = url.replace(signature, ("0" if signature[0] != "0" else "1") + signature[1:])
    assert httpx.get(tampered).status_code == 403
    other_key = url.replace("video.mp4", "other.mp4")
    assert httpx.get(other_key).status_code == 403


def test_presigned_url_names_the_download(store: S3Store, prefix: str) -> None:
    key = prefix + "out/video.mp4"
    store.put(key, b"mp4", "video/mp4")
    url = store.presigned_url(key, 120, filename="kiss 2024 Zoë.mp4")
    assert url is not None
    response = httpx.get(url)
    assert response.status_code == 200
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment;")
    assert 'filename="kiss 2024 Zo_.mp4"' in disposition
    assert "filename*=UTF-8''kiss%202024%20Zo%C3%AB.mp4" in disposition


def test_presigned_url_for_public_endpoint(s3_server: S3Endpoint, prefix: str) -> None:  # noqa: F811
    """Signed for the host clients use; here `localhost` reaches the same server as 127.0.0.1."""
    port = s3_server.endpoint.rsplit(":", 1)[1]
    store = S3Store(s3_server.settings(public_endpoint=f"localhost:{port}"))
    store.put(prefix + "v", b"public")
    url = store.presigned_url(prefix + "v", 60)
    assert url is not None and url.startswith(f"http://localhost:{port}/")
    assert httpx.get(url).content == b"public"
    # A URL signed for one host is refused on another.
    assert httpx.get(url.replace("localhost", "127.0.0.1")).status_code == 403


def test_bucket_is_created_when_missing(s3_server: S3Endpoint) -> None:  # noqa: F811
    bucket = f"auto-{uuid.uuid4().hex[:12]}"
    settings = s3_server.settings(bucket=bucket)
    store = open_store(settings)
    assert isinstance(store, S3Store)
    store.put("k", b"v")
    assert store.get("k") == b"v"
    # Several replicas starting at once all succeed.
    errors: list[BaseException] = []

    def construct() -> None:
        try:
            S3Store(s3_server.settings(bucket=bucket + "-race"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=construct) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_wrong_credentials_are_a_storage_error(s3_server: S3Endpoint) -> None:  # noqa: F811
    with pytest.raises(StorageError):
        S3Store(s3_server.settings(secret_key="wrong-secret"), retry_deadline_s=2)


def test_unreachable_server_gives_storage_error_after_the_deadline(s3_server: S3Endpoint) -> None:  # noqa: F811
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(StorageError, match="unreachable"):
        S3Store(s3_server.settings(endpoint=f"127.0.0.1:{port}"), retry_deadline_s=2)
    assert 1.5 < time.monotonic() - started < 10


@pytest.mark.slow  # restarts the S3 server: ~14 s
def test_operations_ride_out_a_server_restart(tmp_path: Path) -> None:
    """The server goes away for a few seconds; calls made meanwhile wait for it and then succeed."""
    with run_seaweed_s3(tmp_path, bucket="outage") as endpoint:
        store = S3Store(endpoint.settings())
        store.put("before", b"kept")
        endpoint.stop()
        result: dict[str, object] = {}

        def write_during_outage() -> None:
            try:
                store.put("during", b"written")
                result["ok"] = store.get("before")
            except BaseException as exc:
                result["error"] = exc

        writer = threading.Thread(target=write_during_outage)
        writer.start()
        time.sleep(3)
        assert writer.is_alive(), f"the call should be waiting for the server, got {result}"
        endpoint.start()
        writer.join(30)
        assert result.get("ok") == b"kept", result
        assert store.get("during") == b"written"
