"""The embedded warehouse on real chdb: migrations, ownership, persistence."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from arbitrage.errors import MigrationError, WarehouseLocked, WarehouseUnavailable
from arbitrage.features import HISTORY_COLUMNS
from arbitrage.model import STORED_COLUMNS
from arbitrage.storage import EmbeddedWarehouse, TransactionReader, discover, migrations_dir, render
from tests.conftest import migrations_before
from tests.integration.export.conftest import transactions

pytestmark = pytest.mark.anyio


async def test_migrations_create_every_column_the_model_declares(warehouse: EmbeddedWarehouse) -> None:
    table = await warehouse.query_arrow(
        "SELECT name, type FROM system.columns WHERE database = 'arbitrage' AND table = 'transactions'"
    )
    stored = dict(zip(table.column("name").to_pylist(), table.column("type").to_pylist(), strict=True))
    for column in STORED_COLUMNS:
        assert column.name in stored, f"{column.name} is in model.py but not in the transactions table"
        assert stored[column.name] == column.clickhouse_type, column.name


async def test_each_migration_is_applied_once_and_recorded(tmp_path: Path) -> None:
    for _ in range(2):
        store = EmbeddedWarehouse(tmp_path / "wh")
        await store.start()
        rows = (
            await store.query_arrow("SELECT version, name FROM arbitrage.schema_migrations ORDER BY version")
        ).to_pylist()
        await store.close()
    assert [(r["version"], r["name"]) for r in rows] == [(m.version, m.name) for m in discover(migrations_dir())]


async def test_a_failing_migration_stops_start_up_naming_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "001_ok.sql").write_text("CREATE TABLE ${db}.ok (x UInt8) ENGINE = MergeTree ORDER BY x;\n")
    (folder / "002_broken.sql").write_text("CREATE TABLE ${db}.broken (x NoSuchType) ENGINE = MergeTree ORDER BY x;\n")
    store = EmbeddedWarehouse(tmp_path / "wh", migrations=folder)
    with pytest.raises(MigrationError, match=r"002_broken\.sql.*NoSuchType"):
        await store.start()
    (folder / "002_broken.sql").unlink()
    fixed = EmbeddedWarehouse(tmp_path / "wh", migrations=folder)
    await fixed.start()  # 001 has no IF NOT EXISTS: applying it twice would fail here
    applied = await fixed.query_arrow("SELECT version FROM arbitrage.schema_migrations")
    await fixed.close()
    assert applied.column("version").to_pylist() == [1]


async def test_a_second_process_on_the_same_data_dir_gets_a_clear_error(warehouse: EmbeddedWarehouse) -> None:
    script = (
        "import asyncio, sys\n"
        "from arbitrage.storage import EmbeddedWarehouse\n"
        "from arbitrage.errors import WarehouseLocked\n"
        f"w = EmbeddedWarehouse({str(warehouse.data_dir)!r})\n"
        "try:\n    asyncio.run(w.start())\nexcept WarehouseLocked as e:\n    print(e); sys.exit(3)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr
    assert "in use by pid" in result.stdout


async def test_the_same_process_cannot_open_a_data_dir_twice(warehouse: EmbeddedWarehouse) -> None:
    with pytest.raises(WarehouseLocked):
        await EmbeddedWarehouse(warehouse.data_dir).start()


async def test_close_waits_for_a_running_query_before_letting_go_of_the_data_dir(tmp_path: Path) -> None:
    """Until then chdb stays open on the path: the lock must not be released, nor another path opened."""
    first = EmbeddedWarehouse(tmp_path / "first")
    await first.start()
    slow = asyncio.create_task(first.query_arrow("SELECT sleepEachRow(0.25) FROM numbers(4)"))
    await asyncio.sleep(0.3)
    await first.close()
    assert slow.done()
    assert (await slow).num_rows == 4
    with pytest.raises(WarehouseUnavailable):
        await first.query_arrow("SELECT 1")
    second = EmbeddedWarehouse(tmp_path / "second")
    await second.start()
    await second.close()


async def test_rows_survive_a_restart(tmp_path: Path) -> None:
    store = EmbeddedWarehouse(tmp_path / "wh")
    await store.start()
    await store.execute("CREATE TABLE arbitrage.kv (k String, v UInt64) ENGINE = MergeTree ORDER BY k")
    await store.insert_arrow("kv", pa.table({"k": ["a", "b"], "v": pa.array([1, 2], pa.uint64())}))
    await store.close()
    reopened = EmbeddedWarehouse(tmp_path / "wh")
    await reopened.start()
    rows = (await reopened.query_arrow("SELECT k, v FROM arbitrage.kv ORDER BY k")).to_pylist()
    await reopened.close()
    assert rows == [{"k": "a", "v": 1}, {"k": "b", "v": 2}]


async def test_streamed_results_arrive_in_bounded_batches(warehouse: EmbeddedWarehouse) -> None:
    sizes = [b.num_rows async for b in warehouse.stream_arrow("SELECT number FROM numbers(250000)", batch_rows=50_000)]
    assert sum(sizes) == 250_000
    assert len(sizes) > 1
    assert max(sizes) <= 150_000


async def test_a_streamed_result_is_read_by_one_thread_so_its_memory_does_not_grow_with_rows(
    warehouse: EmbeddedWarehouse,
) -> None:
    sql = "SELECT getSetting('max_threads') AS threads, getSetting('max_block_size') AS block_rows"
    streamed = [b async for b in warehouse.stream_arrow(sql)]
    assert streamed[0].to_pylist() == [{"threads": 1, "block_rows": 4096}]


async def test_query_parameters_are_bound_not_spliced(warehouse: EmbeddedWarehouse) -> None:
    hostile = "x'; DROP TABLE arbitrage.transactions; --"
    result = await warehouse.query_arrow("SELECT {v:String} AS v", {"v": hostile})
    assert result.column("v").to_pylist() == [hostile]
    tables = await warehouse.query_arrow(
        "SELECT name FROM system.tables WHERE database = 'arbitrage' AND name = 'transactions'"
    )
    assert tables.num_rows == 1


async def test_concurrent_parameterised_queries_each_get_their_own_values(warehouse: EmbeddedWarehouse) -> None:
    async def echo(n: int) -> list[int]:
        table = await warehouse.query_arrow(
            "SELECT {n:UInt32} AS n, {s:String} AS s FROM numbers(3)", {"n": n, "s": f"v{n}"}
        )
        assert table.column("s").to_pylist() == [f"v{n}"] * 3
        return table.column("n").to_pylist()

    results = await asyncio.gather(*(echo(n) for n in range(40)))
    assert results == [[n] * 3 for n in range(40)]


async def test_several_results_stream_at_once_beside_other_queries(warehouse: EmbeddedWarehouse) -> None:
    async def total(n: int) -> int:
        rows = 0
        async for batch in warehouse.stream_arrow(
            "SELECT number FROM numbers({n:UInt32})", {"n": n}, batch_rows=20_000
        ):
            rows += batch.num_rows
            await warehouse.query_arrow("SELECT 1")
        return rows

    assert await asyncio.gather(*(total(100_000 + i) for i in range(4))) == [100_000 + i for i in range(4)]


async def _merge_selector_base(warehouse: EmbeddedWarehouse) -> str:
    settings = await warehouse.query_arrow(
        "SELECT engine_full FROM system.tables WHERE database = 'arbitrage' AND name = 'transactions'"
    )
    found = re.search(r"merge_selector_base = (\d+)", settings.column(0)[0].as_py())
    return found.group(1) if found else "ClickHouse's default"


async def test_the_embedded_transactions_table_merges_about_forty_parts_at_a_time(warehouse: EmbeddedWarehouse) -> None:
    """Migrations 008 and 017: fewer rewrites per row on the ingest box's own cores."""
    assert await _merge_selector_base(warehouse) == "40"


async def test_a_data_dir_that_merged_ten_parts_at_a_time_merges_forty_after_migrating(tmp_path: Path) -> None:
    """Migration 017 reaches data dirs that 008 set to ten parts."""
    old = EmbeddedWarehouse(tmp_path / "wh", migrations=migrations_before(17, tmp_path / "migrations"))
    await old.start()
    await old.execute("ALTER TABLE arbitrage.transactions MODIFY SETTING merge_selector_base = 10")
    assert await _merge_selector_base(old) == "10"
    await old.close()

    warehouse = EmbeddedWarehouse(tmp_path / "wh")
    await warehouse.start()
    try:
        assert await _merge_selector_base(warehouse) == "40"
    finally:
        await warehouse.close()


async def test_inserts_write_compact_parts_and_large_merges_write_wide_ones(warehouse: EmbeddedWarehouse) -> None:
    """Inserts stay compact whatever their size (embedded); parts merged to 32,768+ rows are wide (migration 006)."""
    await warehouse.execute("SYSTEM STOP MERGES arbitrage.transactions")
    rows = 40_000
    for part in range(2):
        first = part * rows
        await warehouse.insert_arrow(
            "transactions",
            pa.table(
                {
                    "signature": [f"sig{n}" for n in range(first, first + rows)],
                    "slot": pa.array(range(first + 1, first + rows + 1), pa.uint64()),
                    "block_time": pa.array(
                        [1_767_225_600_000 + n for n in range(first, first + rows)], pa.timestamp("ms", "UTC")
                    ),
                }
            ),
        )
    parts_sql = (
        "SELECT part_type, rows FROM system.parts "
        "WHERE database = 'arbitrage' AND table = 'transactions' AND active ORDER BY rows"
    )
    assert (await warehouse.query_arrow(parts_sql)).to_pylist() == [{"part_type": "Compact", "rows": rows}] * 2
    await warehouse.execute("SYSTEM START MERGES arbitrage.transactions")
    await warehouse.execute("OPTIMIZE TABLE arbitrage.transactions FINAL")
    assert (await warehouse.query_arrow(parts_sql)).to_pylist() == [{"part_type": "Wide", "rows": 2 * rows}]


@pytest.mark.parametrize("size", [10, 5000])
async def test_an_insert_clickhouse_refuses_raises_and_stores_nothing_whatever_its_size(
    warehouse: EmbeddedWarehouse, size: int
) -> None:
    """An insert refused for too many parts (or a full disk) must fail, or ingest reports rows it lost.

    chdb's streamed insert (`send_insert`), used for small inserts until 2026-11-27, reported
    success for them and dropped the rows.
    """
    rows = transactions(size + 1)
    await warehouse.insert_arrow("transactions", rows.slice(0, 1))
    await warehouse.execute("ALTER TABLE arbitrage.transactions MODIFY SETTING parts_to_throw_insert = 1")
    with pytest.raises(WarehouseUnavailable, match="TOO_MANY_PARTS"):
        await warehouse.insert_arrow("transactions", rows.slice(1))
    await warehouse.execute("ALTER TABLE arbitrage.transactions RESET SETTING parts_to_throw_insert")
    counted = await warehouse.query_arrow("SELECT count() AS n FROM arbitrage.transactions")
    assert counted.column("n")[0].as_py() == 1
    await warehouse.insert_arrow("transactions", rows.slice(1))
    counted = await warehouse.query_arrow("SELECT count() AS n FROM arbitrage.transactions")
    assert counted.column("n")[0].as_py() == size + 1


async def test_feature_history_holds_the_engines_columns_with_the_first_and_last_leg(
    warehouse: EmbeddedWarehouse,
) -> None:
    rows = transactions(300)
    spread = pl.from_arrow(rows).with_columns(  # one a slot: spread them over many 256-slot buckets
        (pl.col("slot") - pl.col("slot").min()) * 37 + pl.col("slot").min()
    )
    assert isinstance(spread, pl.DataFrame)
    rows = spread.to_arrow().cast(rows.schema)
    await warehouse.insert_arrow("transactions", rows)
    reader = TransactionReader(warehouse)
    extent = await reader.history_extent(timedelta(days=1), piece_rows=40)
    assert extent is not None
    pieces = [piece async for piece in reader.feature_history(extent, HISTORY_COLUMNS)]
    assert len(pieces) == len(extent.slot_ranges) > 3, "the history is read a slot range at a time"
    for piece, (first, last) in zip(pieces, extent.slot_ranges, strict=True):
        assert first <= piece.get_column("slot").min() and piece.get_column("slot").max() <= last  # type: ignore[operator]
        assert piece.height <= 40 or first // 256 == last // 256, "more than piece_rows only within 256 slots"
    history = pl.concat(pieces)
    stored = pl.from_arrow(rows)
    assert isinstance(stored, pl.DataFrame)
    newest = stored.get_column("block_time").max()
    assert isinstance(newest, datetime)
    expected = stored.filter(pl.col("block_time") >= newest - timedelta(days=1)).sort("slot")
    assert stored.get_column("hops").max() > 2, "some routes must have legs between the first and the last"  # type: ignore[operator]
    assert extent.newest_slot == expected.get_column("slot").max()
    assert extent.newest_ms == expected.select(pl.col("block_time").dt.epoch("ms").max()).item()
    assert history.columns == list(HISTORY_COLUMNS)
    assert history.drop("legs").equals(expected.select(HISTORY_COLUMNS).drop("legs"))
    ends = expected.select(pl.concat_list(pl.col("legs").list.first(), pl.col("legs").list.last()).alias("legs"))
    assert history.get_column("legs").equals(ends.get_column("legs"))


async def _stats_of_the_four_tables(warehouse: EmbeddedWarehouse) -> dict[str, object]:
    """`/stats` as it was read before migration 016."""
    totals = await warehouse.query_arrow(
        "SELECT sum(transactions) AS transactions, sum(successful) AS successful, sum(circular) AS circular, "
        "sum(profitable) AS profitable, sum(volume_sol) AS volume_sol, sum(gross_revenue_sol) AS gross_revenue_sol, "
        "sum(total_cost_sol) AS total_cost_sol, sum(jito_tips_sol) AS jito_tips_sol, "
        "sum(net_profit_sol) AS net_profit_sol FROM arbitrage.daily_stats"
    )
    stats: dict[str, object] = {k: v[0] for k, v in totals.to_pydict().items()}
    for column, name in (("token", "top_tokens"), ("dex", "top_dexes"), ("signer", "top_signers")):
        top = await warehouse.query_arrow(
            f"SELECT {column}, sum(transactions) AS transactions, sum(net_profit_sol) AS net_profit_sol "
            f"FROM arbitrage.daily_{column}_stats GROUP BY {column} ORDER BY transactions DESC, {column} LIMIT 10"
        )
        stats[name] = top.to_pylist()
    return stats


async def test_stats_kept_by_the_four_daily_views_move_to_the_one_view_and_grow_from_there(tmp_path: Path) -> None:
    """Migration 016 replaces four views and tables by one; what the old ones counted must stay counted."""
    before = migrations_before(16, tmp_path / "migrations")
    old = EmbeddedWarehouse(tmp_path / "wh", migrations=before)
    await old.start()
    await old.insert_arrow("transactions", transactions(40, seed=1))
    old_stats = await _stats_of_the_four_tables(old)
    await old.close()

    warehouse = EmbeddedWarehouse(tmp_path / "wh")
    await warehouse.start()
    try:
        reader = TransactionReader(warehouse)
        moved = await reader.stats()
        for name, value in old_stats.items():
            if isinstance(value, list):
                assert [(*t.values(),)[:2] for t in moved[name]] == [(*t.values(),)[:2] for t in value]
                assert [t["net_profit_sol"] for t in moved[name]] == pytest.approx([t["net_profit_sol"] for t in value])
            else:
                assert moved[name] == pytest.approx(value), name
        assert moved["transactions"] == 40 and moved["top_tokens"] and moved["top_dexes"] and moved["top_signers"]
        await warehouse.insert_arrow("transactions", transactions(40, seed=2))
        grown = await reader.stats()
        assert grown["transactions"] == 80
        assert sum(t["transactions"] for t in grown["top_signers"]) > sum(
            t["transactions"] for t in moved["top_signers"]
        )
        tables = await warehouse.query_arrow("SELECT name FROM system.tables WHERE database = 'arbitrage'")
        assert not {"daily_stats", "daily_dex_stats", "daily_token_stats", "daily_signer_stats"} & set(
            tables.column("name").to_pylist()
        )
    finally:
        await warehouse.close()


async def test_migration_016_interrupted_after_moving_part_of_the_stats_runs_again_without_counting_twice(
    tmp_path: Path,
) -> None:
    """A migration is recorded only once all its statements ran: after a kill in the middle it runs whole again."""
    old = EmbeddedWarehouse(tmp_path / "wh", migrations=migrations_before(16, tmp_path / "migrations"))
    await old.start()
    await old.insert_arrow("transactions", transactions(40, seed=1))
    old_stats = await _stats_of_the_four_tables(old)
    migration = next(m for m in discover(migrations_dir()) if m.version == 16)
    statements = render(migration.path.read_text(), database="arbitrage", cluster="", bundled_engine=True)
    for statement in statements[:-1]:  # killed before the last move
        await old.execute(statement)
    await old.close()

    warehouse = EmbeddedWarehouse(tmp_path / "wh")
    await warehouse.start()
    try:
        moved = await TransactionReader(warehouse).stats()
        assert moved["transactions"] == old_stats["transactions"] == 40
        assert [t["transactions"] for t in moved["top_signers"]] == [
            t["transactions"] for t in old_stats["top_signers"]
        ]
    finally:
        await warehouse.close()
