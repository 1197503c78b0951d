"""Column additions run as one ALTER per table, and build the same schema as one at a time."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from chdb import session as chdb_session

from arbitrage.storage import discover, migrations_dir, render

DB = "arbitrage"


def test_consecutive_column_additions_to_one_table_are_one_statement() -> None:
    sql = """
    ALTER TABLE ${db}.t ${on_cluster} ADD COLUMN IF NOT EXISTS a UInt8;
    ALTER TABLE ${db}.t ${on_cluster} ADD COLUMN IF NOT EXISTS b UInt8 AFTER a;
    ALTER TABLE ${db}.u ${on_cluster} ADD COLUMN IF NOT EXISTS c UInt8;
    ALTER TABLE ${db}.u ${on_cluster} MODIFY SETTING index_granularity_bytes = 1;
    ALTER TABLE ${db}.u ${on_cluster} ADD COLUMN IF NOT EXISTS d UInt8;
    """
    statements = render(sql, database=DB, cluster="")
    added = [re.findall(r"ADD COLUMN IF NOT EXISTS (\w)", s) for s in statements]
    assert added == [["a", "b"], ["c"], [], ["d"]]
    assert all(s.startswith(f"ALTER TABLE {DB}.{table}") for s, table in zip(statements, "tuuu", strict=True))


def test_on_a_cluster_the_merged_addition_goes_to_the_local_table_then_the_front() -> None:
    sql = """
    ALTER TABLE ${db}.t ${on_cluster} ADD COLUMN IF NOT EXISTS a UInt8;
    ALTER TABLE ${db}.t ${on_cluster} ADD COLUMN IF NOT EXISTS b UInt8;
    """
    local, front = render(sql, database=DB, cluster="c")
    assert local.startswith(f"ALTER TABLE {DB}.t_local ON CLUSTER c") and front.startswith(f"ALTER TABLE {DB}.t ON")
    assert local.count("ADD COLUMN") == front.count("ADD COLUMN") == 2


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[chdb_session.Session]:
    db = chdb_session.Session(str(tmp_path / "chdb"))
    try:
        yield db
    finally:
        db.close()


def schema(db: chdb_session.Session, database: str) -> str:
    tables = db.query(
        f"SELECT name, replaceAll(create_table_query, '{database}.', '') FROM system.tables "
        f"WHERE database = '{database}' ORDER BY name",
        "TSV",
    )
    return tables.bytes().decode()


def test_every_migration_batched_builds_the_schema_it_builds_one_statement_at_a_time(
    engine: chdb_session.Session,
) -> None:
    one_at_a_time, batched = "one_at_a_time", "batched"
    for database in (one_at_a_time, batched):
        engine.query(f"CREATE DATABASE {database}")
    statements_run = {one_at_a_time: 0, batched: 0}
    for migration in discover(migrations_dir()):
        text = migration.path.read_text()
        singles = [s for s in re.split(r";\s*$", text, flags=re.MULTILINE) if s.strip()]
        for single in singles:
            for statement in render(single, database=one_at_a_time, cluster="", bundled_engine=True):
                engine.query(statement)
                statements_run[one_at_a_time] += 1
        for statement in render(text, database=batched, cluster="", bundled_engine=True):
            engine.query(statement)
            statements_run[batched] += 1

    assert statements_run[batched] < statements_run[one_at_a_time] - 80  # migration 002 alone adds 88 columns

    assert "hop_count" in schema(engine, batched)
    assert schema(engine, batched) == schema(engine, one_at_a_time)
