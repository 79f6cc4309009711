"""A multi-node Ray cluster on this machine, one node declaring GPUs it does not have, running one job.

Ray schedules on declared resources, so a node started with `num_gpus=1` receives the GPU deployments
even on a machine without a GPU; there the tiny Wan model runs on the CPU. This proves placement and
cross-node object passing (analyses made on a CPU node reach the GPU node through the object store),
never speed. Run in its own process (the test suite's shared local Ray cannot host a second cluster):

    python -m tests.cluster.simulated_cluster --profile single-gpu --gpus 1 --out result.json

Nodes: a head (the Serve controller, the HTTP proxy and the ingress), a CPU worker (face analysis), and
a GPU worker with `--gpus` declared GPUs and no CPUs, so that only the 0-CPU GPU deployments fit there.
Writes a JSON report: the job as the API returned it and the node of every replica.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPLICA_PREFIX = "ServeReplica:kissgen:"
PARAMS = {"style": "peck", "seconds": 1.5, "fps": 8, "size": "160x128", "backend": "wan-i2v"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_settings(work: Path, key_hash: str) -> dict[str, Any]:
    """Production-grade settings (keys, signing, safety on) with the tiny Wan model root."""
    from tests.support.certs import make_signing_cert
    from tests.support.tiny_wan import build_model_root

    signing = make_signing_cert(work / "c2pa")
    return {
        "storage": {"backend": "local", "local_root": str(work / "store")},
        "generator": {"model_root": str(build_model_root(work / "models")), "steps": 2, "backend": "wan-i2v"},
        "access": {"required": True, "keys": [{"tenant": "acme", "key_sha256": key_hash}]},
        "provenance": {"c2pa": {"cert_chain": str(signing.chain), "private_key": str(signing.key)}},
    }


# Small CPU shares so the cluster fits two cores; the GPU stages take no CPU, so that they fit on the
# GPU node (0 CPUs) and nothing else does. The GPU shares are the profile's own.
CPU_OVERRIDES: dict[str, dict[str, Any]] = {
    "Ingress": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.25}},
    "FaceAnalyzer": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.5}},
    "IdentityEncoder": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0}},
    "VideoGenerator": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0}},
}
# Production gives each diffusion backend its own generator deployment (the tiny root has two).
EXTRA_GENERATORS = {"VideoGenerator-wan-vace": CPU_OVERRIDES["VideoGenerator"]}


def replica_nodes() -> dict[str, str]:
    """Deployment name -> node id of its (single) live replica, from the GCS actor table."""
    from ray._private import state

    nodes: dict[str, str] = {}
    for actor in state.actors(actor_state_name="ALIVE").values():
        name = actor["ActorClassName"]
        if name.startswith(REPLICA_PREFIX):
            nodes[name.removeprefix(REPLICA_PREFIX)] = actor["Address"]["NodeID"]
    return nodes


def run(profile: str, gpus: float, timeout_s: float) -> dict[str, Any]:
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from graph import AppArgs, build_app
    from kiss_core.faces.synthetic import synthetic_subject_png
    from kiss_core.jobs.access import hash_key, new_key

    work = Path(tempfile.mkdtemp(prefix="simulated-cluster-"))
    key = new_key()
    memory = 200 * 2**20  # object store per node: the cluster shares one small machine
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "num_gpus": 0, "object_store_memory": memory},
    )
    cpu_node = cluster.add_node(num_cpus=1, num_gpus=0, object_store_memory=memory)
    gpu_node = cluster.add_node(num_cpus=0, num_gpus=gpus, object_store_memory=memory)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port, "location": "HeadOnly"})
        overrides = CPU_OVERRIDES | (EXTRA_GENERATORS if profile == "production" else {})
        settings = app_settings(work, hash_key(key))
        args = AppArgs(profile=profile, settings=settings, deployment_options=overrides)
        serve.run(build_app(args), name="kissgen", route_prefix="/", blocking=False)
        deadline = time.monotonic() + timeout_s
        while serve.status().applications["kissgen"].status != "RUNNING":
            if time.monotonic() > deadline:
                raise TimeoutError(f"the application did not start: {serve.status().applications['kissgen']}")
            time.sleep(1)
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as client:
            files = {
                "subject_a": ("a.png", synthetic_subject_png(0), "image/png"),
                "subject_b": ("b.png", synthetic_subject_png(1), "image/png"),
            }
            data = {"consent_a": "true", "consent_b": "true", **{k: str(v) for k, v in PARAMS.items()}}
            created = client.post("/v1/videos", data=data, files=files)
            created.raise_for_status()
            job = created.json()
            while job["status"] not in ("completed", "failed", "canceled"):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"job still {job['status']} after {timeout_s} s")
                time.sleep(1)
                job = client.get(f"/v1/videos/{job['id']}").json()
        return {
            "profile": profile,
            "job": job,
            "replica_nodes": replica_nodes(),
            "nodes": {"head": cluster.head_node.node_id, "cpu": cpu_node.node_id, "gpu": gpu_node.node_id},
        }
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=["production", "single-gpu"], required=True)
    parser.add_argument("--gpus", type=float, default=1, help="GPUs the GPU node declares")
    parser.add_argument("--timeout", type=float, default=420)
    parser.add_argument("--out", type=Path, required=True)
    options = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.pop("RAY_ADDRESS", None)
    report = run(options.profile, options.gpus, options.timeout)
    options.out.write_text(json.dumps(report, indent=2))
    sys.exit(0 if report["job"]["status"] == "completed" else 1)


if __name__ == "__main__":
    main()
