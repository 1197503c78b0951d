"""Parts ClickHouse found damaged on disk and set aside (detached) when it opened the tables.

A lost or cut file (a failing disk, a copy of a data dir taken while it was written) makes
ClickHouse move that part to `detached/broken-on-start_…` and open the table without it: up to
`max_suspicious_broken_parts` (100) parts go that way without an error. Their rows are then
served by no read, and a re-sent copy of them is stored again. Nothing said so; now start-up
logs each such part at ERROR and `/health` reports the warehouse degraded until it is removed.
"""

from __future__ import annotations

import msgspec

from arbitrage.storage._protocol import Warehouse


class DamagedPart(msgspec.Struct, frozen=True):
    table: str
    name: str
    """The part's directory name under the table's `detached/`."""
    reason: str
    partition_id: str
    """The month (`YYYYMM`) of `transactions`' parts."""
    path: str


async def damaged_parts(warehouse: Warehouse) -> list[DamagedPart]:
    """The parts of this database set aside as broken, oldest partition first."""
    table = await warehouse.query_arrow(
        "SELECT table, name, ifNull(reason, '') AS reason, ifNull(partition_id, '') AS partition_id, path "
        "FROM system.detached_parts WHERE database = {db:String} AND startsWith(ifNull(reason, ''), 'broken') "
        "ORDER BY table, partition_id, name",
        {"db": warehouse.database},
    )
    return [DamagedPart(**row) for row in table.to_pylist()]
