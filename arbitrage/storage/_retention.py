"""Opt-in retention (`storage.retention_days`): ClickHouse removes old rows itself, by a table TTL.

The TTL follows the configuration: set at start-up when the setting differs from the table's
current TTL (0 removes it), left alone when it is the same, so an unchanged setting costs one
read of `system.tables`. What expires and what stays:

- `transactions` by `block_time`, `dead_letters` by `received_at` (a flood of rejected bodies
  would otherwise fill the disk as surely as the rows).
- The daily aggregates keep every day: they are small and `/stats/daily` stays useful for
  years (`rebuild_daily_aggregates` only looks at days inside the retention).
- `export_jobs` stay: one small row per export, the record of what was written where.
  `schedule_claims` and `export_cancels` expire after 30 days on their own (migrations 010, 012).

Settings chosen for a big table (parts of hundreds of millions of rows):

- `ttl_only_drop_parts = 1`: a part goes whole once its newest row has expired, which costs a
  file removal. Without it each TTL merge rewrites the oldest month's parts to take out a few
  hours of rows, several times a day. The price: parts grow by merges up to a whole month
  partition (`toYYYYMM(block_time)`), so up to a month of expired rows stays on disk until
  its part's newest row expires (a merge that rewrites a part anyway drops them sooner).
- `materialize_ttl_recalculate_only = 1`: the `MATERIALIZE TTL` that `MODIFY TTL` starts
  (`materialize_ttl_after_modify`, left on) only computes each existing part's TTL from its
  time column, instead of rewriting every part of the table. Without that step parts written
  before the TTL would never expire; the drops then happen in background TTL merges.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime, timedelta

from arbitrage.errors import MigrationError
from arbitrage.storage._protocol import Warehouse

log = logging.getLogger(__name__)

EXPIRING = {"transactions": "block_time", "dead_letters": "received_at"}
"""Tables whose rows expire under `storage.retention_days`, and the time column they expire by."""

TTL_TABLE_SETTINGS = "ttl_only_drop_parts = 1, materialize_ttl_recalculate_only = 1"

REBUILD_MARGIN = timedelta(hours=1)
"""How long a day counted as whole must stay whole; a rebuild of the aggregates takes far less."""


def retention_statements(target: str, column: str, days: int) -> list[str]:
    """The ALTERs that give `target` (a `mutation_target`) a TTL of `days` on `column`, or remove it (0)."""
    if not days:
        return [f"ALTER TABLE {target} REMOVE TTL"]
    return [
        f"ALTER TABLE {target} MODIFY SETTING {TTL_TABLE_SETTINGS}",
        f"ALTER TABLE {target} MODIFY TTL toDateTime({column}) + INTERVAL {int(days)} DAY",
    ]


def ttl_days(create_table_query: str, column: str) -> int | None:
    """The retention in days a table's TTL clause gives, 0 without one, None for a TTL of another form."""
    clause = re.search(r"\sTTL\s+(.*?)(?:\s+SETTINGS\s|$)", create_table_query, re.DOTALL)
    if clause is None:
        return 0
    ours = re.fullmatch(
        rf"toDateTime\(\s*`?{column}`?\s*\)\s*\+\s*(?:toIntervalDay\((\d+)\)|INTERVAL\s+(\d+)\s+DAY)",
        clause.group(1).strip(),
        re.IGNORECASE,
    )
    return int(ours.group(1) or ours.group(2)) if ours else None


async def apply_retention(warehouse: Warehouse, days: int) -> list[str]:
    """Make the expiring tables' TTL match `days`; return the tables changed.

    On a cluster `mutation_target` names the shards' local tables `ON CLUSTER`: the rows, and
    so the TTL, live there (a Distributed table has none).
    """
    changed = []
    for table, column in EXPIRING.items():
        target = warehouse.mutation_target(table)
        database, _, name = target.split(" ", 1)[0].partition(".")
        found = await warehouse.query_arrow(
            "SELECT create_table_query FROM system.tables WHERE database = {db:String} AND name = {name:String}",
            {"db": database, "name": name},
        )
        if not found.num_rows:  # its metadata file lost: no later step could make sense of the data dir
            raise MigrationError(
                f"table {database}.{name} is missing although its migration was applied (its metadata "
                "file was deleted?); restore the data directory from a backup"
            )
        if ttl_days(found.column("create_table_query")[0].as_py(), column) == days:
            continue
        for statement in retention_statements(target, column, days):
            await warehouse.execute(statement)
        changed.append(table)
    if changed:
        log.info("retention of %s set to %s", ", ".join(changed), f"{days} days" if days else "everything")
    return changed


def first_whole_day(retention_days: int, now: datetime | None = None) -> date | None:
    """The first day no row of which can have expired, for the next `REBUILD_MARGIN` at least (None: no retention).

    Rows expire from `now - retention_days` back; the day that moment falls on may be partly
    gone (parts are dropped whole, and a part may end mid-day), so it is not whole either.
    """
    if not retention_days:
        return None
    boundary = (now or datetime.now(UTC)) - timedelta(days=retention_days) + REBUILD_MARGIN
    return boundary.date() + timedelta(days=1)


async def retention_status(warehouse: Warehouse, days: int) -> dict[str, object]:
    """The retention and the oldest stored block time (read from the parts' min/max index: no scan)."""
    oldest = await warehouse.query_arrow(
        f"SELECT min(block_time) AS oldest, count() AS rows FROM {warehouse.database}.transactions"
    )
    row = oldest.to_pylist()[0]
    return {
        "retention_days": days,
        "oldest_block_time": row["oldest"].isoformat(timespec="milliseconds") if row["rows"] else None,
    }
