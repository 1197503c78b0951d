"""What a user asks an export for: the request body, checked before any work starts."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Literal

import msgspec

from arbitrage.errors import ValidationError
from arbitrage.model import BASE58_PATTERN, DEX_PATTERN
from arbitrage.storage import LATEST, as_utc

PartitionKey = Literal["date", "hour", "month", "dex", "signer", "start_token", "success", "source", "hops"]
NormalizeMethod = Literal["none", "zscore", "minmax"]

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class Split(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Temporal train/val/test split: fractions of the rows in block-time order (sum to 1)."""

    train: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.7
    val: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.15
    test: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.15


class ExportRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """The body of `POST /export/{format}` and the options of a scheduled export.

    Dates are `YYYY-MM-DD` (whole UTC days; `end_date` is inclusive) or RFC 3339
    datetimes (`end_date` exclusive). Every filter narrows the rows; an empty list means
    "no filter on this field".
    """

    start_date: str | None = None
    """First day or instant to export (block time, UTC)."""
    end_date: str | None = None
    """Last day (inclusive) or instant (exclusive) to export."""
    tokens: list[str] = []
    """Keep transactions whose route touches any of these mints."""
    dexes: list[str] = []
    """Keep transactions with a leg on any of these DEXes."""
    signers: list[str] = []
    """Keep transactions signed by any of these public keys."""
    min_profit_sol: float | None = None
    """Keep transactions with at least this net profit in SOL."""
    success_only: bool = False
    """Keep only transactions that executed without error."""
    columns: list[str] | None = None
    """Columns to write, in this order; default all stored columns."""
    compression: str | None = None
    """Codec, checked against what the format supports; default the format's own."""
    partition_by: list[PartitionKey] = []
    """One file (or directory level) per value of these keys, Hive-style `key=value/`."""
    chunk_rows: Annotated[int, msgspec.Meta(gt=0)] | None = None
    """Start a new file after this many rows."""
    normalize: NormalizeMethod | bool = False
    """Scale numeric columns (`zscore` or `minmax`; `true` means `zscore`), fitted on train rows only."""
    normalize_columns: list[str] | None = None
    """Columns to scale; default every numeric column except identifiers (`slot`)."""
    split: Split | None = None
    """Temporal train/val/test split; each split is written to its own files."""
    destination: str | None = None
    """Directory or fsspec URL (`s3://bucket/prefix/`); default the export dir."""
    json_array: bool = False
    """json only: write one JSON array instead of NDJSON."""
    arrow_stream: bool = False
    """arrow only: write the IPC stream format instead of the IPC file format."""

    @property
    def normalize_method(self) -> NormalizeMethod:
        """`normalize` as a method name (`true` → `zscore`, `false` → `none`)."""
        if self.normalize is True:
            return "zscore"
        if self.normalize is False:
            return "none"
        return self.normalize


class TimeRange(msgspec.Struct, frozen=True):
    """Half-open block-time range `[start, end)`; either bound may be open."""

    start: datetime | None
    end: datetime | None


def time_range(request: ExportRequest) -> TimeRange:
    """Resolve `start_date`/`end_date` into a half-open UTC range.

    Raises:
        ValidationError: a bound does not parse, or the range is empty.
    """
    start = _parse_bound("start_date", request.start_date, is_end=False)
    end = _parse_bound("end_date", request.end_date, is_end=True)
    if start is not None and end is not None and end <= start:
        raise ValidationError("end_date", "must be after start_date")
    return TimeRange(start, end)


MAX_FILTER_VALUES = 1_000
"""Values per filter list: they are inlined into the query, which ClickHouse caps (`max_query_size`)."""

_PUBKEY = (re.compile(BASE58_PATTERN), 32, 44, "a base58 public key (32-44 characters)")
_DEX = (re.compile(DEX_PATTERN), 1, 64, "a DEX name (1-64 letters, digits, '_', '.' or '-')")


def check_filters(request: ExportRequest) -> None:
    """Filter values must be what the column can hold: mints and signers base58 keys, DEXes names."""
    for name, values, (pattern, shortest, longest, expected) in (
        ("tokens", request.tokens, _PUBKEY),
        ("dexes", request.dexes, _DEX),
        ("signers", request.signers, _PUBKEY),
    ):
        if len(values) > MAX_FILTER_VALUES:
            raise ValidationError(name, f"at most {MAX_FILTER_VALUES:,} values, got {len(values):,}")
        for index, value in enumerate(values):
            if not (shortest <= len(value) <= longest and pattern.match(value)):
                raise ValidationError(f"{name}[{index}]", f"must be {expected}, got {value[:64]!r}")


def check_split(split: Split | None) -> None:
    """A split's fractions must add up to 1 and give the train part some rows."""
    if split is None:
        return
    total = split.train + split.val + split.test
    if abs(total - 1.0) > 1e-6:
        raise ValidationError("split", f"train + val + test must be 1, got {total:g}")
    if split.train <= 0:
        raise ValidationError("split.train", "must be greater than 0")


def _parse_bound(field: str, value: str | None, *, is_end: bool) -> datetime | None:
    if value is None or value == "":
        return None
    if _DATE_ONLY.match(value):
        try:
            day = date.fromisoformat(value)
        except ValueError as exc:
            raise ValidationError(field, f"not a date: {value!r}") from exc
        if not is_end:
            return datetime.combine(day, time(), tzinfo=UTC)
        # An inclusive last day ends at the next midnight; 9999-12-31 has none a datetime holds.
        return LATEST if day == date.max else datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValidationError(field, f"not a date or RFC 3339 datetime: {value!r}") from exc
    return as_utc(moment)
