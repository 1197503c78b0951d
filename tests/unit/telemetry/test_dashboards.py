"""The Grafana dashboards query only metrics the service exports, and match their generator."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import arbitrage.app
import arbitrage.export
import arbitrage.ingest.kafka
import arbitrage.schedule  # noqa: F401
from arbitrage.telemetry import METRICS

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created", ""),
    "info": ("_info",),
    "gauge": ("",),
}
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}


def exported_series_names() -> set[str]:
    names: set[str] = set()
    for family in METRICS.registry.collect():
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (not functions, labels, keywords or durations)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    tokens = re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", text)
    return {m.group(1) for m in tokens if not m.group(2) and m.group(1) not in _KEYWORDS}


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_there_is_a_dashboard_for_each_operational_view() -> None:
    assert {p.stem for p in DASHBOARDS} == {
        "system-overview",
        "transaction-flow",
        "api-performance",
        "data-quality",
        "ml-pipeline",
    }


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_metric_a_panel_queries_is_exported_by_the_service(path: Path) -> None:
    exported = exported_series_names() | PROMETHEUS_OWN
    dashboard = json.loads(path.read_text())
    queries = panel_queries(dashboard)
    assert queries, "a dashboard without queries"
    for title, expr in queries:
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr}"
        assert names <= exported, f"{path.name} / {title}: {sorted(names - exported)} are not exported"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_panels_use_the_provisioned_prometheus_datasource(path: Path) -> None:
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    uid = datasource["datasources"][0]["uid"]
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"].startswith("arbitrage-")
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid, panel["title"]


def test_the_metric_name_extractor_skips_functions_labels_and_durations() -> None:
    expr = 'histogram_quantile(0.95, sum by (le, route) (rate(api_request_duration_seconds_bucket{status=~"5.."}[5m]))) / on(x) up'
    assert metric_names(expr) == {"api_request_duration_seconds_bucket", "up"}


def test_the_seed_metric_names_are_exported_exactly() -> None:
    exported = exported_series_names()
    for name in ("arbitrage_transactions_total", "arbitrage_profit_total_sol", "kafka_consumer_lag"):
        assert name in exported
    assert "api_request_duration_seconds_bucket" in exported
    assert "database_query_duration_seconds_bucket" in exported


def test_no_metric_takes_a_signature_or_an_address_as_a_label() -> None:
    unbounded = {"signature", "signer", "address", "pool", "token", "mint", "path", "url", "request_id", "trace_id"}
    for family in METRICS.registry.collect():
        labels = {label for sample in family.samples for label in sample.labels}
        assert not labels & unbounded, f"{family.name} is labelled by {labels & unbounded}"
    for collector in list(METRICS.registry._collector_to_names):  # labelled metrics without samples yet
        labelnames = set(getattr(collector, "_labelnames", ()))
        assert not labelnames & unbounded, f"{collector} is labelled by {labelnames & unbounded}"


def test_committed_dashboards_match_their_generator() -> None:
    spec = importlib.util.spec_from_file_location("generate", DEPLOY / "grafana" / "generate.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, text in module.rendered().items():
        assert (DEPLOY / "grafana" / "dashboards" / name).read_text() == text, (
            f"run deploy/grafana/generate.py ({name})"
        )


def test_prometheus_scrapes_the_app_metrics_endpoint() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "arbitrage")
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["app:8080"]
