"""serve_config.yaml adapted to one host with one GPU (the compose deployment), printed to stdout.

The production config gives the VideoGenerator a whole GPU and the IdentityEncoder a quarter of one,
so on a single GPU whichever starts second would never be scheduled. Here they share it: the
generator takes 0.75 (still one video at a time, and one replica: there is one GPU), the encoder
0.25 and one replica. Everything else is serve_config.yaml unchanged.

    python infra/docker/single_gpu_config.py serve_config.yaml > /tmp/serve_config.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

SHARES = {"VideoGenerator": 0.75, "IdentityEncoder": 0.25}


def single_gpu(config: dict[str, Any]) -> dict[str, Any]:
    """The config with the GPU deployments packed onto one GPU, one replica each."""
    for app in config["applications"]:
        for deployment in app.get("deployments", []):
            share = SHARES.get(deployment["name"])
            if share is None:
                continue
            deployment.setdefault("ray_actor_options", {})["num_gpus"] = share
            scaling = deployment.get("autoscaling_config")
            if scaling is not None:
                scaling["min_replicas"] = scaling["max_replicas"] = 1
    return config


def main() -> None:
    config = yaml.safe_load(Path(sys.argv[1]).read_text())
    yaml.safe_dump(single_gpu(config), sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
