"""The `dead_letters` table seen from operations: list rejects, and re-ingest them after a fix."""

from __future__ import annotations

import msgspec
import pyarrow as pa

from arbitrage.ingest import IngestReport, IngestService
from arbitrage.storage import Warehouse

REPLAY_SOURCE = "replay"
"""`source` of rows stored (or rejected again) by a dead-letter replay."""


class DeadLetter(msgspec.Struct):
    received_at: str
    source: str
    record_index: int
    field: str
    reason: str
    raw: str
    """The original bytes, decoded as UTF-8 (invalid bytes replaced)."""
    replayed: bool


class DeadLetterReplay(msgspec.Struct):
    """How many dead letters were re-ingested and what happened to them."""

    replayed: int
    report: IngestReport


async def list_dead_letters(
    warehouse: Warehouse, *, limit: int, source: str | None = None, include_replayed: bool = False
) -> list[DeadLetter]:
    """Newest first."""
    table = await warehouse.query_arrow(
        f"SELECT received_at, source, record_index, field, reason, raw, replayed FROM {warehouse.database}.dead_letters "
        "WHERE ({source:String} = '' OR source = {source:String}) AND ({all:Bool} OR NOT replayed) "
        "ORDER BY received_at DESC LIMIT {limit:UInt32}",
        {"source": source or "", "all": include_replayed, "limit": limit},
    )
    rows = _with_raw_bytes(table).to_pylist()
    return [
        DeadLetter(
            received_at=r["received_at"].strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            source=r["source"],
            record_index=r["record_index"],
            field=r["field"],
            reason=r["reason"],
            raw=r["raw"].decode(errors="replace"),
            replayed=bool(r["replayed"]),
        )
        for r in rows
    ]


async def replay_dead_letters(
    ingest: IngestService, *, source: str | None = None, limit: int = 100_000
) -> DeadLetterReplay:
    """Re-ingest unreplayed dead letters (oldest first) and mark them replayed.

    Records that still break a rule become new dead letters with source `replay`;
    records whose signature is stored already count as duplicates. The rejects of one batch
    share their `received_at`, which is what marks them replayed, so `limit` is rounded up
    to the end of the last batch it reaches: a batch is never marked without all of it replayed.
    """
    warehouse = ingest.warehouse
    db = warehouse.database
    unreplayed = f"{db}.dead_letters WHERE NOT replayed AND ({{source:String}} = '' OR source = {{source:String}})"
    table = await warehouse.query_arrow(
        f"SELECT raw, received_at FROM {unreplayed} AND received_at <= ("
        f"SELECT max(received_at) FROM (SELECT received_at FROM {unreplayed} ORDER BY received_at LIMIT {{limit:UInt32}})"
        ") ORDER BY received_at",
        {"source": source or "", "limit": limit},
    )
    if table.num_rows == 0:
        return DeadLetterReplay(0, IngestReport(0, 0, 0, []))
    raws: list[bytes] = _with_raw_bytes(table).column("raw").to_pylist()
    cutoff = table.column("received_at").to_pylist()[-1]
    report = await ingest.ingest_records(raws, source=REPLAY_SOURCE)
    await warehouse.execute(
        f"ALTER TABLE {warehouse.mutation_target('dead_letters')} UPDATE replayed = true "
        "WHERE NOT replayed AND ({source:String} = '' OR source = {source:String}) "
        "AND received_at <= {cutoff:DateTime64(3, 'UTC')} "
        "SETTINGS mutations_sync = 1",
        {"source": source or "", "cutoff": cutoff.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]},
    )
    return DeadLetterReplay(table.num_rows, report)


def _with_raw_bytes(table: pa.Table) -> pa.Table:
    """`raw` as bytes: the warehouse hands strings back as UTF-8 text, which binary bodies (Arrow, msgpack) are not."""
    index = table.schema.get_field_index("raw")
    return table.set_column(index, "raw", table.column("raw").cast(pa.binary()))
