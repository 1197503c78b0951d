"""ClickHouse query parameters rendered as typed literals, for clients that bind nothing.

Both backends use it: asynch substitutes parameters client side in its own way, and chdb's
own parameters leak between queries that run at once on different threads.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from arbitrage.errors import ValidationError

_PLACEHOLDER = re.compile(r"'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`|\{(\w+):([^{}]+)\}")
TSV_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0", "\b": "\\b", "\f": "\\f"}
_SQL_ESCAPES = {**TSV_ESCAPES, "'": "\\'"}

INSERT_SETTINGS = "optimize_on_insert = 0"
"""Settings of every insert, on both backends.

No insert holds two rows with one sort key (ingest drops signatures already stored or in flight;
the other tables insert one row per id), so collapsing rows inside the inserted block only
copies it: a third of a 12k-row insert's CPU. Copies from different inserts are still
collapsed by ReplacingMergeTree's merges and by reads with FINAL.
"""


def param_text(value: Any) -> str:
    """A Python value as ClickHouse's text form of a query parameter value (before escaping)."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, datetime):
        moment = value.astimezone(UTC) if value.tzinfo else value
        return moment.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        inner = ", ".join(sql_literal(item) for item in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    raise ValidationError("params", f"unsupported query parameter type {type(value).__name__}")


def sql_literal(value: Any) -> str:
    """A Python value as a ClickHouse SQL literal (strings quoted and escaped)."""
    if value is None:
        return "NULL"
    if isinstance(value, (bool, int)):
        return param_text(value)
    if isinstance(value, float):
        return param_text(value) if math.isfinite(value) else f"'{param_text(value)}'::Float64"
    if isinstance(value, (list, tuple)):
        return param_text(value)
    return quote(param_text(value))


def quote(text: str) -> str:
    """`text` as a single-quoted ClickHouse string literal."""
    return "'" + "".join(_SQL_ESCAPES.get(c, c) for c in text) + "'"


def inline_params(sql: str, params: Mapping[str, Any] | None) -> str:
    """Render `{name:Type}` placeholders as typed literals, for a client that binds nothing itself.

    `String` becomes a quoted literal (usable anywhere a literal is, SETTINGS included),
    `Identifier` a back-quoted name, every other type `CAST('<text>' AS Type)`, which the
    server parses exactly as it parses a bound parameter. Quoted strings and identifiers in
    `sql` are left alone; a placeholder without a value is an error, like on the server.
    """
    values = params or {}

    def substitute(match: re.Match[str]) -> str:
        name, type_name = match.group(1), match.group(2)
        if name is None:
            return match.group(0)
        if name not in values:
            raise ValidationError(f"params.{name}", "no value for a query parameter")
        value = values[name]
        type_name = type_name.strip()
        if type_name == "Identifier":
            return "`" + str(value).replace("\\", "\\\\").replace("`", "\\`") + "`"
        if value is None:
            return f"CAST(NULL AS {type_name})"
        if type_name == "String" and isinstance(value, (str, bytes)):
            return quote(param_text(value))
        return f"CAST({quote(param_text(value))} AS {type_name})"

    return _PLACEHOLDER.sub(substitute, sql)
