"""Logging as console lines or JSON objects, chosen in config.

Every line carries the HTTP request id and the trace/span ids when there are any, and
credentials are masked on the way out (URL passwords, `token=`/`password=`/`secret=`/`key=`
values, bearer tokens), whatever code logged them.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

import msgspec

from arbitrage.telemetry._http import request_id
from arbitrage.telemetry._tracing import current_trace_ids

_SECRETS = (
    (re.compile(r"(//[^:/@\s]+:)[^@\s/]+@"), r"\1***@"),
    (
        re.compile(r"(?i)\b([\w-]*(?:password|passwd|secret|token|api_key|apikey)[\"']?\s*[=:]\s*[\"']?)[^\s&\"',;]+"),
        r"\1***",
    ),
    (re.compile(r"(?i)\b(bearer\s+)[\w.~+/=-]+"), r"\1***"),
)


def redact(text: str) -> str:
    """`text` with anything that looks like a credential replaced by `***`."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class _ContextFilter(logging.Filter):
    """Attach the request id and the trace ids of the current context to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        ids = current_trace_ids()
        record.trace_id, record.span_id = ids if ids else (None, None)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; also named by `granian_logging.json`, for Granian's own lines."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key in ("request_id", "trace_id", "span_id"):
            value = getattr(record, key, None)
            if value:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return msgspec.json.encode(entry).decode()


class _ConsoleFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        parts = []
        if getattr(record, "request_id", None):
            parts.append(f"request={getattr(record, 'request_id', '')}")
        if getattr(record, "trace_id", None):
            parts.append(f"trace={getattr(record, 'trace_id', '')}")
        record.context = f" [{' '.join(parts)}]" if parts else ""
        return redact(super().format(record))


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    """Install one handler on the root logger (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else _ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
