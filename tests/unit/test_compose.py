"""compose.yaml and Containerfile: the production picture is complete and speaks our config."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from arbitrage.config import ENV_PREFIX, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
CONTAINERFILE = (ROOT / "Containerfile").read_text()


def interpolated(value: str) -> str:
    """Compose's `${VAR:-default}` with the default (what an empty environment gives)."""
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", value)


def app_environment() -> dict[str, str]:
    return {name: interpolated(str(value)) for name, value in SERVICES["app"]["environment"].items()}


def test_compose_runs_every_service_of_the_production_picture() -> None:
    assert set(SERVICES) == {"clickhouse", "kafka", "redis", "prometheus", "grafana", "app"}
    assert SERVICES["app"]["build"] == {"context": ".", "dockerfile": "Containerfile"}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_a_healthcheck_and_a_pinned_image(name: str) -> None:
    service = SERVICES[name]
    assert service["healthcheck"]["test"], name
    image = service["image"]
    assert (":" in image and not image.endswith(":latest")) or name == "app", image


def test_kafka_runs_in_kraft_mode_on_a_maintained_image() -> None:
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "ZOOKEEPER" not in " ".join(env)
    assert env["KAFKA_NUM_PARTITIONS"] == "10"


def test_named_volumes_are_declared_and_every_service_keeps_its_state_in_one() -> None:
    declared = set(COMPOSE["volumes"])
    used = set()
    for name, service in SERVICES.items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith((".", "/")):
                used.add(source)
            else:
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repo"
    assert used == declared
    for stateful in ("clickhouse", "kafka", "redis", "prometheus", "grafana", "app"):
        assert any(not m.startswith((".", "/")) for m in SERVICES[stateful]["volumes"]), stateful


def test_dependencies_wait_for_health_where_the_app_needs_the_service() -> None:
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in SERVICES.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
            assert rule["condition"] in conditions
    app = SERVICES["app"]["depends_on"]
    assert {k: v["condition"] for k, v in app.items()} == {
        "clickhouse": "service_healthy",
        "kafka": "service_healthy",
        "redis": "service_healthy",
    }


def test_the_apps_environment_names_only_keys_that_config_toml_documents() -> None:
    documented = tomllib.loads((ROOT / "config.toml").read_text())
    for name in app_environment():
        assert name.startswith(ENV_PREFIX), name
        assert "__" in name, name
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        assert section in documented, f"{name}: no [{section}] in config.toml"
        assert key in documented[section], f"{name}: config.toml has no {section}.{key}"


def test_the_apps_environment_is_a_valid_configuration_for_the_services_in_compose() -> None:
    settings = load_settings(env=app_environment())
    assert settings.storage.backend == "clickhouse"
    assert "@clickhouse:9000/" in settings.storage.url
    assert settings.kafka.enabled
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert settings.redis.url == "redis://redis:6379/0"
    assert settings.server.host == "0.0.0.0"
    assert settings.auth.enabled


def test_the_app_port_is_the_one_prometheus_scrapes() -> None:
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    target = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "arbitrage")["static_configs"][0]
    port = load_settings(env=app_environment()).server.port
    assert target["targets"] == [f"app:{port}"]


def test_grafana_is_provisioned_with_the_datasource_and_the_dashboards() -> None:
    mounts = SERVICES["grafana"]["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/arbitrage.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in mounts


def test_the_containerfile_is_multi_stage_with_uv_and_runs_serve_as_a_non_root_user() -> None:
    stages = re.findall(r"^FROM\s+\S+(?:\s+AS\s+(\w+))?", CONTAINERFILE, flags=re.MULTILINE)
    assert len(stages) >= 2
    assert "uv sync --frozen --no-dev" in CONTAINERFILE
    user = re.findall(r"^USER\s+(\S+)", CONTAINERFILE, flags=re.MULTILINE)
    assert user
    assert user[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*127\.0\.0\.1:8080/health", CONTAINERFILE, flags=re.MULTILINE)
    assert 'ENTRYPOINT ["arbitrage"]' in CONTAINERFILE
    assert 'CMD ["serve"]' in CONTAINERFILE


def test_the_containerfile_environment_is_valid_configuration() -> None:
    env = dict(re.findall(r"(ARB_\w+)=(\S+)", CONTAINERFILE))
    settings = load_settings(env=env)
    assert settings.server.host == "0.0.0.0"
    assert settings.auth.enabled
