"""Cluster-mode migrations: as text, and executed on chdb with a one-shard cluster.

chdb has no Keeper and no distributed DDL queue, so the part that needs them (`ON CLUSTER`,
replicated engines) is checked as text; everything else of the cluster layout (local
tables, Distributed fronts sharded by key, views on local tables, column changes on both)
runs on the real engine, with a one-shard cluster defined in a config file.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from chdb import session as chdb_session

from arbitrage.config import StorageSettings
from arbitrage.storage import discover, migrations_dir, render
from arbitrage.storage._clickhouse import ClickHouseWarehouse
from arbitrage.storage._migrations import LOCAL_SUFFIX, REPLICA_PATH, sharding_key
from arbitrage.storage._retention import EXPIRING, TTL_TABLE_SETTINGS, retention_statements, ttl_days

CLUSTER = "arb"
DB = "arbitrage"


def rendered(cluster: str) -> list[str]:
    return [
        statement
        for migration in discover(migrations_dir())
        for statement in render(migration.path.read_text(), database=DB, cluster=cluster)
    ]


def created_tables(statements: list[str]) -> list[str]:
    return [m.group(1) for s in statements if (m := re.match(rf"CREATE TABLE IF NOT EXISTS {DB}\.(\w+)", s))]


def test_single_node_rendering_has_no_cluster_layout() -> None:
    statements = rendered("")
    text = "\n".join(statements)
    assert "ON CLUSTER" not in text
    assert "Replicated" not in text
    assert "Distributed" not in text
    assert LOCAL_SUFFIX not in text
    assert "ENGINE = ReplacingMergeTree" in statements[0]


def test_settings_only_the_bundled_engine_knows_are_left_out_for_a_server() -> None:
    """`min_level_for_wide_part` (ClickHouse 25.10+) and `merge_selector_base` go to chdb only."""
    for name in ("min_level_for_wide_part", "merge_selector_base"):
        assert name not in "\n".join(rendered(""))
        assert name not in "\n".join(rendered(CLUSTER))
        embedded = [
            statement
            for migration in discover(migrations_dir())
            for statement in render(migration.path.read_text(), database=DB, cluster="", bundled_engine=True)
        ]
        assert any(name in statement for statement in embedded)


def test_cluster_rendering_puts_every_statement_on_the_cluster() -> None:
    for statement in rendered(CLUSTER):
        if statement.startswith("INSERT INTO"):
            # Rows moved by a migration (016) go in once, through a Distributed front to the shards.
            assert not re.search(rf"{DB}\.\w+{LOCAL_SUFFIX}\b", statement), statement[:120]
            continue
        assert f"ON CLUSTER {CLUSTER}" in statement, statement[:120]


def test_every_cluster_table_is_a_replicated_local_table_behind_a_distributed_front() -> None:
    statements = rendered(CLUSTER)
    tables = created_tables(statements)
    local = {t for t in tables if t.endswith(LOCAL_SUFFIX)}
    fronts = {t for t in tables if not t.endswith(LOCAL_SUFFIX)}
    assert {f + LOCAL_SUFFIX for f in fronts} == local
    assert {"transactions", "dead_letters", "daily_aggregates", "export_jobs", "schedules", "schedule_claims"} <= fronts
    for statement in statements:
        name = re.match(rf"CREATE TABLE IF NOT EXISTS {DB}\.(\w+)", statement)
        if name is None:
            continue
        if name.group(1).endswith(LOCAL_SUFFIX):
            assert re.search(
                rf"ENGINE = Replicated\w*MergeTree\('{re.escape(REPLICA_PATH)}', '\{{replica\}}'", statement
            )
        else:
            front = name.group(1)
            assert f"AS {DB}.{front}{LOCAL_SUFFIX} ENGINE = Distributed({CLUSTER}, {DB}, {front}{LOCAL_SUFFIX}, " in (
                statement
            )


def test_transactions_are_sharded_by_a_hash_of_the_signature() -> None:
    front = next(s for s in rendered(CLUSTER) if s.startswith(f"CREATE TABLE IF NOT EXISTS {DB}.transactions ON"))
    assert front.endswith("cityHash64(signature))")


def test_replacing_tables_are_sharded_by_their_sorting_key_so_versions_meet_on_one_shard() -> None:
    assert sharding_key("export_jobs", "ENGINE = ReplacingMergeTree(version) ORDER BY id") == "cityHash64(id)"
    assert sharding_key("claims", "ORDER BY (schedule_id, due_at) SETTINGS x = 1") == "cityHash64(schedule_id, due_at)"
    assert sharding_key("no_order", "ENGINE = Log") == "rand()"


def test_replicated_engines_keep_their_own_arguments_after_the_replica_path() -> None:
    jobs = next(s for s in rendered(CLUSTER) if s.startswith(f"CREATE TABLE IF NOT EXISTS {DB}.export_jobs_local"))
    assert f"ReplicatedReplacingMergeTree('{REPLICA_PATH}', '{{replica}}', version)" in jobs


def test_materialized_views_read_and_write_the_shard_local_tables() -> None:
    views = [s for s in rendered(CLUSTER) if s.startswith("CREATE MATERIALIZED VIEW")]
    names = {re.match(r"CREATE MATERIALIZED VIEW IF NOT EXISTS \S+\.(\w+)", view).group(1) for view in views}  # type: ignore[union-attr]
    assert names == {"daily_stats_mv", "daily_dex_stats_mv", "daily_token_stats_mv", "daily_signer_stats_mv"} | {
        "daily_aggregates_mv"  # 016 replaced the four
    }
    assert f"DROP VIEW IF EXISTS {DB}.daily_stats_mv ON CLUSTER {CLUSTER}" in rendered(CLUSTER)  # made again (013)
    for view in views:
        assert re.search(rf"TO {DB}\.\w+{LOCAL_SUFFIX} AS", view)
        assert f"FROM {DB}.transactions{LOCAL_SUFFIX}" in view
        assert not re.search(rf"{DB}\.\w+_mv{LOCAL_SUFFIX}", view)


def test_a_dropped_table_goes_from_the_front_and_the_shards() -> None:
    statements = rendered(CLUSTER)
    front = statements.index(f"DROP TABLE IF EXISTS {DB}.daily_stats ON CLUSTER {CLUSTER}")
    assert statements[front + 1] == f"DROP TABLE IF EXISTS {DB}.daily_stats{LOCAL_SUFFIX} ON CLUSTER {CLUSTER}"


def test_column_changes_apply_to_the_local_table_then_the_distributed_front() -> None:
    statements = rendered(CLUSTER)
    index = next(i for i, s in enumerate(statements) if "ADD COLUMN IF NOT EXISTS hop_count" in s)
    assert statements[index].startswith(f"ALTER TABLE {DB}.transactions{LOCAL_SUFFIX} ON CLUSTER {CLUSTER}")
    assert statements[index + 1].startswith(f"ALTER TABLE {DB}.transactions ON CLUSTER {CLUSTER}")


def test_mutations_go_to_the_local_tables_only() -> None:
    out = render(
        "ALTER TABLE ${db}.dead_letters ${on_cluster} UPDATE replayed = true WHERE 1;", database=DB, cluster="c"
    )
    assert out == [f"ALTER TABLE {DB}.dead_letters{LOCAL_SUFFIX} ON CLUSTER c UPDATE replayed = true WHERE 1"]


# --- the cluster layout on the real engine ---------------------------------------------------


def single_node(statement: str) -> str:
    """What chdb can run of a cluster statement: no ON CLUSTER, plain engines (no Keeper)."""
    statement = statement.replace(f" ON CLUSTER {CLUSTER}", "")
    statement = re.sub(
        rf"Replicated(\w*MergeTree)\('{re.escape(REPLICA_PATH)}', '\{{replica\}}'(?:, )?", r"\1(", statement
    )
    return statement.replace("MergeTree()", "MergeTree")


def create_cluster_layout(db: chdb_session.Session) -> None:
    """Every migration rendered for the cluster, run against the one-shard cluster."""
    db.query(f"CREATE DATABASE {DB}")
    for statement in rendered(CLUSTER):
        db.query(single_node(statement))


@pytest.fixture
def one_shard_cluster(tmp_path: Path) -> Iterator[chdb_session.Session]:
    config = tmp_path / "config.xml"
    config.write_text(
        "<clickhouse><tcp_port>9000</tcp_port><remote_servers>"
        f"<{CLUSTER}><shard><replica><host>localhost</host><port>9000</port></replica></shard></{CLUSTER}>"
        "</remote_servers></clickhouse>"
    )
    db = chdb_session.Session(f"{tmp_path / 'chdb'}?config-file={config}")
    try:
        yield db
    finally:
        db.close()


def columns(db: chdb_session.Session, table: str) -> list[tuple[str, str]]:
    out = db.query(
        f"SELECT name, type FROM system.columns WHERE database = '{DB}' AND table = '{table}'", "JSONCompact"
    )
    return [tuple(row) for row in json.loads(out.bytes())["data"]]


def test_cluster_migrations_run_on_the_engine_and_dedup_holds_through_the_distributed_front(
    one_shard_cluster: chdb_session.Session,
) -> None:
    db = one_shard_cluster
    assert db.query(f"SELECT is_local FROM system.clusters WHERE cluster = '{CLUSTER}'", "CSV").bytes() == b"1\n"
    create_cluster_layout(db)

    assert columns(db, "transactions") == columns(db, f"transactions{LOCAL_SUFFIX}")
    engine = db.query(f"SELECT engine FROM system.tables WHERE database = '{DB}' AND name = 'transactions'", "CSV")
    assert engine.bytes() == b'"Distributed"\n'

    insert = (
        f"INSERT INTO {DB}.transactions (signature, slot, block_time, signer, fee_lamports, total_cost_lamports, "
        "total_cost_sol, net_profit_sol, route, dexes, hops, circular, start_token, source, ingested_at) "
        "SETTINGS distributed_foreground_insert = 1 VALUES "
        "('sigA', 1, '2025-01-02 03:04:05.006', 'me', 5000, 5000, 0.000005, 0.5, ['a', 'b', 'a'], ['orca'], 2, true, "
        "'a', 'test', now64(3)), "
        "('sigB', 2, '2025-01-02 03:04:06.000', 'me', 5000, 5000, 0.000005, 0.25, ['a', 'b'], ['orca'], 1, false, "
        "'a', 'test', now64(3))"
    )
    db.query(insert)
    db.query(insert.replace("('sigB'", "('sigC'"))  # sigA stored twice, as a crash could replay it
    counted = db.query(f"SELECT count(), uniqExact(signature) FROM {DB}.transactions FINAL", "CSV").bytes()
    assert counted == b"3,3\n"
    local = db.query(f"SELECT count() FROM {DB}.transactions{LOCAL_SUFFIX}", "CSV").bytes()
    assert local == b"4\n"  # the rows live in the local table; FINAL collapses the replay
    daily = db.query(f"SELECT sum(transactions) FROM {DB}.daily_aggregates WHERE kind = 'all'", "CSV").bytes()
    assert daily == b"4\n"  # the view fed the local aggregate, read through the front


def test_cluster_tables_have_the_same_columns_as_the_single_node_tables(
    one_shard_cluster: chdb_session.Session,
) -> None:
    db = one_shard_cluster
    create_cluster_layout(db)
    cluster_columns = {t: columns(db, t) for t in created_tables(rendered(""))}
    db.query(f"DROP DATABASE {DB} SYNC")
    db.query(f"CREATE DATABASE {DB}")
    for statement in rendered(""):
        db.query(statement)
    for table, expected in cluster_columns.items():
        assert columns(db, table) == expected, table


def test_dead_letters_are_told_by_their_digest_through_the_distributed_front(
    one_shard_cluster: chdb_session.Session,
) -> None:
    """Migration 015: a letter without a digest (stored before it) gets MD5(raw), as the ingest service computes it."""
    db = one_shard_cluster
    create_cluster_layout(db)
    db.query(
        f"INSERT INTO {DB}.dead_letters (received_at, source, record_index, field, reason, raw) "
        "SETTINGS distributed_foreground_insert = 1 VALUES (now64(3), 'http', 0, '$', 'not json', '{broken')"
    )
    digest = hashlib.md5(b"{broken", usedforsecurity=False).hexdigest()
    found = db.query(f"SELECT lower(hex(digest)) FROM {DB}.dead_letters WHERE NOT replayed", "CSV").bytes()
    assert found == f'"{digest}"\n'.encode()
    db.query(
        f"ALTER TABLE {DB}.dead_letters{LOCAL_SUFFIX} UPDATE replayed = true, replayed_at = now64(3) "
        f"WHERE has(['{digest}'], lower(hex(digest))) SETTINGS mutations_sync = 1"
    )
    marked = db.query(f"SELECT replayed, replayed_at IS NOT NULL FROM {DB}.dead_letters", "CSV").bytes()
    assert marked == b"true,1\n"


def cluster_target(table: str) -> str:
    """What the server warehouse of a cluster names to alter `table`'s rows (no connection is made)."""
    settings = StorageSettings(backend="clickhouse", url=f"clickhouse://127.0.0.1:9000/{DB}", cluster=CLUSTER)
    return ClickHouseWarehouse(settings).mutation_target(table)


def test_retention_alters_the_shards_local_tables_on_the_cluster() -> None:
    """A Distributed table holds no rows and takes no TTL: the local tables do, on every node."""
    target = cluster_target("transactions")
    assert retention_statements(target, "block_time", 30) == [
        f"ALTER TABLE {DB}.transactions{LOCAL_SUFFIX} ON CLUSTER {CLUSTER} MODIFY SETTING {TTL_TABLE_SETTINGS}",
        f"ALTER TABLE {DB}.transactions{LOCAL_SUFFIX} ON CLUSTER {CLUSTER} "
        "MODIFY TTL toDateTime(block_time) + INTERVAL 30 DAY",
    ]
    assert retention_statements(target, "block_time", 0) == [
        f"ALTER TABLE {DB}.transactions{LOCAL_SUFFIX} ON CLUSTER {CLUSTER} REMOVE TTL"
    ]


def test_retention_on_the_cluster_layout_expires_rows_read_through_the_distributed_front(
    one_shard_cluster: chdb_session.Session,
) -> None:
    db = one_shard_cluster
    create_cluster_layout(db)
    for table, column in EXPIRING.items():
        for statement in retention_statements(cluster_target(table), column, 3):
            db.query(single_node(statement))
    for age in ("40 DAY", "5 MINUTE"):
        db.query(
            f"INSERT INTO {DB}.transactions (signature, slot, block_time, signer, route, dexes, source, ingested_at) "
            f"SETTINGS distributed_foreground_insert = 1 "
            f"VALUES ('sig {age}', 1, now64(3) - INTERVAL {age}, 'me', ['a'], ['orca'], 'test', now64(3))"
        )
        db.query(
            f"INSERT INTO {DB}.dead_letters (received_at, source, record_index, field, reason, raw) "
            f"SETTINGS distributed_foreground_insert = 1 VALUES (now64(3) - INTERVAL {age}, 'http', 0, '$', 'x', '{age}')"
        )
    for table in EXPIRING:
        db.query(f"OPTIMIZE TABLE {DB}.{table}{LOCAL_SUFFIX} FINAL")
    assert db.query(f"SELECT signature FROM {DB}.transactions", "CSV").bytes() == b'"sig 5 MINUTE"\n'
    assert db.query(f"SELECT raw FROM {DB}.dead_letters", "CSV").bytes() == b'"5 MINUTE"\n'
    assert db.query(f"SELECT sum(transactions) FROM {DB}.daily_aggregates WHERE kind = 'all'", "CSV").bytes() == b"2\n"

    def local_ttl_days(table: str) -> int | None:
        query = db.query(
            f"SELECT create_table_query FROM system.tables WHERE database = '{DB}' AND name = '{table}{LOCAL_SUFFIX}'",
            "JSONCompact",
        )
        return ttl_days(json.loads(query.bytes())["data"][0][0], EXPIRING[table])

    assert local_ttl_days("transactions") == 3 and local_ttl_days("dead_letters") == 3
    for statement in retention_statements(cluster_target("transactions"), "block_time", 0):
        db.query(single_node(statement))
    assert local_ttl_days("transactions") == 0


def test_a_ttl_of_another_form_is_not_taken_for_a_retention() -> None:
    query = "CREATE TABLE t (`d` DateTime) ENGINE = MergeTree ORDER BY d TTL {} SETTINGS ttl_only_drop_parts = 1"
    assert ttl_days(query.format("toDateTime(d) + toIntervalDay(14)"), "d") == 14
    assert ttl_days(query.format("toDateTime(d) + toIntervalHour(14)"), "d") is None
    assert ttl_days(query.format("toDateTime(d) + toIntervalDay(14) TO VOLUME 'cold'"), "d") is None
    assert ttl_days(query.replace(" TTL {}", ""), "d") == 0
