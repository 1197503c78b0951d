"""Keep the daily aggregate tables equal to what `transactions` holds.

A materialized view fills the aggregates as part of each insert, but not atomically with
it: a process killed in the middle of an insert can leave the rows stored and the view's
share missing. The retry then finds every signature already stored and inserts nothing,
so the aggregates would stay short for good. At start-up the per-day counts are
compared and every day that disagrees is rebuilt from `transactions`, using each view's
own SELECT (read from the warehouse, so the views' SQL has one source: the migrations).

Days the aggregates count short are rebuilt, and so are days of the months whose damaged parts
were set aside (`_damage.py`), which count rows no read serves any more. The aggregates keep
the days whose rows have expired under a retention (`storage.retention_days`), which count more
than `transactions` holds, and a rebuild would take them to nothing; that includes days that
expired under a shorter retention than the one set now. With a retention, only the days wholly
inside it are compared: the day it ends on may have lost part of its rows already.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection
from datetime import date

from arbitrage.storage._protocol import Warehouse
from arbitrage.storage._retention import first_whole_day

log = logging.getLogger(__name__)

_VIEW = re.compile(r"\bTO\s+(\S+)\s.*?\)\s+AS\s+(SELECT\b.*)$", re.DOTALL | re.IGNORECASE)


async def days_to_rebuild(
    warehouse: Warehouse, since: date | None = None, damaged_months: Collection[int] = ()
) -> list[date]:
    """Days (from `since` on, when given) for which `daily_aggregates` counts fewer transactions than are
    stored, or any other number in `damaged_months` (`YYYYMM`)."""
    db = warehouse.database
    stored_since = "" if since is None else "WHERE toDate(block_time) >= {since:Date}"
    counted_since = "" if since is None else "AND date >= {since:Date}"
    table = await warehouse.query_arrow(
        f"SELECT day FROM (SELECT toDate(block_time) AS day, count() AS stored FROM {db}.transactions "
        f"{stored_since} GROUP BY day) AS s "
        f"FULL OUTER JOIN (SELECT date AS day, sum(transactions) AS counted FROM {db}.daily_aggregates "
        f"WHERE kind = 'all' {counted_since} GROUP BY day) AS c "
        "USING (day) WHERE stored > counted OR (stored != counted AND toYYYYMM(day) IN {months:Array(UInt32)}) "
        "ORDER BY day",
        {"months": sorted(damaged_months)} | ({} if since is None else {"since": since}),
    )
    return [d for d in table.column("day").to_pylist() if d is not None]


async def rebuild_daily_aggregates(
    warehouse: Warehouse, retention_days: int = 0, damaged_months: Collection[int] = ()
) -> list[date]:
    """Rebuild every view-fed aggregate for the days out of step (inside the retention); return those days."""
    days = await days_to_rebuild(warehouse, first_whole_day(retention_days), damaged_months)
    if not days:
        return []
    db = warehouse.database
    views = await warehouse.query_arrow(
        "SELECT create_table_query FROM system.tables WHERE database = {db:String} AND engine = 'MaterializedView'",
        {"db": db},
    )
    for query in views.column("create_table_query").to_pylist():
        match = _VIEW.search(query)
        if match is None:
            continue
        target, select = match.group(1), match.group(2)
        for day in days:
            params = {"day": day.isoformat()}
            await warehouse.execute(
                f"ALTER TABLE {target} DELETE WHERE date = {{day:Date}} SETTINGS mutations_sync = 2", params
            )
            await warehouse.execute(f"INSERT INTO {target} SELECT * FROM ({select}) WHERE date = {{day:Date}}", params)
    log.warning("rebuilt the daily aggregates of %d day(s) to count what is stored: %s", len(days), days)
    return days
