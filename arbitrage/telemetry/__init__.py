"""Prometheus metrics and logging set-up shared by every module."""

from arbitrage.telemetry._logging import configure_logging
from arbitrage.telemetry._metrics import METRICS, Metrics

__all__ = ["METRICS", "Metrics", "configure_logging"]
