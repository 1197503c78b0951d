"""The ingest pipeline on real chdb: once per signature, dead letters, aggregates, admission."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

from arbitrage.errors import Saturated, ValidationError, WarehouseUnavailable
from arbitrage.features import FeatureEngine
from arbitrage.ingest import IngestService
from arbitrage.ingest._decode import decode_body
from arbitrage.ingest._derive import derive
from arbitrage.ingest.kafka import replay_dead_letters
from arbitrage.model import WSOL_MINT
from arbitrage.simulator import Simulator
from arbitrage.storage import EmbeddedWarehouse, SignatureWindow
from arbitrage.stream import RecentTransactions
from tests.conftest import InsertFailsOnce, fresh_data_dir

pytestmark = pytest.mark.anyio


def _service(warehouse: EmbeddedWarehouse, **kwargs: Any) -> IngestService:
    return IngestService(warehouse, RecentTransactions(1000), **kwargs)


async def _count(warehouse: EmbeddedWarehouse, sql: str = "SELECT count() AS n FROM arbitrage.transactions") -> int:
    return int((await warehouse.query_arrow(sql)).column(0)[0].as_py())


async def test_a_duplicate_signature_is_counted_once_across_batches(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]]
) -> None:
    service = _service(warehouse)
    first = await service.ingest_body(msgspec.json.encode(records[:150]), "application/json", source="test")
    second = await service.ingest_body(msgspec.json.encode(records[100:]), "application/json", source="test")
    assert (first.accepted, first.duplicates) == (150, 0)
    assert (second.accepted, second.duplicates) == (50, 50)
    assert await _count(warehouse) == 200


async def test_a_signature_repeated_inside_one_batch_is_stored_once_as_first_sent(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]]
) -> None:
    later_copies = [{**r, "jito_tip_lamports": r["jito_tip_lamports"] + 1} for r in records[:3]]
    report = await _service(warehouse).ingest_body(
        msgspec.json.encode(records[:10] + later_copies), None, source="test"
    )
    assert (report.accepted, report.duplicates) == (10, 3)
    assert await _tips(warehouse) == {r["signature"]: r["jito_tip_lamports"] for r in records[:10]}


async def test_a_signature_in_two_batches_of_one_group_is_stored_as_the_first_batch_sent_it(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]]
) -> None:
    enrich = _FirstEnrichHeld()
    service = _service(warehouse, enrichers=[enrich])
    later_copies = [{**r, "jito_tip_lamports": r["jito_tip_lamports"] + 1} for r in records[15:20]]
    tasks = await _later_batches_as_one_group(
        service, enrich, [records[:10], records[10:20], later_copies + records[20:30]]
    )
    reports = await asyncio.gather(*tasks)
    assert enrich.sizes == [10, 20]  # the two later batches as one group, the repeats left out
    assert [(r.accepted, r.duplicates) for r in reports] == [(10, 0), (10, 0), (10, 5)]
    assert await _tips(warehouse) == {r["signature"]: r["jito_tip_lamports"] for r in records[:30]}


async def _tips(warehouse: EmbeddedWarehouse) -> dict[str, int]:
    table = await warehouse.query_arrow("SELECT signature, jito_tip_lamports FROM arbitrage.transactions")
    return dict(zip(table.column("signature").to_pylist(), table.column("jito_tip_lamports").to_pylist(), strict=True))


class _FirstEnrichHeld:
    """An enricher whose first call waits for `release`: its batch holds the writer meanwhile.

    It records the size of every frame it is given and fails on `fails_on` (a signature).
    """

    def __init__(self, fails_on: str | None = None) -> None:
        self.release = threading.Event()
        self.sizes: list[int] = []
        self.fails_on = fails_on

    def __call__(self, frame: pl.DataFrame) -> pl.DataFrame:
        if not self.sizes:
            self.release.wait(10)
        self.sizes.append(len(frame))
        if self.fails_on is not None and self.fails_on in frame["signature"]:
            raise ZeroDivisionError("a bug this record triggers")
        return frame


async def _later_batches_as_one_group(
    service: IngestService, enrich: _FirstEnrichHeld, batches: list[list[dict[str, Any]]]
) -> list[asyncio.Task[Any]]:
    """Ingest the first batch, and the others while its prepare holds the writer, so they queue as one group."""

    def ingest(batch: list[dict[str, Any]]) -> asyncio.Task[Any]:
        return asyncio.create_task(service.ingest_body(msgspec.json.encode(batch), None, source="test"))

    tasks = [ingest(batches[0])]
    await _until(lambda: not service._queued and service._writer.locked())
    tasks += [ingest(batch) for batch in batches[1:]]
    await _until(lambda: len(service._queued) == len(batches) - 1)
    enrich.release.set()
    return tasks


async def test_a_duplicate_is_counted_once_across_restarts(tmp_path: Path, records: list[dict[str, Any]]) -> None:
    for _ in range(2):
        store = EmbeddedWarehouse(tmp_path / "wh")
        await store.start()
        await _service(store).ingest_body(msgspec.json.encode(records), None, source="test")
        stored = await _count(store)
        await store.close()
    assert stored == len(records)


async def test_rejected_records_become_dead_letters_with_their_raw_bytes(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]]
) -> None:
    records[4]["slot"] = 0
    records[9]["legs"][0]["amount_in"] = -1
    report = await _service(warehouse).ingest_body(msgspec.json.encode(records), None, source="test")
    assert (report.accepted, report.rejected) == (len(records) - 2, 2)
    assert [(e.index, e.field) for e in report.errors] == [(4, "slot"), (9, "legs[0].amount_in")]
    letters = (
        await warehouse.query_arrow("SELECT record_index, field, raw FROM arbitrage.dead_letters ORDER BY record_index")
    ).to_pylist()
    assert [(r["record_index"], r["field"]) for r in letters] == [(4, "slot"), (9, "legs[0].amount_in")]
    assert msgspec.json.decode(letters[0]["raw"])["signature"] == records[4]["signature"]


async def test_with_a_retention_older_transactions_are_refused_naming_it(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]]
) -> None:
    """Stored, they would be dropped by the next TTL merge, and counted twice in their day's aggregates."""
    ten_days = 10 * 86_400
    for old in (records[2], records[7]):
        old["block_time"] -= ten_days * 1000
        old["slot"] -= 4 * ten_days  # stays within the slot rule for its block time
    records[5]["slot"] = 0
    report = await _service(warehouse, retention_days=7).ingest_body(msgspec.json.encode(records), None, source="t")
    assert (report.accepted, report.rejected) == (len(records) - 3, 3)
    assert [(e.index, e.field) for e in report.errors] == [(2, "block_time"), (5, "slot"), (7, "block_time")]
    assert "storage.retention_days" in report.errors[0].reason
    letters = (
        await warehouse.query_arrow("SELECT record_index, raw FROM arbitrage.dead_letters ORDER BY record_index")
    ).to_pylist()
    assert [r["record_index"] for r in letters] == [2, 5, 7]
    assert msgspec.json.decode(letters[0]["raw"])["signature"] == records[2]["signature"]
    stored = await warehouse.query_arrow("SELECT signature FROM arbitrage.transactions")
    assert records[2]["signature"] not in stored.column("signature").to_pylist()
    # Without a retention the same transactions are stored.
    again = await _service(warehouse).ingest_body(msgspec.json.encode([records[2]]), None, source="t")
    assert again.accepted == 1


async def test_a_replay_limit_that_cuts_through_a_batch_of_dead_letters_loses_none(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]]
) -> None:
    """One batch's rejects share their received_at; replays in small steps must still re-ingest each once."""
    for record in records[:30]:
        record["slot"] = 0  # rejected now; fixed below, as an operator would fix the cause
    service = _service(warehouse)
    report = await service.ingest_body(msgspec.json.encode(records), None, source="test")
    assert report.rejected == 30
    await warehouse.execute(
        "ALTER TABLE arbitrage.dead_letters UPDATE raw = replaceOne(raw, '\"slot\":0', '\"slot\":7') "
        "WHERE 1 SETTINGS mutations_sync = 1"
    )
    replayed, stored = 0, 0
    for _ in range(40):
        step = await replay_dead_letters(service, source="test", limit=7)
        if not step.replayed:
            break
        replayed, stored = replayed + step.replayed, stored + step.report.accepted
    assert (replayed, stored) == (30, 30)
    assert await _count(warehouse) == len(records)


async def test_a_msgpack_record_keeps_its_own_bytes_as_its_dead_letter_and_replays(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]]
) -> None:
    """The letter is the record as sent (its unknown fields too), not a JSON re-encoding; replay reads it."""
    signature = records[1]["signature"]
    records[1]["signature"] = "0" + signature[1:]  # '0' is not base58: a rule breaks, not a type
    records[1]["note"] = "keep-me"
    service = _service(warehouse)
    report = await service.ingest_body(msgspec.msgpack.encode(records[:3]), "application/msgpack", source="mp")
    assert [(e.index, e.field) for e in report.errors] == [(1, "signature")]
    letters = await warehouse.query_arrow("SELECT raw FROM arbitrage.dead_letters WHERE source = 'mp'")
    assert letters.column("raw").cast(pa.binary()).to_pylist() == [msgspec.msgpack.encode(records[1])]
    await warehouse.execute(  # the operator's fix, in the msgpack bytes
        "ALTER TABLE arbitrage.dead_letters UPDATE raw = replaceOne(raw, {bad:String}, {good:String}) "
        "WHERE source = 'mp' SETTINGS mutations_sync = 1",
        {"bad": records[1]["signature"], "good": signature},
    )
    replay = await replay_dead_letters(service, source="mp")
    assert (replay.replayed, replay.report.accepted, replay.report.rejected) == (1, 1, 0)


async def _letters(warehouse: EmbeddedWarehouse) -> list[dict[str, Any]]:
    table = await warehouse.query_arrow(
        "SELECT source, field, reason, replayed, replayed_at FROM arbitrage.dead_letters ORDER BY received_at, record_index"
    )
    return table.to_pylist()


async def test_a_batch_sent_again_keeps_one_dead_letter_per_bad_record(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]]
) -> None:
    """A client resending after a 503 or a dropped connection, Kafka re-reading uncommitted offsets."""
    records[3]["slot"] = 0
    body = msgspec.json.encode([*records[:10], records[3]])  # the bad record twice in one batch, too
    service = _service(warehouse)
    for _ in range(3):
        report = await service.ingest_body(body, None, source="test")
        assert [e.index for e in report.errors] == [3, 10]
    with pytest.raises(ValidationError):
        await service.ingest_body(b"not json", None, source="test")
    with pytest.raises(ValidationError):
        await service.ingest_body(b"not json", None, source="test")
    assert [(r["source"], r["field"]) for r in await _letters(warehouse)] == [("test", "slot"), ("test", "$")]
    await service.ingest_body(body, None, source="other")  # another source keeps its own letter
    assert len(await _letters(warehouse)) == 3


async def test_a_replay_after_a_partial_fix_marks_the_stored_and_keeps_one_letter_of_the_still_bad(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]]
) -> None:
    records[0]["slot"] = 0
    records[1]["fee_lamports"] = -1
    service = _service(warehouse)
    await service.ingest_body(msgspec.json.encode(records[:5]), None, source="test")
    # The fix covers the slot only; the other record breaks another rule than before.
    await warehouse.execute(
        "ALTER TABLE arbitrage.dead_letters UPDATE raw = replaceOne(raw, '\"slot\":0', '\"slot\":7') "
        "WHERE field = 'slot' SETTINGS mutations_sync = 1"
    )
    await warehouse.execute(
        "ALTER TABLE arbitrage.dead_letters UPDATE raw = '{broken' WHERE field = 'fee_lamports' "
        "SETTINGS mutations_sync = 1"
    )
    first = await replay_dead_letters(service, source="test")
    assert (first.replayed, first.report.accepted, first.report.rejected) == (2, 1, 1)
    letters = await _letters(warehouse)
    assert [(r["source"], r["field"], r["replayed"]) for r in letters] == [("test", "slot", True), ("test", "$", False)]
    assert all(r["replayed_at"] is not None for r in letters)
    second = await replay_dead_letters(service, source="test")
    assert (second.replayed, second.report.accepted, second.report.rejected) == (1, 0, 1)
    assert len(await _letters(warehouse)) == 2
    # The stored record's letter is not re-ingested: only the still-bad one is left to replay.
    assert await _count(warehouse) == 4


async def test_an_unreadable_body_is_refused_and_kept_as_a_dead_letter(warehouse: EmbeddedWarehouse) -> None:
    with pytest.raises(ValidationError):
        await _service(warehouse).ingest_body(b"definitely not json", "application/json", source="test")
    assert await _count(warehouse) == 0
    assert await _count(warehouse, "SELECT count() FROM arbitrage.dead_letters WHERE raw = 'definitely not json'") == 1


async def test_daily_stats_view_matches_a_scan_of_the_table(warehouse: EmbeddedWarehouse) -> None:
    service = _service(warehouse)
    simulator = Simulator(seed=11)
    for _ in range(3):
        await service.ingest_body(simulator.ndjson(400), "application/x-ndjson", source="test")
    view = (
        await warehouse.query_arrow(
            "SELECT sum(transactions) AS n, sum(net_profit_sol) AS p, sum(profitable) AS w FROM arbitrage.daily_aggregates WHERE kind = 'all'"
        )
    ).to_pylist()[0]
    scan = (
        await warehouse.query_arrow(
            "SELECT count() AS n, sum(ifNull(net_profit_sol, 0)) AS p, countIf(net_profit_sol > 0) AS w FROM arbitrage.transactions"
        )
    ).to_pylist()[0]
    assert view["n"] == scan["n"] == 1200
    assert view["w"] == scan["w"]
    assert view["p"] == pytest.approx(scan["p"])


async def test_ingest_refuses_with_saturated_when_too_many_batches_wait(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]]
) -> None:
    service = _service(warehouse, max_pending_batches=1)
    bodies = [msgspec.json.encode(records[i * 50 : (i + 1) * 50]) for i in range(3)]
    results = await asyncio.gather(
        *(service.ingest_body(b, None, source="test") for b in bodies), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, Saturated)]
    stored = [r for r in results if not isinstance(r, BaseException)]
    assert refused and stored
    assert await _count(warehouse) == sum(r.accepted for r in stored)
    assert service.pending == 0


async def test_stored_batches_reach_the_recent_buffer_newest_first(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]]
) -> None:
    service = _service(warehouse)
    await service.ingest_body(msgspec.json.encode(records), None, source="test")
    page = service.recent.page(5)
    assert page is not None
    newest = sorted(records, key=lambda r: (r["block_time"], r["signature"]), reverse=True)[:5]
    assert [msgspec.json.decode(p)["signature"] for p in page] == [r["signature"] for r in newest]


async def test_concurrent_batches_share_inserts_and_still_store_each_signature_once(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]]
) -> None:
    service = _service(warehouse)
    bodies = [msgspec.json.encode(records[i : i + 80]) for i in (0, 40, 80, 120, 0)]
    reports = await asyncio.gather(*(service.ingest_body(b, None, source="test") for b in bodies))
    assert sum(r.accepted for r in reports) == 200
    assert sum(r.accepted + r.duplicates for r in reports) == 5 * 80
    assert await _count(warehouse) == 200
    inserts = (
        (await warehouse.query_arrow("SELECT count() FROM system.parts WHERE table = 'transactions' AND active"))
        .column(0)[0]
        .as_py()
    )
    assert inserts < 5


async def test_a_group_prepared_while_another_is_inserted_skips_the_signatures_in_flight(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]]
) -> None:
    # One batch per group, so each group is deduplicated while the one before it is written.
    service = _service(warehouse, max_group_rows=1, max_pending_batches=64)
    starts = [0, 30, 60, 90, 120] * 4
    bodies = [msgspec.json.encode(records[i : i + 60]) for i in starts]
    reports = await asyncio.gather(*(service.ingest_body(b, None, source="test") for b in bodies))
    unique = len({r["signature"] for i in starts for r in records[i : i + 60]})
    assert sum(r.accepted for r in reports) == unique
    assert sum(r.accepted + r.duplicates for r in reports) == 60 * len(starts)
    assert await _count(warehouse) == unique
    assert not service._in_flight


class _LookUpOutlivedByInsert(EmbeddedWarehouse):
    """Reads the table for a dedup look-up, then answers only once the inserts in flight returned."""

    service: IngestService | None = None

    async def known_signatures(self, signatures: pa.Array, window: SignatureWindow) -> set[str]:
        known = await super().known_signatures(signatures, window)
        if self.service is not None and self.service._inserting is not None:
            await asyncio.wait([self.service._inserting])
        return known


async def test_an_insert_returning_during_a_dedup_look_up_still_has_its_signatures_skipped(
    tmp_path: Path, migrated_template: Path, records: list[dict[str, Any]]
) -> None:
    warehouse = _LookUpOutlivedByInsert(fresh_data_dir(migrated_template, tmp_path / "warehouse"))
    await warehouse.start()
    try:
        service = warehouse.service = _service(warehouse, max_group_rows=1)
        first, second = await asyncio.gather(
            service.ingest_body(msgspec.json.encode(records[:100]), None, source="test"),
            service.ingest_body(msgspec.json.encode(records[50:150]), None, source="test"),
        )
        assert (first.accepted, second.accepted, second.duplicates) == (100, 50, 50)
        assert await _count(warehouse) == 150
    finally:
        await warehouse.close()


class _FirstInsertFails(EmbeddedWarehouse):
    """Fails the first insert of transactions while the next group is being prepared, or once it is prepared."""

    service: IngestService
    fail_when: str
    look_ups = 0
    failed = False

    async def known_signatures(self, signatures: pa.Array, window: SignatureWindow) -> set[str]:
        known = await super().known_signatures(signatures, window)
        self.look_ups += 1
        if self.look_ups == 2 and self.fail_when == "preparing":
            self.released = asyncio.Event()
            await self.released.wait()  # the next group's look-up returns after the insert failed
        return known

    async def insert_arrow(self, table: str, data: pa.Table) -> None:
        if table == "transactions" and not self.failed:
            self.failed = True
            for _ in range(2000):  # until the next group got that far
                if self.look_ups >= 2 and (self.fail_when == "preparing" or self.service._prepared):
                    break
                await asyncio.sleep(0.005)
            if self.fail_when == "preparing":
                asyncio.get_running_loop().call_soon(self.released.set)
            raise WarehouseUnavailable("disk full")
        await super().insert_arrow(table, data)


@pytest.mark.parametrize("fail_when", ["preparing", "prepared"])
async def test_a_batch_deduplicated_against_an_insert_that_failed_is_sent_back_not_counted_as_duplicates(
    tmp_path: Path, migrated_template: Path, records: list[dict[str, Any]], fail_when: str
) -> None:
    warehouse = _FirstInsertFails(fresh_data_dir(migrated_template, tmp_path / "warehouse"))
    warehouse.fail_when = fail_when
    await warehouse.start()
    try:
        service = warehouse.service = _service(warehouse, max_group_rows=1, insert_linger_seconds=0)
        first, second = msgspec.json.encode(records[:100]), msgspec.json.encode(records[50:150])
        outcomes = await asyncio.gather(
            service.ingest_body(first, None, source="test"),
            service.ingest_body(second, None, source="test"),
            return_exceptions=True,
        )
        assert [type(outcome) for outcome in outcomes] == [WarehouseUnavailable, WarehouseUnavailable]
        assert "send it again" in str(outcomes[1])
        again = await service.ingest_body(second, None, source="test")
        assert (again.accepted, again.duplicates) == (100, 0)
        assert not service._in_flight and not service._failed_inserts
        assert await _count(warehouse) == 100
    finally:
        await warehouse.close()


@pytest.mark.parametrize("scan_rows", [50_000, 1], ids=["window-read-whole", "window-too-dense-probed"])
async def test_dedup_finds_exactly_the_stored_signatures_of_a_batch(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]], scan_rows: int
) -> None:
    await _service(warehouse).ingest_body(msgspec.json.encode(records[:150]), None, source="test")
    warehouse.dedup_scan_rows = scan_rows
    candidates = [r["signature"] for r in records[140:160]]
    times = [datetime.fromtimestamp(r["block_time"] / 1000, UTC) for r in records]
    slots = [r["slot"] for r in records]
    window = SignatureWindow(min(times), max(times), min(slots), max(slots))
    found = await warehouse.known_signatures(pa.array(candidates), window)
    assert found == {r["signature"] for r in records[140:150]}


@pytest.mark.parametrize("scan_rows", [50_000, 1], ids=["window-read-whole", "window-too-dense-probed"])
async def test_a_signature_sent_again_with_another_block_time_is_a_duplicate(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]], scan_rows: int
) -> None:
    """Sources disagree on block times (seconds against milliseconds, clocks); never on slots."""
    warehouse.dedup_scan_rows = scan_rows
    service = _service(warehouse)
    await service.ingest_body(msgspec.json.encode(records[:100]), None, source="test")
    shifts = (1, 999, 60_000, -5_000, 20 * 60_000, -3 * 3_600_000, -2 * 86_400_000)
    for record, shift in zip(records[90 : 90 + len(shifts)], shifts, strict=True):
        again = {**record, "block_time": record["block_time"] + shift}
        report = await service.ingest_body(msgspec.json.encode([again]), None, source="test")
        assert (report.accepted, report.duplicates) == (0, 1), shift
    assert await _count(warehouse) == 100


class _HeldFirstInsert:
    """The real warehouse, except that the first transactions insert waits for `release`."""

    def __init__(self, inner: EmbeddedWarehouse) -> None:
        self.inner = inner
        self.inserted_rows: list[int] = []
        self.release = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def insert_arrow(self, table: str, data: Any) -> None:
        if table == "transactions":
            self.inserted_rows.append(data.num_rows)
            if len(self.inserted_rows) == 1:
                await self.release.wait()
        await self.inner.insert_arrow(table, data)


async def _until(condition: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def _groups_behind_a_held_insert(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]], groups: int
) -> tuple[_HeldFirstInsert, IngestService, list[asyncio.Task[Any]]]:
    """A 50-row batch whose insert is held, and `groups` 50-row batches prepared behind it."""
    held = _HeldFirstInsert(warehouse)
    service = IngestService(held, RecentTransactions(1000))  # type: ignore[arg-type]

    def ingest(start: int) -> asyncio.Task[Any]:
        body = msgspec.json.encode(records[start : start + 50])
        return asyncio.create_task(service.ingest_body(body, None, source="test"))

    tasks = [ingest(0)]
    await _until(lambda: held.inserted_rows)
    for i in range(groups):  # one at a time: batches that queue together would make one group
        tasks.append(ingest(50 * (i + 1)))
        await _until(lambda: len(service._prepared) == i + 1)  # noqa: B023 (awaited before i changes)
    return held, service, tasks


async def test_groups_prepared_during_an_insert_are_stored_together_by_the_next_one(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]]
) -> None:
    held, service, tasks = await _groups_behind_a_held_insert(warehouse, records, 3)
    held.release.set()
    reports = await asyncio.gather(*tasks)
    assert held.inserted_rows == [50, 150]
    assert [r.accepted for r in reports] == [50, 50, 50, 50]
    assert await _count(warehouse) == 200
    assert not service._in_flight


async def test_a_batch_that_breaks_an_enricher_fails_alone_not_the_batches_grouped_with_it(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]]
) -> None:
    enrich = _FirstEnrichHeld(fails_on=records[70]["signature"])
    service = _service(warehouse, enrichers=[enrich])
    tasks = await _later_batches_as_one_group(service, enrich, [records[0:50], records[50:100], records[100:150]])
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert enrich.sizes == [50, 100, 50, 50]  # tried as one group, then batch by batch
    assert isinstance(results[1], ZeroDivisionError)
    assert [r.accepted for r in (results[0], results[2])] == [50, 50]  # type: ignore[union-attr]
    assert await _count(warehouse) == 100
    assert not service._in_flight


async def test_rows_are_stamped_ingested_when_their_insert_starts_not_when_they_were_derived(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]]
) -> None:
    """An incremental export reads `ingested_at <= now - lag`: a row must not carry a time long before it is visible."""
    held, _, tasks = await _groups_behind_a_held_insert(warehouse, records, 2)
    await asyncio.sleep(1.0)  # the groups behind wait, derived and prepared
    released = datetime.now(UTC)
    held.release.set()
    await asyncio.gather(*tasks)
    stamps = (
        await warehouse.query_arrow(
            "SELECT ingested_at, count() AS n FROM arbitrage.transactions GROUP BY ingested_at ORDER BY ingested_at"
        )
    ).to_pylist()
    assert [row["n"] for row in stamps] == [50, 100]  # one stamp per insert
    assert stamps[0]["ingested_at"] < released <= stamps[1]["ingested_at"] + timedelta(milliseconds=1)


async def test_batches_are_stored_in_the_order_they_were_admitted_even_when_a_later_one_decodes_first(
    warehouse: EmbeddedWarehouse,
) -> None:
    """Features see batches in order: a small batch overtaking a big earlier one would make the big one's rows late."""
    records = Simulator(seed=41).records(20_010)
    encoder = msgspec.json.Encoder()
    service = _service(warehouse, enrichers=[FeatureEngine().process])
    big = asyncio.create_task(service.ingest_records([encoder.encode(r) for r in records[:20_000]], source="test"))
    await asyncio.sleep(0)  # admitted first
    small = asyncio.create_task(service.ingest_records([encoder.encode(r) for r in records[20_000:]], source="test"))
    reports = await asyncio.gather(big, small)
    assert [r.accepted for r in reports] == [20_000, 10]
    late = await _count(warehouse, "SELECT countIf(late) FROM arbitrage.transactions")
    assert late == 0


async def test_a_failed_insert_fails_every_group_it_held_and_the_next_insert_still_runs(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]]
) -> None:
    held, service, tasks = await _groups_behind_a_held_insert(warehouse, records, 2)
    await warehouse.execute("RENAME TABLE arbitrage.transactions TO arbitrage.transactions_away")
    held.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, Exception) for r in results)
    await warehouse.execute("RENAME TABLE arbitrage.transactions_away TO arbitrage.transactions")
    retried = await service.ingest_body(msgspec.json.encode(records[:150]), None, source="test")
    assert retried.accepted == 150
    assert await _count(warehouse) == 150
    assert not service._in_flight


async def test_aggregates_left_short_by_an_interrupted_insert_are_rebuilt_at_start_up(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]]
) -> None:
    from arbitrage.storage import rebuild_daily_aggregates

    await _service(warehouse).ingest_body(msgspec.json.encode(records), None, source="test")

    async def snapshot() -> list[dict[str, Any]]:
        found = await warehouse.query_arrow("SELECT * FROM arbitrage.daily_aggregates FINAL ORDER BY ALL")
        return found.to_pylist()

    before = await snapshot()
    assert {row["kind"] for row in before} == {"all", "dex", "token", "signer"}
    # What a kill -9 between the table write and the view's write leaves behind:
    await warehouse.execute("TRUNCATE TABLE arbitrage.daily_aggregates")
    assert await rebuild_daily_aggregates(warehouse)
    after = await snapshot()
    assert len(after) == len(before)
    for row_was, row_now in zip(before, after, strict=True):
        assert row_now == pytest.approx(row_was)
    assert await rebuild_daily_aggregates(warehouse) == []


async def test_under_load_an_insert_waits_for_the_batches_already_admitted(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]]
) -> None:
    held = _HeldFirstInsert(warehouse)
    held.release.set()
    service = IngestService(
        held,  # type: ignore[arg-type]
        RecentTransactions(1000),
        insert_min_rows=10_000,
        insert_linger_seconds=30,
    )
    bodies = [msgspec.json.encode(records[i : i + 50]) for i in range(0, 200, 50)]
    reports = await asyncio.gather(*(service.ingest_body(b, None, source="test") for b in bodies))
    assert [r.accepted for r in reports] == [50, 50, 50, 50]
    # The first insert waited until no more batches were on their way than were ready.
    assert held.inserted_rows[0] >= 100
    assert sum(held.inserted_rows) == 200
    assert await _count(warehouse) == 200


async def test_a_lone_batch_is_inserted_without_waiting_for_the_linger(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]]
) -> None:
    service = _service(warehouse, insert_min_rows=10_000, insert_linger_seconds=600)
    report = await asyncio.wait_for(service.ingest_body(msgspec.json.encode(records), None, source="test"), 60)
    assert report.accepted == len(records)
    rejected_only = [{**records[0], "slot": 0}]
    report = await asyncio.wait_for(service.ingest_body(msgspec.json.encode(rejected_only), None, source="test"), 60)
    assert report.rejected == 1
    follow_up = await asyncio.wait_for(service.ingest_body(msgspec.json.encode(records[:1]), None, source="test"), 60)
    assert follow_up.duplicates == 1


async def test_a_batch_of_break_even_transactions_alone_is_stored_and_counted_by_the_daily_views(
    warehouse: EmbeddedWarehouse,
) -> None:
    """Gross revenue 0 made a row's SOL volume 0/0 = NULL in `daily_stats_mv`: a day whose rows in one
    insert were all like that summed to NULL, which `daily_stats` refuses, so the whole insert failed."""
    records = [r for r in Simulator(seed=12).records(200) if r["legs"][0]["token_in"] == WSOL_MINT][:3]
    for record in records:
        record["legs"][-1]["amount_out"] = record["legs"][0]["amount_in"]
    report = await _service(warehouse).ingest_body(msgspec.json.encode(records), None, source="test")
    assert (report.accepted, report.rejected) == (3, 0)
    daily = await warehouse.query_arrow(
        "SELECT sum(transactions) AS n, sum(volume_sol) AS v, sum(gross_revenue_sol) AS g FROM arbitrage.daily_aggregates WHERE kind = 'all'"
    )
    assert daily.to_pylist() == [{"n": 3, "v": 0.0, "g": 0.0}]


async def test_a_caller_cancelled_while_its_rows_are_inserted_still_has_them_published(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]]
) -> None:
    """A client that hangs up (or a stopping consumer) must not leave stored rows that the live
    feed, the caches and the newest-rows buffer never heard of."""
    held = _HeldFirstInsert(warehouse)
    service = IngestService(held, RecentTransactions(1000))  # type: ignore[arg-type]
    published: list[int] = []

    async def listener(stored: pl.DataFrame) -> None:
        published.append(len(stored))

    service.on_stored(listener)
    caller = asyncio.create_task(service.ingest_body(msgspec.json.encode(records[:50]), None, source="test"))
    await _until(lambda: held.inserted_rows)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    held.release.set()
    await service.drain()
    assert published == [50]
    assert len(service.recent) == 50
    assert await _count(warehouse) == 50


_WINDOWED = [
    "trades_1m",
    "volume_1m",
    "trades_5m",
    "competitors_same_slot",
    "time_since_pair_prev_s",
    "signer_tx_count_5m",
    "late",
]
"""Features that count the rows a window holds: a row seen twice by the engine changes them."""


def _features_of_stored_rows_alone(*batches: list[dict[str, Any]]) -> pl.DataFrame:
    """What a fresh engine gives the last batch after only the stored ones before it."""
    engine = FeatureEngine()
    for batch in batches:
        features = engine.process(derive(decode_body(msgspec.json.encode(batch), "json").frame, source="test"))
    return features.select("signature", *_WINDOWED).sort("signature")


async def _stored_features(warehouse: EmbeddedWarehouse, batch: list[dict[str, Any]]) -> pl.DataFrame:
    columns = ", ".join(["signature", *_WINDOWED])
    table = await warehouse.query_arrow(
        f"SELECT {columns} FROM arbitrage.transactions WHERE signature IN {{s:Array(String)}}",
        {"s": [r["signature"] for r in batch]},
    )
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame.sort("signature")


async def test_a_batch_whose_insert_failed_is_not_counted_twice_by_the_features_when_sent_again(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]]
) -> None:
    flaky = InsertFailsOnce(warehouse)
    service = IngestService(flaky, RecentTransactions(1000), enrichers=[FeatureEngine()])  # type: ignore[arg-type]
    first, second = records[:100], records[100:200]
    with pytest.raises(WarehouseUnavailable):
        await service.ingest_body(msgspec.json.encode(first), None, source="test")
    assert (await service.ingest_body(msgspec.json.encode(first), None, source="test")).accepted == 100
    assert (await service.ingest_body(msgspec.json.encode(second), None, source="test")).accepted == 100
    for batches in ([first], [first, second]):
        expected = _features_of_stored_rows_alone(*batches)
        assert_frame_equal(await _stored_features(warehouse, batches[-1]), expected, check_dtypes=False)


async def test_a_group_that_breaks_an_enricher_after_the_features_leaves_them_only_the_stored_batches(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]]
) -> None:
    enrich = _FirstEnrichHeld(fails_on=records[70]["signature"])
    service = _service(warehouse, enrichers=[FeatureEngine(), enrich])
    tasks = await _later_batches_as_one_group(service, enrich, [records[0:50], records[50:100], records[100:150]])
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[1], ZeroDivisionError)
    expected = _features_of_stored_rows_alone(records[0:50], records[100:150])
    assert_frame_equal(await _stored_features(warehouse, records[100:150]), expected, check_dtypes=False)


async def test_a_group_enriched_after_the_insert_it_was_deduplicated_against_failed_is_forgotten_too(
    tmp_path: Path, migrated_template: Path, records: list[dict[str, Any]]
) -> None:
    """Its look-up ran while that insert was in flight, its enrichment after the insert failed: it fails as well."""
    warehouse = _FirstInsertFails(fresh_data_dir(migrated_template, tmp_path / "warehouse"))
    warehouse.fail_when = "preparing"
    await warehouse.start()
    try:
        service = warehouse.service = _service(
            warehouse, max_group_rows=1, insert_linger_seconds=0, enrichers=[FeatureEngine()]
        )
        first, second = records[:100], records[50:150]
        outcomes = await asyncio.gather(
            service.ingest_body(msgspec.json.encode(first), None, source="test"),
            service.ingest_body(msgspec.json.encode(second), None, source="test"),
            return_exceptions=True,
        )
        assert [type(outcome) for outcome in outcomes] == [WarehouseUnavailable, WarehouseUnavailable]
        assert (await service.ingest_body(msgspec.json.encode(second), None, source="test")).accepted == 100
        expected = _features_of_stored_rows_alone(second)
        assert_frame_equal(await _stored_features(warehouse, second), expected, check_dtypes=False)
    finally:
        await warehouse.close()


async def test_the_profit_metric_adds_each_profitable_row_however_the_records_are_batched(
    warehouse: EmbeddedWarehouse, records: list[dict[str, Any]]
) -> None:
    """A batch whose net was negative added nothing, its profitable rows included."""
    from arbitrage.telemetry import METRICS

    def metric() -> float:
        return METRICS.registry.get_sample_value("arbitrage_profit_total_sol") or 0.0

    service = _service(warehouse)
    before = metric()
    for start in range(0, len(records), 10):
        await service.ingest_body(msgspec.json.encode(records[start : start + 10]), None, source="test")
    stored = await warehouse.query_arrow(
        "SELECT countIf(net_profit_sol < 0) AS losses, sumIf(net_profit_sol, net_profit_sol > 0) AS profit "
        "FROM arbitrage.transactions"
    )
    assert stored.column("losses")[0].as_py() > 0  # batches with a negative net among them
    assert metric() - before == pytest.approx(stored.column("profit")[0].as_py())
