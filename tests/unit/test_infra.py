"""The deployment files agree with each other and with the code, checked statically (no Docker here).

Serve configs validate against Ray's own schema and their builder imports; the RayService deploys
exactly serve_config.yaml; the compose file is valid per the Compose Specification and every service,
health check and file it names exists; the load balancer's limits match the settings; the dashboard
only queries metrics that exist.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.serve.schema import ServeDeploySchema

from deployments.metrics import METRICS, STAGE_BUCKETS_S
from graph import PROFILES, AppArgs, deployment_options
from kiss_core.jobs.retention import lifecycle_days
from kiss_core.settings import LimitSettings, RetentionSettings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _serve_config() -> dict[str, Any]:
    return _yaml(ROOT / "serve_config.yaml")


def _rayservice() -> dict[str, Any]:
    return _yaml(INFRA / "k8s" / "rayservice.yaml")


def _compose() -> dict[str, Any]:
    return _yaml(INFRA / "docker-compose.yml")


# --- Serve configs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["serve_config.yaml", "serve_config.single_gpu.yaml", "serve_config.local.yaml"]
)
def test_serve_config_validates_against_rays_schema_and_imports(name: str) -> None:
    from ray._common.utils import import_attr

    config = ServeDeploySchema.model_validate(_yaml(ROOT / name))
    for app in config.applications:
        builder = import_attr(app.import_path)
        assert builder.__annotations__["args"] is AppArgs
        AppArgs.model_validate(app.args)


def test_serve_config_repeats_graphs_production_options() -> None:
    """serve_config.yaml overrides graph.py's production profile; they must not drift apart."""
    (app,) = _serve_config()["applications"]
    listed = {d["name"]: d for d in app["deployments"]}
    assert set(listed) == set(PROFILES["production"])
    for name, options in PROFILES["production"].items():
        for key, value in listed[name].items():
            if key != "name":
                assert options.get(key) == value, f"{name}.{key}: graph.py {options.get(key)} != {value}"


def test_production_autoscaling_follows_the_design() -> None:
    (app,) = ServeDeploySchema.model_validate(_serve_config()).applications
    by_name = {d.name: d for d in app.deployments}
    generator = by_name["VideoGenerator"]
    assert generator.max_ongoing_requests == 1
    assert generator.autoscaling_config["target_ongoing_requests"] == 1, "one video per GPU replica"
    for name in ("FaceAnalyzer", "IdentityEncoder"):
        scaling = by_name[name].autoscaling_config
        assert scaling["max_replicas"] > scaling["min_replicas"] >= 1, name
        assert scaling["target_ongoing_requests"] <= by_name[name].max_ongoing_requests, name


def test_deployment_options_merge_over_the_profile() -> None:
    scaling = {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 1}
    options = deployment_options(
        "local", {"FaceAnalyzer": {"autoscaling_config": scaling}, "IdentityEncoder": {"num_replicas": 2}}
    )
    assert options["FaceAnalyzer"]["autoscaling_config"] == scaling
    local = PROFILES["local"]
    assert options["FaceAnalyzer"]["ray_actor_options"] == local["FaceAnalyzer"]["ray_actor_options"]
    assert options["IdentityEncoder"]["num_replicas"] == 2
    with_scaling = deployment_options("local", {"VideoGenerator": {"autoscaling_config": scaling}})
    assert "num_replicas" not in with_scaling["VideoGenerator"], "Serve refuses both at once"
    assert "num_replicas" in PROFILES["local"]["VideoGenerator"], "the profile itself is not modified"
    with pytest.raises(ValueError, match="unknown deployments"):
        deployment_options("local", {"FaceAnalyser": {}})


def test_single_gpu_profile_fits_one_gpu_in_placement_and_memory() -> None:
    """One host, one GPU: at max replicas the GPU shares add up to one GPU, and the memory caps each
    process gets (torch's per-process fraction) add up to less than the whole card and stay within the
    process's placement share."""
    from graph import MEMORY_CAPS, apply_memory_caps
    from kiss_core.settings import Settings

    (app,) = ServeDeploySchema.model_validate(_yaml(ROOT / "serve_config.single_gpu.yaml")).applications
    assert app.args["profile"] == "single-gpu" and not app.deployments, "the profile carries the resources"
    options = deployment_options("single-gpu")
    gpus = {
        name: o["ray_actor_options"].get("num_gpus", 0)
        * o.get("autoscaling_config", {}).get("max_replicas", o.get("num_replicas", 1))
        for name, o in options.items()
    }
    assert sum(gpus.values()) <= 1 and gpus["VideoGenerator"] > 0.5 and gpus["IdentityEncoder"] > 0
    assert options["VideoGenerator"]["max_ongoing_requests"] == 1
    settings = Settings()
    apply_memory_caps(settings, "single-gpu")
    generator, encoder = settings.generator.gpu_memory_fraction, settings.generator.encoder_memory_fraction
    caps = MEMORY_CAPS["single-gpu"]
    assert (generator, encoder) == (caps["gpu_memory_fraction"], caps["encoder_memory_fraction"])
    assert generator + encoder < 1
    assert generator <= gpus["VideoGenerator"] and encoder <= gpus["IdentityEncoder"]


def test_single_gpu_profile_refuses_memory_caps_that_do_not_fit() -> None:
    from graph import apply_memory_caps
    from kiss_core.settings import Settings

    settings = Settings(generator={"gpu_memory_fraction": 0.9, "encoder_memory_fraction": 0.3})
    with pytest.raises(ValueError, match=r"0\.9.*0\.3.*1\.20 must not exceed 1"):
        apply_memory_caps(settings, "single-gpu")
    production = Settings()
    apply_memory_caps(production, "production")  # a generator has its GPU; four encoders share one
    assert production.generator.gpu_memory_fraction is None
    encoder = production.generator.encoder_memory_fraction
    gpu_share = PROFILES["production"]["IdentityEncoder"]["ray_actor_options"]["num_gpus"]
    assert encoder is not None and encoder < gpu_share


def test_deployment_options_merge_actor_options_key_by_key() -> None:
    options = deployment_options("single-gpu", {"VideoGenerator": {"ray_actor_options": {"num_cpus": 0}}})
    assert options["VideoGenerator"]["ray_actor_options"] == {"num_cpus": 0, "num_gpus": 0.75}


# --- KubeRay ---------------------------------------------------------------------------------------


def test_rayservice_embeds_serve_config_exactly() -> None:
    service = _rayservice()
    assert service["apiVersion"] == "ray.io/v1" and service["kind"] == "RayService"
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    expected = _serve_config()
    assert embedded["applications"] == expected["applications"], "run: python infra/k8s/embed_serve_config.py"
    assert embedded == expected, "run: python infra/k8s/embed_serve_config.py"


def test_rayservice_cluster_has_autoscaling_cpu_and_gpu_groups() -> None:
    spec = _rayservice()["spec"]
    assert spec["upgradeStrategy"]["type"] == "NewCluster"
    cluster = spec["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in groups["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    for group in groups.values():
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in groups.values()]
    for pod in pods:
        (container,) = pod["containers"]
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert mounts["/models"]["readOnly"] is True
        assert volumes[mounts["/models"]["name"]]["persistentVolumeClaim"]["readOnly"] is True
        assert "secret" in volumes[mounts["/etc/kissgen"]["name"]]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["KISS_CONFIG_FILE"] == "/etc/kissgen/config.yaml"
        assert 8080 in {p["containerPort"] for p in container["ports"]}, "metrics export port"
    keys_file = _serve_config()["applications"][0]["args"]["settings"]["access"]["keys_file"]
    assert Path(keys_file).parent == Path("/etc/kissgen"), "the keys file lives in the secret's mount"


# --- Compose ---------------------------------------------------------------------------------------


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads((INFRA / "schemas" / "compose-spec.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(_compose())


def test_compose_services_dependencies_and_health_checks() -> None:
    services = _compose()["services"]
    expected = {"minio", "minio-init", "jaeger", "ray-head", "ray-gpu-worker", "nginx"}
    assert expected | {"prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            condition = condition["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s health check"
            if condition == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", f"{dependency} is a one-shot job"
    for name in ("minio", "ray-head", "ray-gpu-worker", "nginx", "prometheus"):
        assert services[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
    assert set(services["prometheus"]["profiles"]) == set(services["grafana"]["profiles"]) == {"monitoring"}
    (device,) = services["ray-gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["count"] == 1 and "gpu" in device["capabilities"]
    for node in ("ray-head", "ray-gpu-worker"):
        assert any(v.endswith(":/models:ro") for v in services[node]["volumes"]), node
        assert "--metrics-export-port=8080" in _ray_start_command(services[node]), node


def _ray_start_command(service: dict[str, Any]) -> str:
    command = service.get("command", [])
    text = " ".join(command) if isinstance(command, list) else command
    if "start-head.sh" in text:
        return (INFRA / "docker" / "start-head.sh").read_text()
    return text


def test_compose_references_files_that_exist() -> None:
    compose = _compose()
    secret_files = {INFRA / s["file"] for s in compose.get("secrets", {}).values()}
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = INFRA / build["context"]
            assert (context / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                path = (INFRA / source).resolve()
                assert path.exists() or path in secret_files, f"{name} mounts missing {source}"
    dockerfile = (INFRA / "docker" / "Dockerfile").read_text()
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.M):
        for source in copied.split():
            assert (ROOT / source).exists(), f"the Dockerfile copies missing {source}"


def test_bucket_lifecycle_rules_match_the_retention_defaults() -> None:
    rules = json.loads((INFRA / "minio" / "lifecycle.json").read_text())["Rules"]
    installed = {r["Filter"]["Prefix"]: r["Expiration"]["Days"] for r in rules}
    assert installed == lifecycle_days(RetentionSettings())
    assert installed["inputs/"] == 1 and installed["outputs/"] == 7
    for rule in rules:  # the ids the ingress uses, so either writer leaves the same configuration
        assert rule["ID"] == f"kissgen-expire-{rule['Filter']['Prefix'].strip('/')}"
        assert rule["Status"] == "Enabled"


def test_jaeger_receives_otlp_where_the_service_sends_it() -> None:
    jaeger = _yaml(INFRA / "jaeger" / "config.yaml")
    protocols = jaeger["receivers"]["otlp"]["protocols"]
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318" and protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert "otlp" in jaeger["service"]["pipelines"]["traces"]["receivers"]
    env = _serve_config()["applications"][0]["runtime_env"]["env_vars"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    assert _compose()["services"]["jaeger"]["image"].startswith("jaegertracing/jaeger:2.")


# --- Load balancer ---------------------------------------------------------------------------------

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}


def _nginx_directives(text: str, name: str) -> list[str]:
    return re.findall(rf"^\s*{name}\s+([^;]+);", text, re.M)


def _seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(s|m)?", value.strip()).groups()  # type: ignore[union-attr]
    return float(number) * (60 if unit == "m" else 1)


def test_nginx_limits_and_timeouts_suit_the_service() -> None:
    main = (INFRA / "nginx" / "nginx.conf").read_text()
    locations = (INFRA / "nginx" / "kissgen-locations.conf").read_text()
    (body,) = _nginx_directives(main, "client_max_body_size")
    number, unit = re.fullmatch(r"(\d+)([kmg]?)", body.lower()).groups()  # type: ignore[union-attr]
    assert int(number) * _UNITS[unit] >= LimitSettings().max_request_bytes
    assert _nginx_directives(locations, "proxy_request_buffering") == ["off"]
    http = _serve_config()["http_options"]
    for read_timeout in _nginx_directives(locations, "proxy_read_timeout"):
        assert _seconds(read_timeout) > http["request_timeout_s"], "Serve should time out first"
    upstream_idle = re.search(r"upstream serve_proxies \{.*?keepalive_timeout\s+(\w+);", main, re.S)
    assert upstream_idle is not None
    assert _seconds(upstream_idle.group(1)) < http["keep_alive_timeout_s"], "nginx must drop idle first"
    assert "include /etc/nginx/kissgen-locations.conf;" in main
    mounted = " ".join(_compose()["services"]["nginx"]["volumes"])
    for path in ("/etc/nginx/nginx.conf", "/etc/nginx/kissgen-locations.conf", "/etc/nginx/tls"):
        assert path in mounted
    assert "client_max_body_size" not in locations, "one limit, in nginx.conf"


# --- Metrics ---------------------------------------------------------------------------------------


def test_prometheus_scrapes_every_ray_node_at_the_metrics_port() -> None:
    config = _yaml(INFRA / "prometheus" / "prometheus.yml")
    (ray_job,) = [job for job in config["scrape_configs"] if job["job_name"] == "ray"]
    (discovery,) = ray_job["dns_sd_configs"]
    assert set(discovery["names"]) == {"ray-head", "ray-gpu-worker"}
    assert discovery["port"] == 8080


def _dashboard_metric_names() -> set[str]:
    dashboard = json.loads((INFRA / "grafana" / "kissgen-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs, "the dashboard has queries"
    return {name for expr in exprs for name in re.findall(r"\b(ray_[a-z0-9_]+)", expr)}


def test_dashboard_queries_only_metrics_that_exist() -> None:
    """Ray exports a metric `m` as `ray_m` (histograms as `_bucket/_sum/_count`)."""
    suffixes = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    ours = {f"ray_{name}{s}" for name, spec in METRICS.items() for s in suffixes[spec.kind]}
    used = _dashboard_metric_names()
    unknown = {name for name in used if not name.startswith("ray_serve_") and name not in ours}
    assert not unknown, f"the dashboard queries metrics nobody exports: {sorted(unknown)}"
    for name in METRICS:
        assert any(u.startswith(f"ray_{name}") for u in used), f"no panel shows {name}"
    serve_metrics = {name for name in used if name.startswith("ray_serve_")}
    assert {"ray_serve_deployment_replica_healthy", "ray_serve_autoscaling_target_replicas"} <= serve_metrics


def test_metric_catalogue() -> None:
    assert set(METRICS) == {
        "kissgen_jobs_total",
        "kissgen_stage_seconds",
        "kissgen_queue_depth",
        "kissgen_prompt_cache_hits_total",
        "kissgen_prompt_cache_misses_total",
        "kissgen_gpu_memory_bytes",
    }
    for name, spec in METRICS.items():
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", name)
        assert (spec.kind == "counter") == name.endswith("_total"), name
        assert "deployment" not in spec.tag_keys, "Serve adds deployment/replica/application itself"
    assert list(STAGE_BUCKETS_S) == sorted(STAGE_BUCKETS_S)
    assert STAGE_BUCKETS_S[0] <= 0.05 and STAGE_BUCKETS_S[-1] >= 600


class RecordingMetric:
    """Fake of a Ray metric object (what ray.serve.metrics would send to the metrics agent)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, dict[str, str] | None]] = []

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("inc", value, tags))

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("set", value, tags))


def test_track_job_counts_terminal_jobs_and_the_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    from types import SimpleNamespace

    from deployments import metrics

    recorded = {name: RecordingMetric() for name in METRICS}
    monkeypatch.setattr(metrics, "_metric", recorded.__getitem__)

    async def job(status: str, hold: asyncio.Event) -> SimpleNamespace:
        await hold.wait()
        return SimpleNamespace(status=status)

    async def scenario() -> None:
        hold = asyncio.Event()
        done = metrics.track_job(asyncio.create_task(job("completed", hold)))
        failed = metrics.track_job(asyncio.create_task(job("failed", hold)))
        handed_back = metrics.track_job(asyncio.create_task(job("completed", hold)))
        assert metrics.track_job(done) is done  # tracked once
        assert recorded["kissgen_queue_depth"].calls[-1][1] == 3
        handed_back.cancel()
        hold.set()
        await asyncio.gather(done, failed, handed_back, return_exceptions=True)
        await asyncio.sleep(0)  # done callbacks run on the next loop iteration

    asyncio.run(scenario())
    statuses = [tags["status"] for _, _, tags in recorded["kissgen_jobs_total"].calls if tags]
    assert sorted(statuses) == ["completed", "failed"], "a cancelled runner did not end its job"
    assert recorded["kissgen_queue_depth"].calls[-1][1] == 0


def test_each_diffusion_backend_gets_its_own_generator_deployment_except_on_one_gpu() -> None:
    from graph import generator_deployments
    from kiss_core.settings import Settings

    settings = Settings(generator={"enabled": ["wan-i2v", "wan-vace"], "backend": "wan-vace"})
    split = generator_deployments(settings, "production")
    assert [(g.name, g.backend) for g in split] == [
        ("VideoGenerator", "wan-vace"),  # the default backend, which also runs the preview
        ("VideoGenerator-wan-i2v", "wan-i2v"),
    ]
    assert [g.settings.generator.enabled for g in split] == [["wan-vace"], ["wan-i2v"]]
    assert split[1].settings.generator.backend == "wan-i2v"
    (one,) = generator_deployments(settings, "single-gpu")  # one GPU holds one generator
    assert (one.name, one.backend, one.settings) == ("VideoGenerator", None, settings)
    together = Settings(generator={"enabled": ["wan-i2v", "wan-vace"], "backends_per_replica": "all"})
    assert len(generator_deployments(together, "production")) == 1


def test_nginx_passes_the_event_stream_unbuffered_and_outlasts_it() -> None:
    from kiss_core.settings import EventSettings

    locations = (INFRA / "nginx" / "kissgen-locations.conf").read_text()
    block = re.search(r"location ~ \^/v1/videos/\[\^/\]\+/events\$ \{(.*?)\n\}", locations, re.S)
    assert block is not None, "a location for GET /v1/videos/{id}/events"
    body = block.group(1)
    assert _nginx_directives(body, "proxy_buffering") == ["off"]
    assert _nginx_directives(body, "proxy_cache") == ["off"]
    (read_timeout,) = _nginx_directives(body, "proxy_read_timeout")
    events = EventSettings()
    assert _seconds(read_timeout) > max(events.max_stream_s, events.heartbeat_s)
    request_timeout_s = _serve_config()["http_options"]["request_timeout_s"]
    assert events.max_stream_s < request_timeout_s, "the service ends a stream before Serve cuts it"
    assert re.match(r"^/v1/videos/[^/]+/events$", "/v1/videos/video_ab12/events")


def test_the_allocator_settings_reach_production_replicas_whatever_the_deploy_config_replaces() -> None:
    """serve_config.yaml replaces each deployment's ray_actor_options (and with them graph.py's
    runtime_env), so the application's env_vars and the image carry graph.ALLOCATOR_ENV too."""
    from graph import ALLOCATOR_ENV

    for config in (
        _serve_config(),
        _rayservice()["spec"]["serveConfigV2"],
        _yaml(ROOT / "serve_config.single_gpu.yaml"),
    ):
        if isinstance(config, str):
            config = yaml.safe_load(config)
        env = config["applications"][0]["runtime_env"]["env_vars"]
        assert {k: env.get(k) for k in ALLOCATOR_ENV} == ALLOCATOR_ENV
    dockerfile = (INFRA / "docker" / "Dockerfile").read_text()
    for name, value in ALLOCATOR_ENV.items():
        assert re.search(rf"^(ENV |\s+){name}={value}\b", dockerfile, re.M), name
