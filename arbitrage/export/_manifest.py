"""`manifest.json`: what an export contains, so a training job can trust and check it.

Column meanings come from one place: `column_descriptions()` merges the stored columns of
`arbitrage.model` with the feature registry (`arbitrage.features.FEATURES`) when that module
is installed; `build_manifest` takes the descriptions as an argument, so a caller can pass
any other source.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

from arbitrage import __version__
from arbitrage.model import STORED_COLUMNS

MANIFEST_VERSION = 1


class ColumnDescription(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a column means, for the manifest and the docs."""

    name: str
    definition: str
    group: str | None = None
    unit: str | None = None
    window: str | None = None


class FileInfo(msgspec.Struct, kw_only=True):
    """One written file, relative to the export's destination."""

    path: str
    rows: int
    bytes: int
    sha256: str
    partition: dict[str, str] = {}


class ScalerParams(msgspec.Struct, kw_only=True):
    """Scaling applied to one column: `(x - center) / scale`, fitted on the train rows."""

    center: float
    scale: float
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None


def column_descriptions() -> dict[str, ColumnDescription]:
    """Descriptions of every known column: stored columns, then registered features."""
    found = {c.name: ColumnDescription(name=c.name, definition=c.definition) for c in STORED_COLUMNS}
    try:
        from arbitrage.features import FEATURES  # type: ignore[attr-defined]
    except ImportError:
        return found
    for feature in FEATURES:
        data = msgspec.to_builtins(feature) if not isinstance(feature, Mapping) else dict(feature)
        found[data["name"]] = ColumnDescription(
            name=data["name"],
            definition=str(data.get("definition", "")),
            group=_text(data.get("group")),
            unit=_text(data.get("unit")),
            window=_text(data.get("window")),
        )
    return found


def build_manifest(
    *,
    job_id: str,
    format_name: str,
    compression: str,
    request: Mapping[str, Any],
    schema: list[dict[str, Any]],
    descriptions: Mapping[str, ColumnDescription],
    files: list[FileInfo],
    source: Mapping[str, Any],
    scaler: Mapping[str, Any] | None,
    split: Mapping[str, Any] | None,
    created_at: datetime,
) -> dict[str, Any]:
    """The manifest document; `schema` entries get the column descriptions merged in."""
    columns = []
    for column in schema:
        description = descriptions.get(column["name"])
        merged = dict(column)
        if description is not None:
            merged.update(msgspec.to_builtins(description))
        columns.append(merged)
    return {
        "manifest_version": MANIFEST_VERSION,
        "software": {"name": "arbitrage", "version": __version__},
        "job_id": job_id,
        "created_at": created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "format": format_name,
        "compression": compression,
        "request": dict(request),
        "rows": sum(f.rows for f in files),
        "bytes": sum(f.bytes for f in files),
        "files": [msgspec.to_builtins(f) for f in files],
        "schema": columns,
        "source": dict(source),
        "scaler": dict(scaler) if scaler is not None else None,
        "split": dict(split) if split is not None else None,
    }


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))
