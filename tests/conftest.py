"""Session-wide fixtures: one local Ray cluster, the CPU-profile Serve application, the OTLP receiver.

Ray workers inherit this process's environment, so the OTLP endpoint set here before `ray.init`
makes every replica export its spans to the in-test receiver.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.otlp import OtlpReceiver
from tests.support.s3server import s3_server  # noqa: F401  (session fixture)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture(scope="session")
def ray_cluster(otlp_receiver: OtlpReceiver) -> Iterator[None]:
    import ray
    from ray import serve

    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp_receiver.endpoint
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "200"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        serve.shutdown()
        ray.shutdown()


@dataclass
class ServeApp:
    url: str
    store_root: Path


@pytest.fixture(scope="session")
def http_port(ray_cluster: None) -> int:
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return port


@pytest.fixture(scope="session")
def serve_app(http_port: int, tmp_path_factory: pytest.TempPathFactory) -> ServeApp:
    """The CPU-profile application with local-directory storage, as `make run` starts it."""
    from ray import serve

    from graph import AppArgs, build_app

    root = tmp_path_factory.mktemp("store")
    settings = {
        "storage": {"backend": "local", "local_root": str(root)},
        # Short leases so the fault tests see a dead runner's job taken over within seconds.
        "jobs": {"lease_s": 3, "recovery_interval_s": 1},
        # A small admission limit so the overload test can reach it with a handful of requests.
        "limits": {"max_active_jobs": 2, "retry_after_s": 3},
    }
    args = AppArgs(profile="local", settings=settings)
    serve.run(build_app(args), name="kissgen", route_prefix="/", blocking=False)
    _wait_running("kissgen")
    return ServeApp(url=f"http://127.0.0.1:{http_port}", store_root=root)


def _wait_running(app_name: str, timeout_s: float = 180.0) -> None:
    import time

    from ray import serve

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve.status().applications.get(app_name)
        if status is not None and status.status == "RUNNING":
            return
        time.sleep(0.5)
    raise TimeoutError(f"Serve application {app_name} did not become RUNNING in {timeout_s}s")


@contextmanager
def graph_copy(name: str, route_prefix: str, settings: dict[str, Any], http_port: int) -> Iterator[str]:
    """Another copy of the graph with its own settings, running until the block ends: its base URL."""
    from ray import serve

    from graph import AppArgs, build_app

    serve.run(build_app(AppArgs(profile="local", settings=settings)), name=name, route_prefix=route_prefix)
    _wait_running(name)
    try:
        yield f"http://127.0.0.1:{http_port}{route_prefix}"
    finally:
        serve.delete(name)


@dataclass
class KeyedApp:
    """A copy of the graph with API keys (three tenants) and webhooks allow-listed to 127.0.0.1."""

    url: str
    store_root: Path
    keys: dict[str, str]  # tenant -> API key
    webhook_secret: str  # acme's signing secret


@pytest.fixture(scope="module")
def keyed_app(http_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedApp]:
    """Module-scoped (deleted after the module): the 2-CPU test cluster holds two graphs at a time."""
    from kiss_core.jobs.access import hash_key, new_key
    from kiss_core.jobs.webhooks import new_secret

    root = tmp_path_factory.mktemp("keyed")
    keys = {tenant: new_key() for tenant in ("acme", "globex", "slow")}
    secret = new_secret()
    records = [
        # acme: at most one unfinished job, its own webhook secret.
        {
            "tenant": "acme",
            "key_sha256": hash_key(keys["acme"]),
            "max_concurrent_jobs": 1,
            "webhook_secret": secret,
        },
        {"tenant": "globex", "key_sha256": hash_key(keys["globex"]), "max_concurrent_jobs": 2},
        # slow: 6 requests a minute, 2 at once, to reach the rate limit with three requests.
        {"tenant": "slow", "key_sha256": hash_key(keys["slow"]), "rate_per_minute": 6, "burst": 2},
    ]
    settings = {
        "storage": {"backend": "local", "local_root": str(root)},
        "access": {"required": True, "keys": records, "rate_per_minute": 600, "burst": 100},
        "webhooks": {"allow_hosts": ["127.0.0.1"], "backoff_s": 0.2, "max_attempts": 3, "timeout_s": 5},
    }
    with graph_copy("kissgen_keyed", "/keyed", settings, http_port) as url:
        yield KeyedApp(url, root, keys, secret)
