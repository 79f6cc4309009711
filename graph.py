"""Builds the Ray Serve application from typed arguments: `serve run graph:build_app profile=local`.

serve_config.yaml points here (`import_path: graph:build_app`). Resource and scaling options per
profile live below; a serve config's `deployments:` section overrides them per deployment.
(No `from __future__ import annotations`: Serve reads the builder's annotation to validate `args`.)
"""

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

from deployments.face_analyzer import FaceAnalyzerDeployment
from deployments.identity_encoder import IdentityEncoderDeployment
from deployments.ingress import VideoAPI
from deployments.video_generator import VideoGeneratorDeployment
from kiss_core.generation.backends.weights import DIFFUSION_BACKENDS
from kiss_core.generation.provenance.credentials import require_signing
from kiss_core.settings import Settings


class AppArgs(BaseModel):
    """Arguments of the application builder, validated by Serve at deploy time."""

    profile: Literal["production", "single-gpu", "local"] = Field(
        "local",
        description="production: GPU nodes with whole GPUs for generators (autoscaled);"
        " single-gpu: one host with one GPU shared by the generator and the identity encoder, each capped"
        " to its share of GPU memory; local: everything on a few CPUs.",
    )
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides on top of the KISS_* environment and KISS_CONFIG_FILE.",
    )
    deployment_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="serve.deployment() options per deployment name, merged over the profile's, e.g."
        " {FaceAnalyzer: {autoscaling_config: {...}}}. For Python callers (bench/autoscaling.py);"
        " `serve deploy` users write the same in the serve config's `deployments:` section.",
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
# serve_config.yaml repeats the production values (tests/unit/test_infra.py keeps them equal) and
# says why each one is what it is.
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
            "autoscaling_config": _autoscaling(1, 16, 2, upscale_delay_s=10, downscale_delay_s=120),
        },
        "IdentityEncoder": {
            "ray_actor_options": {"num_cpus": 1, "num_gpus": 0.25},
            "max_ongoing_requests": 8,
            "autoscaling_config": _autoscaling(1, 8, 4, upscale_delay_s=15, downscale_delay_s=300),
        },
        "VideoGenerator": {
            "ray_actor_options": {"num_cpus": 4, "num_gpus": 1},
            "max_ongoing_requests": 1,
            "max_queued_requests": 64,
            "graceful_shutdown_timeout_s": 600,
            "autoscaling_config": _autoscaling(1, 16, 1, upscale_delay_s=30, downscale_delay_s=600),
        },
    },
    "single-gpu": {
        "Ingress": {
            "ray_actor_options": {"num_cpus": 1},
            "max_ongoing_requests": 100,
            "autoscaling_config": _autoscaling(1, 2, 50),
        },
        "FaceAnalyzer": {
            "ray_actor_options": {"num_cpus": 2},
            "max_ongoing_requests": 4,
            "autoscaling_config": _autoscaling(1, 4, 2, upscale_delay_s=10, downscale_delay_s=120),
        },
        # The one GPU split by Ray's logical shares (placement) and by the memory caps of
        # MEMORY_CAPS (allocation): one replica each, there is one GPU.
        "IdentityEncoder": {
            "ray_actor_options": {"num_cpus": 1, "num_gpus": 0.25},
            "max_ongoing_requests": 8,
            "num_replicas": 1,
        },
        "VideoGenerator": {
            "ray_actor_options": {"num_cpus": 2, "num_gpus": 0.75},
            "max_ongoing_requests": 1,
            "max_queued_requests": 64,
            "graceful_shutdown_timeout_s": 600,
            "num_replicas": 1,
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


def require_access(settings: Settings) -> None:
    """Production never runs open: it needs API keys, inline or in a keys file (the local profile may
    run open). Each ingress replica also refuses to start if the file turns out to hold no keys."""
    access = settings.access
    if not access.keys and access.keys_file is None:
        raise ValueError(
            "the production profile refuses to start without API keys (access.keys or access.keys_file)"
        )
    if access.keys_file is not None and access.keys_file.is_file():
        from kiss_core.jobs.access import configured_keys

        if not configured_keys(access):  # readable here: check now rather than in every replica
            raise ValueError(f"the production profile refuses to start: {access.keys_file} holds no API keys")


def require_own_certificate(settings: Settings) -> None:
    """Production signs with the operator's certificate only, never with the local profile's dev one."""
    if settings.provenance.c2pa.dev_certificate:
        raise ValueError(
            "the production profile refuses provenance.c2pa.dev_certificate: configure the operator's own"
            " certificate (provenance.c2pa.cert_chain and private_key)"
        )


def deployment_options(
    profile: str,
    overrides: dict[str, dict[str, Any]] | None = None,
    extra_generators: list[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """The profile's options with per-deployment overrides merged in. An autoscaling_config replaces a
    fixed num_replicas and the other way round, since Serve refuses both at once. `extra_generators`
    (VideoGenerator-<backend>) start from the VideoGenerator's options."""
    options = {name: dict(values) for name, values in PROFILES[profile].items()}
    for name in extra_generators or []:
        options[name] = dict(options["VideoGenerator"])
    unknown = sorted(set(overrides or {}) - set(options))
    if unknown:
        known = ", ".join(sorted(options))
        raise ValueError(f"`deployment_options` names unknown deployments {unknown}; known: {known}")
    for name, extra in (overrides or {}).items():
        if "autoscaling_config" in extra:
            options[name].pop("num_replicas", None)
        if "num_replicas" in extra:
            options[name].pop("autoscaling_config", None)
        actor = {**options[name].get("ray_actor_options", {}), **extra.get("ray_actor_options", {})}
        options[name].update(extra)
        options[name]["ray_actor_options"] = actor  # merged key by key: num_cpus alone keeps num_gpus
    return options


# GPU memory each GPU process may allocate (torch's per-process fraction) per profile, unless the operator
# set it. Each stays under the process's placement share: a process also holds a CUDA context
# (~0.5-1 GiB) outside torch's allocator. production: four encoders share a GPU (0.25 each), a
# generator has its GPU to itself. single-gpu: the generator and the encoder share the one GPU.
MEMORY_CAPS: dict[str, dict[str, float]] = {
    "production": {"encoder_memory_fraction": 0.22},
    "single-gpu": {"gpu_memory_fraction": 0.72, "encoder_memory_fraction": 0.22},
}


def apply_memory_caps(settings: Settings, profile: str) -> None:
    """The profile's caps where the operator set none; on one shared GPU they must add up to at most 1."""
    generator = settings.generator
    for field, fraction in MEMORY_CAPS.get(profile, {}).items():
        if getattr(generator, field) is None:
            setattr(generator, field, fraction)
    if profile != "single-gpu":
        return
    assert generator.gpu_memory_fraction is not None and generator.encoder_memory_fraction is not None
    total = generator.gpu_memory_fraction + generator.encoder_memory_fraction
    if total > 1.0:
        raise ValueError(
            "the single-gpu profile shares one GPU: generator.gpu_memory_fraction"
            f" ({generator.gpu_memory_fraction}) + generator.encoder_memory_fraction"
            f" ({generator.encoder_memory_fraction}) = {total:.2f} must not exceed 1"
        )


@dataclass(frozen=True)
class GeneratorDeployment:
    """One VideoGenerator deployment: its name, the diffusion backend it holds, the settings it loads."""

    name: str
    backend: str | None  # None: whatever the settings enable (no split)
    settings: Settings


def generator_deployments(settings: Settings, profile: str) -> list[GeneratorDeployment]:
    """One diffusion backend per VideoGenerator deployment, so two 14B models never share a GPU.

    The default backend (or, with the preview as default, the first one) is `VideoGenerator`, which also
    runs the preview; each other backend gets `VideoGenerator-<backend>`. With one backend or fewer,
    `backends_per_replica: all`, or the single-gpu profile (one GPU holds one generator: the backends it
    loads must fit it together, which the replica checks at start), there is one `VideoGenerator` with
    the settings unchanged.
    """
    generator = settings.generator
    if profile == "single-gpu":
        return [GeneratorDeployment("VideoGenerator", None, settings)]
    if generator.enabled is not None:
        backends = list(dict.fromkeys(generator.enabled))
    else:
        backends = [b for b in DIFFUSION_BACKENDS if (generator.model_root / b).exists()]
    if generator.backends_per_replica == "all" or len(backends) < 2:
        return [GeneratorDeployment("VideoGenerator", None, settings)]
    default = generator.backend if generator.backend in backends else backends[0]
    split = []
    for backend in [default, *(b for b in backends if b != default)]:
        own = settings.model_copy(deep=True)
        own.generator.enabled = [backend]
        if backend != default:
            own.generator.backend = backend
        name = "VideoGenerator" if backend == default else f"VideoGenerator-{backend}"
        split.append(GeneratorDeployment(name, backend, own))
    return split


# glibc malloc settings for every replica process (read by glibc when the process starts; Ray sets a
# runtime_env's env_vars before it execs the worker). With the defaults, each thread that allocates gets
# its own arena (up to 8 per core) and the mmap threshold rises after the first large free, so the
# frames and photos a replica handles land in fragmented arenas that never shrink: in bench/soak.py the
# preview generator grew to ~1 GiB and kept growing. Two arenas and fixed thresholds hold every replica
# flat. The thresholds are 8 MiB, not lower: a frame's working buffers (up to ~5 MB at 832x480 in
# float32) must come back from the heap frame after frame; mmapped (a 128 KiB threshold), each one is
# faulted in afresh, which made the preview's render + encode 2.3x slower in a replica than in a
# plain process (docs/benchmarks.md, "Allocator"). serve_config.yaml and the image
# (infra/docker/Dockerfile) set the same, for deploy configs that replace a deployment's
# ray_actor_options; values the operator sets win.
ALLOCATOR_ENV = {
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": "8388608",
    "MALLOC_TRIM_THRESHOLD_": "8388608",
}


def with_allocator_env(options: dict[str, Any]) -> dict[str, Any]:
    """A deployment's options with ALLOCATOR_ENV under its ray_actor_options' runtime_env (a copy)."""
    actor = dict(options.get("ray_actor_options", {}))
    runtime_env = dict(actor.get("runtime_env") or {})
    runtime_env["env_vars"] = {**ALLOCATOR_ENV, **(runtime_env.get("env_vars") or {})}
    actor["runtime_env"] = runtime_env
    return {**options, "ray_actor_options": actor}


def build_app(args: AppArgs) -> Application:
    """Bind the four deployments into one application; every replica gets the same Settings object."""
    settings = Settings(**args.settings)
    if args.profile in ("production", "single-gpu"):
        require_safety(settings)
        require_access(settings)
        settings.access.required = True  # so a replica whose keys file is empty refuses to start
        require_own_certificate(settings)
        require_signing(settings)  # every output carries signed Content Credentials
    elif "dev_certificate" not in settings.provenance.c2pa.model_fields_set:
        # The local profile signs too: with the operator's certificate if one is configured, else with a
        # development one made on first start under {storage.local_root}/dev-c2pa/ (valid, never trusted).
        settings.provenance.c2pa.dev_certificate = True
    apply_memory_caps(settings, args.profile)
    generators = generator_deployments(settings, args.profile)
    extra = [g.name for g in generators if g.name != "VideoGenerator"]
    options = deployment_options(args.profile, args.deployment_options, extra)

    def deployment(cls: type, name: str) -> serve.Deployment:
        return serve.deployment(name=name, **with_allocator_env(options[name]))(cls)

    analyzer = deployment(FaceAnalyzerDeployment, "FaceAnalyzer").bind(settings)
    identity = deployment(IdentityEncoderDeployment, "IdentityEncoder").bind(settings)
    by_backend = {}
    for generator in generators:
        bound = deployment(VideoGeneratorDeployment, generator.name).bind(generator.settings)
        by_backend[generator.backend or "preview"] = bound
        if generator.name == "VideoGenerator":
            by_backend["preview"] = bound  # the default generator also runs the preview
    return deployment(VideoAPI, "Ingress").bind(analyzer, identity, by_backend, settings)
