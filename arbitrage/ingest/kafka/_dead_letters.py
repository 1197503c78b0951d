"""The `dead_letters` table seen from operations: list rejects, and re-ingest them after a fix."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import msgspec
import pyarrow as pa

from arbitrage.ingest import IngestReport, IngestService
from arbitrage.storage import Warehouse, ch_time

REPLAY_SOURCE = "replay"
"""`source` of the rows a dead-letter replay stores."""
_DIGESTS_PER_MUTATION = 1_000
"""Digests inlined per update of still-rejected letters (below ClickHouse's `max_query_size`)."""


class DeadLetter(msgspec.Struct):
    received_at: str
    source: str
    record_index: int
    field: str
    reason: str
    raw: str
    """The original bytes, decoded as UTF-8 (invalid bytes replaced)."""
    replayed: bool
    """Stored (or found stored) by a replay: it is not replayed again."""
    replayed_at: str | None
    """When a replay last re-ingested it; set on a letter still rejected too."""


class DeadLetterReplay(msgspec.Struct):
    """How many dead letters were re-ingested and what happened to them.

    `report.accepted` + `report.duplicates` were marked replayed; `report.rejected` stay
    unreplayed, with the field and reason of this attempt.
    """

    replayed: int
    report: IngestReport


async def list_dead_letters(
    warehouse: Warehouse, *, limit: int, source: str | None = None, include_replayed: bool = False
) -> list[DeadLetter]:
    """Newest first."""
    table = await warehouse.query_arrow(
        "SELECT received_at, source, record_index, field, reason, raw, replayed, replayed_at "
        f"FROM {warehouse.database}.dead_letters "
        "WHERE ({source:String} = '' OR source = {source:String}) AND ({all:Bool} OR NOT replayed) "
        "ORDER BY received_at DESC LIMIT {limit:UInt32}",
        {"source": source or "", "all": include_replayed, "limit": limit},
    )
    rows = _with_raw_bytes(table).to_pylist()
    return [
        DeadLetter(
            received_at=_rfc3339(r["received_at"]),
            source=r["source"],
            record_index=r["record_index"],
            field=r["field"],
            reason=r["reason"],
            raw=r["raw"].decode(errors="replace"),
            replayed=bool(r["replayed"]),
            replayed_at=None if r["replayed_at"] is None else _rfc3339(r["replayed_at"]),
        )
        for r in rows
    ]


async def replay_dead_letters(
    ingest: IngestService, *, source: str | None = None, limit: int = 100_000
) -> DeadLetterReplay:
    """Re-ingest unreplayed dead letters (oldest first); mark the ones now stored replayed.

    A record still rejected writes no new letter: its letter stays unreplayed, with this
    attempt's field and reason, for the next replay after the next fix. Records whose
    signature is stored already count as duplicates and are marked too. The rejects of one
    batch share their `received_at`, which bounds what is marked, so `limit` is rounded up
    to the end of the last batch it reaches: a batch is never marked without all of it replayed.
    """
    warehouse = ingest.warehouse
    db = warehouse.database
    unreplayed = f"{db}.dead_letters WHERE NOT replayed AND ({{source:String}} = '' OR source = {{source:String}})"
    async with ingest.replay_lock:
        table = await warehouse.query_arrow(
            f"SELECT raw, received_at, lower(hex(digest)) AS hex_digest FROM {unreplayed} AND received_at <= ("
            f"SELECT max(received_at) FROM (SELECT received_at FROM {unreplayed} ORDER BY received_at LIMIT {{limit:UInt32}})"
            ") ORDER BY received_at",
            {"source": source or "", "limit": limit},
        )
        if table.num_rows == 0:
            return DeadLetterReplay(0, IngestReport(0, 0, 0, []))
        raws: list[bytes] = _with_raw_bytes(table).column("raw").to_pylist()
        digests: list[str] = table.column("hex_digest").cast(pa.string()).to_pylist()
        selected = {
            "source": source or "",
            "cutoff": ch_time(table.column("received_at").to_pylist()[-1]),
            "at": ch_time(datetime.now(UTC)),  # whole ms: the marking compares `at` exactly
        }
        report = await ingest.ingest_records([_as_json(raw) for raw in raws], source=REPLAY_SOURCE, keep_rejects=False)
        # Still rejected first: a crash before the marking leaves stored ones to be found
        # stored by the next replay, never a rejected one hidden as replayed.
        still: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
        for error in report.errors:
            still[(error.field, error.reason)].add(digests[error.index])
        in_selection = (
            "NOT replayed AND ({source:String} = '' OR source = {source:String}) "
            "AND received_at <= {cutoff:DateTime64(3, 'UTC')}"
        )
        for (field, reason), keys in still.items():
            ordered = sorted(keys)
            for start in range(0, len(ordered), _DIGESTS_PER_MUTATION):
                await warehouse.execute(
                    f"ALTER TABLE {warehouse.mutation_target('dead_letters')} UPDATE field = {{field:String}}, "
                    "reason = {reason:String}, replayed_at = {at:DateTime64(3, 'UTC')} "
                    f"WHERE {in_selection} AND has({{digests:Array(String)}}, lower(hex(digest))) "
                    "SETTINGS mutations_sync = 1",
                    {
                        **selected,
                        "field": field,
                        "reason": reason,
                        "digests": ordered[start : start + _DIGESTS_PER_MUTATION],
                    },
                )
        await warehouse.execute(
            f"ALTER TABLE {warehouse.mutation_target('dead_letters')} UPDATE replayed = true, "
            "replayed_at = {at:DateTime64(3, 'UTC')} "
            f"WHERE {in_selection} AND (replayed_at IS NULL OR replayed_at != {{at:DateTime64(3, 'UTC')}}) "
            "SETTINGS mutations_sync = 1",
            selected,
        )
    return DeadLetterReplay(table.num_rows, report)


def _as_json(raw: bytes) -> bytes:
    """A letter as replay re-ingests it: a msgpack record (its first byte a map's) as JSON; any
    other letter as it is, to be rejected again if it still cannot be read."""
    if not raw or not (0x80 <= raw[0] <= 0x8F or raw[0] in (0xDE, 0xDF)):
        return raw
    try:
        return msgspec.json.encode(msgspec.msgpack.decode(raw))
    except (msgspec.DecodeError, TypeError, ValueError):
        return raw


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _with_raw_bytes(table: pa.Table) -> pa.Table:
    """`raw` as bytes: the warehouse hands strings back as UTF-8 text, which binary bodies (Arrow, msgpack) are not."""
    index = table.schema.get_field_index("raw")
    return table.set_column(index, "raw", table.column("raw").cast(pa.binary()))
