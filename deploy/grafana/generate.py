"""Write the Grafana dashboards (JSON) from the short panel lists below.

    python deploy/grafana/generate.py      # rewrites deploy/grafana/dashboards/*.json

The JSON files are committed (Grafana provisions them as they are); a test checks they
match this script and that every metric a panel queries is one the service exports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
OUT = Path(__file__).resolve().parent / "dashboards"
RATE = "$__rate_interval"


def p95(metric: str, by: str = "", selector: str = "") -> str:
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile(0.95, sum by ({group}) (rate({metric}_bucket{selector}[{RATE}])))"


def panel(title: str, targets: dict[str, str], unit: str = "short", kind: str = "timeseries") -> dict[str, Any]:
    """`targets`: legend → PromQL."""
    return {
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else {},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": DATASOURCE}
            for i, (legend, expr) in enumerate(targets.items())
        ],
    }


def stat(title: str, expr: str, unit: str = "short") -> dict[str, Any]:
    return panel(title, {title: expr}, unit, kind="stat")


DASHBOARDS: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "system-overview": (
        "Arbitrage · System overview",
        [
            stat("Up", 'up{job="arbitrage"}'),
            stat("Stored tx/s", f'sum(rate(arbitrage_transactions_total{{outcome="stored"}}[{RATE}]))', "ops"),
            stat("Net profit (SOL, since start)", "sum(arbitrage_profit_total_sol)"),
            stat("Version", "arbitrage_build_info"),
            panel("CPU", {"{{instance}}": f"rate(process_cpu_seconds_total[{RATE}])"}, "percentunit"),
            panel("Resident memory", {"{{instance}}": "process_resident_memory_bytes"}, "bytes"),
            panel("Open file descriptors", {"{{instance}}": "process_open_fds"}),
            panel("Requests in flight", {"{{instance}}": "api_requests_in_flight"}),
            panel("Warehouse errors/s", {"{{operation}}": f"sum by (operation) (rate(database_errors_total[{RATE}]))"}),
            panel("Ingest queue (batches waiting)", {"{{instance}}": "arbitrage_ingest_pending_batches"}),
        ],
    ),
    "transaction-flow": (
        "Arbitrage · Transaction flow",
        [
            panel(
                "Records by outcome",
                {"{{source}} {{outcome}}": f"sum by (source, outcome) (rate(arbitrage_transactions_total[{RATE}]))"},
                "ops",
            ),
            panel("Net profit (SOL/min)", {"profit": f"sum(rate(arbitrage_profit_total_sol[{RATE}])) * 60"}),
            panel("Ingest stage p95", {"{{stage}}": p95("arbitrage_ingest_batch_duration_seconds", "stage")}, "s"),
            panel("Rows per insert p95", {"rows": p95("arbitrage_ingest_insert_rows")}),
            panel("Pending batches", {"{{instance}}": "arbitrage_ingest_pending_batches"}),
            panel("Refused (503)/s", {"saturated": f"sum(rate(arbitrage_ingest_saturated_total[{RATE}]))"}, "ops"),
            panel(
                "Kafka messages by outcome",
                {"{{outcome}}": f"sum by (outcome) (rate(kafka_ingest_messages_total[{RATE}]))"},
                "ops",
            ),
            panel("Kafka consumer lag", {"partition {{partition}}": "sum by (partition) (kafka_consumer_lag)"}),
            panel(
                "Kafka paused partitions, held messages",
                {
                    "paused {{instance}}": "kafka_ingest_paused_partitions",
                    "held {{instance}}": "kafka_ingest_held_messages",
                },
            ),
            panel(
                "Kafka batch store and commit p95",
                {"store": p95("kafka_ingest_batch_store_seconds"), "commit": p95("kafka_ingest_commit_seconds")},
                "s",
            ),
            panel(
                "Kafka commits and rebalances",
                {
                    "commit {{outcome}}": f"sum by (outcome) (rate(kafka_ingest_commits_total[{RATE}]))",
                    "rebalance {{kind}}": f"sum by (kind) (rate(kafka_ingest_rebalances_total[{RATE}]))",
                    "store retries": f"sum(rate(kafka_ingest_store_retries_total[{RATE}]))",
                },
                "ops",
            ),
            panel(
                "Produced to derived topics", {"{{kind}}": f"sum by (kind) (rate(kafka_ingest_produced_total[{RATE}]))"}
            ),
        ],
    ),
    "api-performance": (
        "Arbitrage · API performance",
        [
            panel(
                "Requests/s by route",
                {"{{method}} {{route}}": f"sum by (method, route) (rate(api_request_duration_seconds_count[{RATE}]))"},
                "reqps",
            ),
            panel("p95 latency by route", {"{{route}}": p95("api_request_duration_seconds", "route")}, "s"),
            panel(
                "Error ratio (5xx)",
                {
                    "5xx": f'sum(rate(api_request_duration_seconds_count{{status=~"5.."}}[{RATE}])) '
                    f"/ sum(rate(api_request_duration_seconds_count[{RATE}]))"
                },
                "percentunit",
            ),
            panel(
                "Responses by status",
                {"{{status}}": f"sum by (status) (rate(api_request_duration_seconds_count[{RATE}]))"},
                "reqps",
            ),
            panel("Warehouse call p95", {"{{operation}}": p95("database_query_duration_seconds", "operation")}, "s"),
            panel("Requests in flight", {"{{instance}}": "api_requests_in_flight"}),
        ],
    ),
    "data-quality": (
        "Arbitrage · Data quality",
        [
            panel(
                "Rejected records/s",
                {"{{source}}": f'sum by (source) (rate(arbitrage_transactions_total{{outcome="rejected"}}[{RATE}]))'},
                "ops",
            ),
            panel("Dead letters/s", {"{{source}}": f"sum by (source) (rate(arbitrage_dead_letters_total[{RATE}]))"}),
            panel(
                "Duplicates/s",
                {"{{source}}": f'sum by (source) (rate(arbitrage_transactions_total{{outcome="duplicate"}}[{RATE}]))'},
            ),
            panel(
                "Late transactions/s",
                {"{{source}}": f"sum by (source) (rate(arbitrage_late_transactions_total[{RATE}]))"},
            ),
            panel(
                "Reject ratio",
                {
                    "rejected": f'sum(rate(arbitrage_transactions_total{{outcome="rejected"}}[{RATE}])) '
                    f"/ sum(rate(arbitrage_transactions_total[{RATE}]))"
                },
                "percentunit",
            ),
            stat("Dead letters (24 h)", "sum(increase(arbitrage_dead_letters_total[24h]))"),
        ],
    ),
    "ml-pipeline": (
        "Arbitrage · ML pipeline",
        [
            panel(
                "Features and risk p95 (enrich stage)",
                {"enrich": p95("arbitrage_ingest_batch_duration_seconds", selector='{stage="enrich"}')},
                "s",
            ),
            panel(
                "Exports finished",
                {"{{format}} {{state}}": "sum by (format, state) (increase(arbitrage_export_jobs_total[1h]))"},
            ),
            panel("Rows exported/s", {"rows": f"sum(rate(arbitrage_export_rows_total[{RATE}]))"}, "ops"),
            panel(
                "Schedule runs",
                {"{{outcome}}": "sum by (outcome) (increase(arbitrage_schedule_runs_total[1h]))"},
            ),
            stat("Schedules failing", "sum(arbitrage_schedules_failing)"),
            stat("Export failures (24 h)", 'sum(increase(arbitrage_export_jobs_total{state="failed"}[24h]))'),
        ],
    ),
}


def dashboard(uid: str, title: str, panels: list[dict[str, Any]]) -> dict[str, Any]:
    laid_out = []
    x = y = 0
    for index, item in enumerate(panels):
        width, height = (6, 4) if item["type"] == "stat" else (12, 8)
        if x + width > 24:
            x, y = 0, y + 8
        laid_out.append({**item, "id": index + 1, "gridPos": {"x": x, "y": y, "w": width, "h": height}})
        x += width
    return {
        "uid": f"arbitrage-{uid}",
        "title": title,
        "tags": ["arbitrage"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "editable": True,
        "panels": laid_out,
        "templating": {"list": []},
        "annotations": {"list": []},
    }


def rendered() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    return {
        f"{uid}.json": json.dumps(dashboard(uid, title, panels), indent=2) + "\n"
        for uid, (title, panels) in DASHBOARDS.items()
    }


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, text in rendered().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
