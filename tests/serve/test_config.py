"""The deploy configs are valid Serve configs that import, and the profiles say what the design says."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from graph import PROFILES, AppArgs
from kiss_core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> ServeDeploySchema:
    return ServeDeploySchema.model_validate(yaml.safe_load((ROOT / name).read_text()))


@pytest.mark.parametrize("name", ["serve_config.yaml", "serve_config.local.yaml"])
def test_config_validates_and_its_builder_imports(name: str) -> None:
    from ray._common.utils import import_attr

    config = _load(name)
    (app,) = config.applications
    builder = import_attr(app.import_path)
    assert builder.__annotations__["args"] is AppArgs
    AppArgs.model_validate(app.args)


def test_production_resources_follow_the_design() -> None:
    (app,) = _load("serve_config.yaml").applications
    deployments = {d.name: d for d in app.deployments}
    gpus = {name: d.ray_actor_options.num_gpus or 0 for name, d in deployments.items()}
    assert set(deployments) == set(PROFILES["production"])
    generator = deployments["VideoGenerator"]
    assert gpus["VideoGenerator"] == 1 and generator.max_ongoing_requests == 1
    assert 0 < gpus["IdentityEncoder"] < 1
    assert gpus["FaceAnalyzer"] == 0 and gpus["Ingress"] == 0
    for deployment in deployments.values():
        assert deployment.autoscaling_config, f"{deployment.name} has no autoscaling_config"
    for name, options in PROFILES["production"].items():
        assert options["ray_actor_options"].get("num_gpus", 0) == gpus[name], name


def test_local_profile_needs_no_gpu() -> None:
    for name, options in PROFILES["local"].items():
        assert options["ray_actor_options"].get("num_gpus", 0) == 0, name


def test_settings_from_yaml_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "kiss.yaml"
    config.write_text("storage:\n  backend: s3\n  bucket: from-yaml\nfaces:\n  min_face_px: 40\n")
    monkeypatch.setenv("KISS_CONFIG_FILE", str(config))
    monkeypatch.setenv("KISS_STORAGE__BUCKET", "from-env")
    settings = Settings()
    assert settings.storage.backend == "s3"
    assert settings.storage.bucket == "from-env", "the environment overrides the YAML file"
    assert settings.faces.min_face_px == 40
    assert Settings(storage={"backend": "local"}).storage.backend == "local"


def test_production_refuses_to_build_without_the_safety_checks() -> None:
    from graph import build_app

    for disabled in ({"age_gate": {"enabled": False}}, {"content_filter": {"enabled": False}}):
        with pytest.raises(ValueError, match="refuses to start"):
            build_app(AppArgs(profile="production", settings={"safety": disabled}))
    build_app(AppArgs(profile="local", settings={"safety": {"age_gate": {"enabled": False}}}))


def test_every_replica_process_starts_with_the_allocator_settings(serve_app) -> None:
    """glibc reads MALLOC_* when a process starts, so they must be in each replica's initial environment
    (/proc/<pid>/environ), not set later by Python; graph.py puts them in every deployment's runtime_env."""
    import ray

    from graph import ALLOCATOR_ENV

    # The GCS actor table (the public state API needs the dashboard, which the test cluster does not run).
    replicas = {
        row["Name"]: row["Pid"]
        for row in ray._private.state.actors().values()
        if (row.get("Name") or "").startswith("SERVE_REPLICA::kissgen#") and row.get("State") == "ALIVE"
    }
    assert {name.split("#")[1] for name in replicas} >= {"Ingress", "FaceAnalyzer", "VideoGenerator"}
    for name, pid in replicas.items():
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        environ = dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)
        assert {k: environ.get(k) for k in ALLOCATOR_ENV} == ALLOCATOR_ENV, name
