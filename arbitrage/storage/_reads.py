"""Read queries the API serves, with every value passed as a query parameter.

Pages are newest first on the table's sort key (block_time, signature), so a cursor is
the last row's key and the next page is a range read, never an OFFSET scan.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import polars as pl
import pyarrow as pa

from arbitrage.errors import ValidationError
from arbitrage.model import BASE58_PATTERN, EARLIEST_BLOCK_TIME, LEG_DTYPE, MAX_CLOCK_SKEW
from arbitrage.storage._protocol import Warehouse

_SIGNATURE = re.compile(f"{BASE58_PATTERN[:-2]}{{64,88}}$")
"""A transaction signature: base58, 64-88 characters (a cursor's second half)."""

_LEG_FIELDS = [field.name for field in LEG_DTYPE.fields]
_LEG_ENDS = (("first", 1), ("last", -1))
"""`feature_history`'s legs: ClickHouse arrays count from 1, and -1 is the last element."""


HISTORY_PIECE_ROWS = 100_000
"""Rows per read of a restart's feature history: its memory is a piece's, not the window's."""
_SLOTS_PER_BUCKET = 256
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class HistoryExtent(msgspec.Struct, frozen=True, kw_only=True):
    """The stored rows a restart warms the feature engine on (`TransactionReader.history_extent`)."""

    start: datetime
    end: datetime
    """The newest block time stored."""
    newest_slot: int
    slot_ranges: list[tuple[int, int]]
    """Inclusive slot ranges, in order, of about `HISTORY_PIECE_ROWS` rows each."""

    @property
    def newest_ms(self) -> int:
        return (self.end - _EPOCH) // timedelta(milliseconds=1)


class TransactionFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Filters shared by /transactions, /historical and exports; None means "any"."""

    token: str | None = None
    dex: str | None = None
    signer: str | None = None
    min_profit_sol: float | None = None
    start: datetime | None = None
    end: datetime | None = None

    @property
    def is_empty(self) -> bool:
        return all(v is None for v in msgspec.structs.astuple(self))

    def where(self) -> tuple[str, dict[str, Any]]:
        """SQL conditions and their parameters."""
        clauses = ["1"]
        params: dict[str, Any] = {}
        if self.token is not None:
            clauses.append("has(route, {token:String})")
            params["token"] = self.token
        if self.dex is not None:
            clauses.append("has(dexes, {dex:String})")
            params["dex"] = self.dex
        if self.signer is not None:
            clauses.append("signer = {signer:String}")
            params["signer"] = self.signer
        if self.min_profit_sol is not None:
            clauses.append("net_profit_sol >= {min_profit:Float64}")
            params["min_profit"] = self.min_profit_sol
        if self.start is not None:
            clauses.append("block_time >= {start:DateTime64(3, 'UTC')}")
            params["start"] = ch_time(self.start)
        if self.end is not None:
            clauses.append("block_time <= {end:DateTime64(3, 'UTC')}")
            params["end"] = ch_time(self.end)
        return " AND ".join(clauses), params


EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


def as_utc(value: datetime) -> datetime:
    """`value` in UTC (naive is taken as UTC), clamped to the years 1-9999 a datetime holds.

    An offset can move an instant of year 1 or 9999 past them (`0001-01-01T00:00+01:00`);
    the edge it is clamped to lies past every stored time as well, so it bounds the same rows.
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return EARLIEST if value.year == 1 else LATEST


def ch_time(value: datetime) -> str:
    """A DateTime64(3, 'UTC') parameter value (naive datetimes are taken as UTC)."""
    return as_utc(value).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def encode_cursor(block_time: datetime, signature: str) -> str:
    key = f"{int(block_time.timestamp() * 1000)}:{signature}"
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, field: str = "cursor") -> tuple[datetime, str]:
    """Inverse of encode_cursor; ValidationError naming `field` when it is not one of ours.

    A forged time can lie past what a float (OverflowError) or the platform's time
    functions (OSError, EOVERFLOW) hold: that is not one of ours either, nor is a key no
    stored row could have (a time outside the contract's, a signature that is not one),
    which would otherwise answer an empty page or the first one.
    """
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        millis, _, signature = base64.urlsafe_b64decode(padded).decode().partition(":")
        at = datetime.fromtimestamp(int(millis) / 1000, UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise ValidationError(field, "not a cursor returned by this API") from exc
    if not (EARLIEST_BLOCK_TIME <= at <= datetime.now(UTC) + MAX_CLOCK_SKEW and _SIGNATURE.match(signature)):
        raise ValidationError(field, "not a cursor returned by this API")
    return at, signature


class TransactionReader:
    """The API's read side over a warehouse."""

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse
        self.table = f"{warehouse.database}.transactions"
        # Ingest skips stored signatures under one writer, so one process never stores a
        # signature twice; several writers (server backend) can race, so collapse at read.
        self._final = " FINAL" if warehouse.backend == "clickhouse" else ""

    async def page(self, filters: TransactionFilter, limit: int, before: tuple[datetime, str] | None) -> pl.DataFrame:
        where, params = filters.where()
        if before is not None:
            where += " AND (block_time, signature) < ({cursor_time:DateTime64(3, 'UTC')}, {cursor_sig:String})"
            params |= {"cursor_time": ch_time(before[0]), "cursor_sig": before[1]}
        sql = f"SELECT * FROM {self.table}{self._final} WHERE {where} ORDER BY block_time DESC, signature DESC LIMIT {int(limit)}"
        return _frame(await self.warehouse.query_arrow(sql, params))

    async def newest(self, limit: int) -> pl.DataFrame:
        sql = f"SELECT * FROM {self.table} ORDER BY block_time DESC, signature DESC LIMIT {int(limit)}"
        return _frame(await self.warehouse.query_arrow(sql))

    async def history_extent(self, window: timedelta, piece_rows: int = HISTORY_PIECE_ROWS) -> HistoryExtent | None:
        """What `feature_history` reads: the rows within `window` of the newest one, in slot ranges
        of about `piece_rows` rows each (None when nothing is stored).

        The ranges come from row counts per 256 slots (≈ 100 s of feed), so a piece holds more
        than `piece_rows` only when 256 slots do.
        """
        newest = await self.warehouse.query_arrow(f"SELECT max(block_time) AS newest, count() AS n FROM {self.table}")
        if not newest.column("n")[0].as_py():
            return None
        end: datetime = newest.column("newest")[0].as_py()
        start = end - window
        counts = await self.warehouse.query_arrow(
            f"SELECT intDiv(slot, {_SLOTS_PER_BUCKET}) AS bucket, count() AS n, min(slot) AS first, max(slot) AS last "
            f"FROM {self.table} WHERE block_time BETWEEN {{start:DateTime64(3, 'UTC')}} AND {{end:DateTime64(3, 'UTC')}} "
            "GROUP BY bucket ORDER BY bucket",
            {"start": start, "end": end},
        )
        ranges: list[tuple[int, int]] = []
        held = 0
        for rows, first, last in zip(
            counts.column("n").to_pylist(),
            counts.column("first").to_pylist(),
            counts.column("last").to_pylist(),
            strict=True,
        ):
            if ranges and held + rows <= piece_rows:
                ranges[-1] = (ranges[-1][0], last)
                held += rows
            else:
                ranges.append((first, last))
                held = rows
        return HistoryExtent(start=start, end=end, newest_slot=ranges[-1][1], slot_ranges=ranges)

    async def feature_history(self, extent: HistoryExtent, columns: Sequence[str]) -> AsyncIterator[pl.DataFrame]:
        """Stored `columns` of the extent's rows, a slot range at a time, in slot then arrival order.

        A batch's rows share one `ingested_at`; their stream positions keep the order the
        feature engine saw them in, which its per-pair lookbacks depend on. `legs` holds each
        row's first and last leg only, all the engine reads of a route: read whole, the nested
        column was most of a restart's time and memory. Those two legs are read as flat columns
        and put back together here, which chdb hands over several times faster.
        """
        flat = [f"`{name}`" for name in columns if name != "legs"]
        if "legs" in columns:
            flat += [f"legs[{index}].{field} AS `{end}.{field}`" for end, index in _LEG_ENDS for field in _LEG_FIELDS]
        sql = (
            f"SELECT {', '.join(flat)} FROM {self.table}{self._final} "
            "WHERE block_time BETWEEN {start:DateTime64(3, 'UTC')} AND {end:DateTime64(3, 'UTC')} "
            "AND slot BETWEEN {first:UInt64} AND {last:UInt64} "
            "ORDER BY slot, ingested_at, stream_position"
        )
        for first, last in extent.slot_ranges:
            params = {"start": extent.start, "end": extent.end, "first": first, "last": last}
            frame = _frame(await self.warehouse.query_arrow(sql, params))
            yield frame.with_columns(_first_and_last_legs(frame)).select(columns) if "legs" in columns else frame

    async def columns(self, names: list[str], filters: TransactionFilter) -> pl.DataFrame:
        """Named columns of matching rows. Names must be identifiers (they come from registries)."""
        if not all(name.isidentifier() for name in names):
            raise ValidationError("columns", "column names must be identifiers")
        where, params = filters.where()
        selected = ", ".join(f"`{name}`" for name in names)
        return _frame(
            await self.warehouse.query_arrow(f"SELECT {selected} FROM {self.table}{self._final} WHERE {where}", params)
        )

    async def get(self, signature: str) -> pl.DataFrame:
        sql = f"SELECT * FROM {self.table} WHERE signature = {{signature:String}} LIMIT 1"
        return _frame(await self.warehouse.query_arrow(sql, {"signature": signature}))

    async def historical(self, filters: TransactionFilter, limit: int) -> AsyncIterator[pl.DataFrame]:
        """Oldest first, streamed in batches."""
        sql, params = self._oldest_first(filters, limit)
        async for batch in self.warehouse.stream_arrow(sql, params, batch_rows=10_000):
            yield _frame(pa.Table.from_batches([batch]))

    async def range_page(self, filters: TransactionFilter, limit: int) -> pl.DataFrame:
        """What `historical` yields, as one result: cheaper for a page (no stream of its own)."""
        sql, params = self._oldest_first(filters, limit)
        return _frame(await self.warehouse.query_arrow(sql, params))

    def _oldest_first(self, filters: TransactionFilter, limit: int) -> tuple[str, dict[str, Any]]:
        where, params = filters.where()
        sql = f"SELECT * FROM {self.table}{self._final} WHERE {where} ORDER BY block_time, signature LIMIT {int(limit)}"
        return sql, params

    async def stats(self) -> dict[str, Any]:
        db = self.warehouse.database
        totals = await self.warehouse.query_arrow(
            f"SELECT sum(transactions) AS transactions, sum(successful) AS successful, sum(circular) AS circular, "
            f"sum(profitable) AS profitable, sum(volume_sol) AS volume_sol, sum(gross_revenue_sol) AS gross_revenue_sol, "
            f"sum(total_cost_sol) AS total_cost_sol, sum(jito_tips_sol) AS jito_tips_sol, sum(net_profit_sol) AS net_profit_sol "
            f"FROM {db}.daily_aggregates WHERE kind = 'all'"
        )
        result: dict[str, Any] = {k: v[0] for k, v in totals.to_pydict().items()}
        for key in ("transactions", "successful", "circular", "profitable"):
            result[key] = int(result[key] or 0)
        for kind, name in (("token", "top_tokens"), ("dex", "top_dexes"), ("signer", "top_signers")):
            top = await self.warehouse.query_arrow(
                f"SELECT key AS {kind}, sum(transactions) AS transactions, sum(net_profit_sol) AS net_profit_sol "
                f"FROM {db}.daily_aggregates WHERE kind = '{kind}' GROUP BY key ORDER BY transactions DESC, key LIMIT 10"
            )
            result[name] = top.to_pylist()
        return result

    async def daily(self, days: int, today: date | None = None) -> list[dict[str, Any]]:
        first = (today or datetime.now(UTC).date()) - timedelta(days=days - 1)
        table = await self.warehouse.query_arrow(
            "SELECT date, sum(transactions) AS transactions, sum(successful) AS successful, sum(profitable) AS profitable, "
            "sum(volume_sol) AS volume_sol, sum(total_cost_sol) AS total_cost_sol, sum(jito_tips_sol) AS jito_tips_sol, "
            f"sum(net_profit_sol) AS net_profit_sol FROM {self.warehouse.database}.daily_aggregates "
            "WHERE kind = 'all' AND date >= {first:Date} GROUP BY date ORDER BY date",
            {"first": first.isoformat()},
        )
        rows: list[dict[str, Any]] = table.to_pylist()
        for row in rows:
            row["date"] = row["date"].isoformat()
        return rows


def _first_and_last_legs(frame: pl.DataFrame) -> pl.Series:
    """`[first, last]` per row from the flat `first.*` and `last.*` columns.

    Interleaved and reshaped: polars' `concat_list` of struct columns took 13-17 s per million rows.
    """
    rows = frame.height
    firsts, lasts = (
        frame.select(pl.struct(pl.col(f"{end}.{field}").alias(field) for field in _LEG_FIELDS)).to_series()
        for end, _ in _LEG_ENDS
    )
    interleaved = np.empty(2 * rows, dtype=np.int64)
    interleaved[0::2] = np.arange(rows)
    interleaved[1::2] = np.arange(rows, 2 * rows)
    return pl.concat([firsts, lasts]).gather(interleaved).reshape((rows, 2)).arr.to_list().alias("legs")


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame
