"""Prometheus metrics, OpenTelemetry tracing and logging set-up shared by every module."""

from arbitrage.telemetry._http import request_id, request_telemetry
from arbitrage.telemetry._logging import configure_logging, redact
from arbitrage.telemetry._metrics import METRICS, Metrics
from arbitrage.telemetry._tracing import (
    configure_tracing,
    current_trace_ids,
    disable_tracing,
    flush_tracing,
    span,
    traced,
    tracer,
    tracing_enabled,
)

__all__ = [
    "METRICS",
    "Metrics",
    "configure_logging",
    "configure_tracing",
    "current_trace_ids",
    "disable_tracing",
    "flush_tracing",
    "redact",
    "request_id",
    "request_telemetry",
    "span",
    "traced",
    "tracer",
    "tracing_enabled",
]
