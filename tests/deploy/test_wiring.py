"""The deployment files agree with each other and with the service: names, ports, health checks, order of
start, and only environment variables that the service really reads."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from deploy_files import (
    COMPOSE_FILES,
    NGINX_CONF,
    ROOT,
    compose,
    dockerfile_instructions,
    final_stage,
    manifests,
    setting_names,
)

from buildstate.config import Settings

SERVICE_DOCKERFILE = ROOT / "service.Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in final_stage(SERVICE_DOCKERFILE):
        if op == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(args)))
    return env


def image_port() -> int:
    return int(image_env()["BUILDSTATE_BIND"].rsplit(":", 1)[1])


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    return env if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


# ---------------------------------------------------------------------- the image


def test_image_runs_the_service_unprivileged_with_a_health_check_on_the_port_it_binds() -> None:
    stage = dict(final_stage(SERVICE_DOCKERFILE))
    assert stage["USER"] == "10001:10001"
    assert stage["EXPOSE"] == str(image_port())
    assert stage["STOPSIGNAL"] == "SIGTERM"
    assert shlex.split(stage["CMD"].replace('"', "").strip("[]").replace(",", " ")) == ["buildstate", "serve"]
    health = stage["HEALTHCHECK"]
    assert "/health" in health
    assert "BUILDSTATE_BIND" in health  # the probe follows the bind address
    assert image_env()["BUILDSTATE_ENV"] == "production"


def test_runtime_stage_carries_the_venv_only_never_the_sources() -> None:
    copies = [args for op, args in final_stage(SERVICE_DOCKERFILE) if op == "COPY"]
    assert copies == ["--from=build /opt/buildstate /opt/buildstate"]
    stages = [args for op, args in dockerfile_instructions(SERVICE_DOCKERFILE) if op == "FROM"]
    assert len(stages) == 2


def test_image_settings_are_settings_the_service_reads() -> None:
    named = {k for k in image_env() if k.startswith("BUILDSTATE_")}
    assert named <= setting_names()
    Settings(**{k.removeprefix("BUILDSTATE_").lower(): v for k, v in image_env().items() if k in named})


# ---------------------------------------------------------------------- compose


def test_compose_has_the_seed_topology() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "redis", "migrate", "api", "nginx", "resource"}
    assert services["api"]["deploy"]["replicas"] == 3
    assert services["resource"]["deploy"]["replicas"] == 0  # built, never run
    assert services["resource"]["build"]["dockerfile"] == "resource.Dockerfile"
    resource_stages = [a for op, a in dockerfile_instructions(ROOT / "resource.Dockerfile") if op == "FROM"]
    assert any(stage.endswith(f"AS {services['resource']['build']['target']}") for stage in resource_stages)
    for name in ("api", "migrate"):
        assert services[name]["build"]["dockerfile"] == "service.Dockerfile"


def test_api_can_be_scaled_with_no_fixed_names_or_host_ports() -> None:
    api = compose()["services"]["api"]
    assert "container_name" not in api
    assert "ports" not in api
    assert api["expose"] == [str(image_port())]


def test_start_order_waits_for_health_and_for_the_migration() -> None:
    services = compose()["services"]
    assert services["postgres"]["healthcheck"]["test"][0] == "CMD-SHELL"
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"][1]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["command"] == ["buildstate", "migrate"]
    assert services["migrate"]["restart"] == "no"
    assert services["api"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert services["nginx"]["depends_on"] == {"api": {"condition": "service_healthy"}}
    assert "/nginx-health" in " ".join(services["nginx"]["healthcheck"]["test"])


def test_replicas_share_rate_limits_and_trust_only_the_project_network() -> None:
    compose_file = compose()
    env = compose_file["services"]["api"]["environment"]
    assert env["BUILDSTATE_REDIS_URL"] == "redis://redis:6379/0"
    subnet = compose_file["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert env["BUILDSTATE_TRUSTED_PROXIES"] == subnet


def test_compose_environment_names_only_settings_and_points_at_the_postgres_service() -> None:
    file = compose()
    services = file["services"]
    for name in ("api", "migrate"):
        env = environment(services[name])
        assert set(env) <= setting_names(), set(env) - setting_names()
    url = urlsplit(re.sub(r"\$\{[^}]*\}", "secret", environment(services["api"])["BUILDSTATE_DATABASE_URL"]))
    postgres_env = services["postgres"]["environment"]
    assert (url.hostname, url.port) == ("postgres", 5432)
    assert url.username == postgres_env["POSTGRES_USER"]
    assert url.path == f"/{postgres_env['POSTGRES_DB']}"
    mount = services["postgres"]["volumes"][0].split(":")
    assert mount == ["postgres-data", "/var/lib/postgresql/data"]
    assert "postgres-data" in file["volumes"]


def test_stop_grace_outlasts_the_services_own_graceful_timeout() -> None:
    grace = compose()["services"]["api"]["stop_grace_period"]
    assert int(grace.removesuffix("s")) > Settings().graceful_timeout_seconds


def test_nginx_in_compose_proxies_to_the_api_service_on_the_image_port() -> None:
    nginx = compose()["services"]["nginx"]
    conf = NGINX_CONF.read_text()
    assert f"server api:{image_port()} resolve" in conf
    listen = re.search(r"^\s*listen (\d+);", conf, re.MULTILINE)
    assert listen is not None
    assert nginx["ports"] == [f"${{HTTP_PORT:-8080}}:{listen[1]}"]
    source, target, mode = nginx["volumes"][0].split(":")
    assert (ROOT / source).resolve() == NGINX_CONF
    assert (target, mode) == ("/etc/nginx/nginx.conf", "ro")


def test_sqlite_override_runs_one_node_without_postgres() -> None:
    override = compose(COMPOSE_FILES[1])["services"]
    assert override["postgres"]["profiles"] == override["migrate"]["profiles"] == ["postgres"]
    api = override["api"]
    assert api["deploy"]["replicas"] == 1
    assert environment(api)["BUILDSTATE_DATABASE_URL"] == ""
    assert set(environment(api)) <= setting_names()
    data_dir = image_env()["BUILDSTATE_DATA_DIR"]
    assert f"sqlite-data:{data_dir}" in api["volumes"]
    assert "!reset" in COMPOSE_FILES[1].read_text()  # depends_on dropped, not merged with the base's


# ---------------------------------------------------------------------- nginx


def test_nginx_body_limit_matches_the_services() -> None:
    match = re.search(r"client_max_body_size (\d+)m;", NGINX_CONF.read_text())
    assert match is not None
    assert int(match[1]) << 20 == Settings().max_body_bytes


def test_the_nginx_config_the_cluster_renders_passes_nginx_t(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    import localcluster

    binary = localcluster.ensure_nginx()
    conf = tmp_path / "nginx.conf"
    conf.write_text(localcluster.nginx_config([18001, 18002, 18003], 18000, tmp_path))
    checked = subprocess.run(
        [binary, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert conf.read_text().count("server 127.0.0.1:1800") == 3


# ---------------------------------------------------------------------- Kubernetes


def pod_spec(kind_name: str) -> dict[str, Any]:
    spec: dict[str, Any] = manifests()[kind_name]["spec"]["template"]["spec"]
    return spec


def test_deployment_probes_ready_and_health_on_the_image_port() -> None:
    container = pod_spec("Deployment/buildstate")["containers"][0]
    assert container["ports"] == [{"name": "http", "containerPort": image_port()}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert {"requests", "limits"} <= set(container["resources"])


@pytest.mark.parametrize("kind_name", ["Deployment/buildstate", "Job/buildstate-migrate"])
def test_pods_run_as_the_images_unprivileged_user(kind_name: str) -> None:
    spec = pod_spec(kind_name)
    user = dict(final_stage(SERVICE_DOCKERFILE))["USER"].split(":")
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert [str(spec["securityContext"]["runAsUser"]), str(spec["securityContext"]["runAsGroup"])] == user
    for container in spec["containers"]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize("kind_name", ["Deployment/buildstate", "Job/buildstate-migrate"])
def test_pods_read_only_settings_and_take_secrets_by_reference(kind_name: str) -> None:
    config = manifests()["ConfigMap/buildstate"]["data"]
    assert set(config) <= setting_names()
    Settings(**{k.removeprefix("BUILDSTATE_").lower(): v for k, v in config.items()})
    for container in pod_spec(kind_name)["containers"]:
        assert container["envFrom"] == [{"configMapRef": {"name": "buildstate"}}]
        for variable in container["env"]:
            assert variable["name"] in setting_names()
            assert "value" not in variable  # secrets are never written into a manifest
            assert variable["valueFrom"]["secretKeyRef"]["name"] == "buildstate"


def test_metrics_directory_is_on_a_writable_volume() -> None:
    spec = pod_spec("Deployment/buildstate")
    mounts = [m["mountPath"] for m in spec["containers"][0]["volumeMounts"]]
    metrics_dir = manifests()["ConfigMap/buildstate"]["data"]["BUILDSTATE_METRICS_DIR"]
    assert any(metrics_dir.startswith(f"{mount}/") for mount in mounts)


def test_service_hpa_and_pdb_select_the_deployments_pods() -> None:
    objects = manifests()
    pod_labels = objects["Deployment/buildstate"]["spec"]["template"]["metadata"]["labels"]
    for selector in (
        objects["Service/buildstate"]["spec"]["selector"],
        objects["PodDisruptionBudget/buildstate"]["spec"]["selector"]["matchLabels"],
        objects["Deployment/buildstate"]["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items()
    assert objects["Service/buildstate"]["spec"]["ports"][0]["targetPort"] == "http"
    target = objects["HorizontalPodAutoscaler/buildstate"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "buildstate")
    hpa_min = objects["HorizontalPodAutoscaler/buildstate"]["spec"]["minReplicas"]
    assert objects["PodDisruptionBudget/buildstate"]["spec"]["minAvailable"] < hpa_min


def test_termination_grace_outlasts_the_drain() -> None:
    spec = pod_spec("Deployment/buildstate")
    pause = int(spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][-1])
    graceful = int(manifests()["ConfigMap/buildstate"]["data"]["BUILDSTATE_GRACEFUL_TIMEOUT_SECONDS"])
    assert spec["terminationGracePeriodSeconds"] > pause + graceful


# ---------------------------------------------------------------------- .env.example


def env_example() -> dict[str, str]:
    """Every ``NAME=value`` in .env.example, commented out or not."""
    found = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            found[match[1]] = match[2]
    return found


def test_env_example_documents_exactly_the_settings_the_service_reads() -> None:
    documented = {name for name in env_example() if name.startswith("BUILDSTATE_")}
    assert sorted(setting_names() - documented) == [], "settings missing from .env.example"
    assert sorted(documented - setting_names()) == [], ".env.example names settings that do not exist"


def test_env_example_shows_the_real_defaults() -> None:
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    for name, value in env_example().items():
        if not name.startswith("BUILDSTATE_") or value == "":
            continue
        field = name.removeprefix("BUILDSTATE_").lower()
        parsed = Settings(_env_file=None, **{field: value})  # type: ignore[call-arg]
        assert getattr(parsed, field) == getattr(defaults, field), f"{name}={value} is not the default"


def test_compose_takes_its_own_variables_from_env_example() -> None:
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", "".join(p.read_text() for p in COMPOSE_FILES)))
    assert used <= set(env_example()), used - set(env_example())
