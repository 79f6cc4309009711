"""Builds the Ray Serve application from typed arguments: `serve run graph:build_app profile=local`.

serve_config.yaml points here (`import_path: graph:build_app`). Resource and scaling options per
profile live below; a serve config's `deployments:` section overrides them per deployment.
(No `from __future__ import annotations`: Serve reads the builder's annotation to validate `args`.)
"""

from typing import Any, Literal

from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

from deployments.face_analyzer import FaceAnalyzerDeployment
from deployments.identity_encoder import IdentityEncoderDeployment
from deployments.ingress import VideoAPI
from deployments.video_generator import VideoGeneratorDeployment
from kiss_core.settings import Settings


class AppArgs(BaseModel):
    """Arguments of the application builder, validated by Serve at deploy time."""

    profile: Literal["production", "local"] = Field(
        "local", description="production: GPU resources per deployment; local: everything on a few CPUs."
    )
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides on top of the KISS_* environment and KISS_CONFIG_FILE.",
    )


def _autoscaling(min_replicas: int, max_replicas: int, target: float, **extra: Any) -> dict[str, Any]:
    return {
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "target_ongoing_requests": target,
        **extra,
    }


# Per profile and deployment: the options given to serve.deployment(). GPU stages: one video per
# generator replica (max_ongoing_requests 1), a fractional GPU for the identity encoder.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "production": {
        "Ingress": {
            "ray_actor_options": {"num_cpus": 1},
            "max_ongoing_requests": 100,
            "autoscaling_config": _autoscaling(2, 8, 50),
        },
        "FaceAnalyzer": {
            "ray_actor_options": {"num_cpus": 2},
            "max_ongoing_requests": 4,
            "autoscaling_config": _autoscaling(1, 16, 2),
        },
        "IdentityEncoder": {
            "ray_actor_options": {"num_cpus": 1, "num_gpus": 0.25},
            "max_ongoing_requests": 8,
            "autoscaling_config": _autoscaling(1, 8, 4),
        },
        "VideoGenerator": {
            "ray_actor_options": {"num_cpus": 4, "num_gpus": 1},
            "max_ongoing_requests": 1,
            "max_queued_requests": 64,
            "graceful_shutdown_timeout_s": 600,
            "autoscaling_config": _autoscaling(1, 16, 1, upscale_delay_s=30, downscale_delay_s=600),
        },
    },
    "local": {
        "Ingress": {"ray_actor_options": {"num_cpus": 0.05}, "max_ongoing_requests": 100, "num_replicas": 1},
        "FaceAnalyzer": {
            "ray_actor_options": {"num_cpus": 0.25, "num_gpus": 0},
            "max_ongoing_requests": 2,
            "autoscaling_config": _autoscaling(1, 2, 1),
        },
        "IdentityEncoder": {
            "ray_actor_options": {"num_cpus": 0.1, "num_gpus": 0},
            "max_ongoing_requests": 4,
            "num_replicas": 1,
        },
        "VideoGenerator": {
            "ray_actor_options": {"num_cpus": 0.25, "num_gpus": 0},
            "max_ongoing_requests": 1,
            "num_replicas": 1,
        },
    },
}


def require_safety(settings: Settings) -> None:
    """Production never runs without the age gate and the content filter (the local profile may)."""
    safety = settings.safety
    if not (safety.age_gate.enabled and safety.content_filter.enabled):
        raise ValueError(
            "the production profile refuses to start with safety.age_gate or safety.content_filter disabled"
        )


def build_app(args: AppArgs) -> Application:
    """Bind the four deployments into one application; every replica gets the same Settings object."""
    settings = Settings(**args.settings)
    if args.profile == "production":
        require_safety(settings)
    options = PROFILES[args.profile]

    def deployment(cls: type, name: str) -> serve.Deployment:
        return serve.deployment(cls, name=name, **options[name])

    analyzer = deployment(FaceAnalyzerDeployment, "FaceAnalyzer").bind(settings)
    identity = deployment(IdentityEncoderDeployment, "IdentityEncoder").bind(settings)
    generator = deployment(VideoGeneratorDeployment, "VideoGenerator").bind(settings)
    return deployment(VideoAPI, "Ingress").bind(analyzer, identity, generator, settings)
