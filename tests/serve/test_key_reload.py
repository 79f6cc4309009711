"""API keys reload without a restart, through the real Serve application: a key added to the keys file
works, a revoked one answers 401, each within 10 s (the default access.reload_interval_s is 5 s), and
a broken file keeps the keys the replica had."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from kiss_core.jobs.access import hash_key, new_key
from tests.conftest import graph_copy

pytestmark = pytest.mark.slow  # its own graph (~20 s to start) and three waits for a reload


def _write(path: Path, text: str) -> None:
    staging = path.with_suffix(".new")
    staging.write_text(text)
    staging.replace(path)  # as a secret mount is updated: the whole file at once


def _keys(*pairs: tuple[str, str]) -> str:
    return json.dumps([{"tenant": tenant, "key_sha256": hash_key(key)} for tenant, key in pairs])


def _status(url: str, key: str) -> int:
    return httpx.get(f"{url}/v1/videos", headers={"Authorization": f"Bearer {key}"}, timeout=30).status_code


def _within(seconds: float, url: str, key: str, expected: int) -> float:
    """Seconds until `key` gets `expected`; fails after `seconds`."""
    start = time.monotonic()
    while (status := _status(url, key)) != expected:
        assert time.monotonic() - start < seconds, f"still {status} after {seconds} s"
        time.sleep(0.25)
    return time.monotonic() - start


def test_keys_added_and_revoked_in_the_file_apply_within_10_s(http_port: int, tmp_path: Path) -> None:
    first, second = new_key(), new_key()
    keys_file = tmp_path / "keys.json"
    _write(keys_file, _keys(("acme", first)))
    settings = {
        "storage": {"backend": "local", "local_root": str(tmp_path / "store")},
        "access": {"required": True, "keys_file": str(keys_file)},  # reload_interval_s: the default
    }
    with graph_copy("kissgen_reload", "/reload", settings, http_port) as url:
        assert _status(url, first) == 200
        assert _status(url, second) == 401

        _write(keys_file, _keys(("acme", first), ("globex", second)))
        _within(10, url, second, 200)

        _write(keys_file, _keys(("globex", second)))
        _within(10, url, first, 401)

        _write(keys_file, "- tenant: [broken")
        time.sleep(6)  # past one reload interval: the replica has read and refused it
        assert _status(url, second) == 200, "a broken file keeps the current keys"
        assert _status(url, first) == 401

        _write(keys_file, _keys(("acme", first)))
        _within(10, url, first, 200)
        _within(10, url, second, 401)
