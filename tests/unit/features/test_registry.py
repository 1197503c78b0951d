"""The registry is the single source of the feature columns, the migration and the docs."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from chdb import session

from arbitrage.features import FEATURES, LATE_COLUMN, FeatureEngine, feature_schema
from arbitrage.features.schema import features_markdown, migration_sql
from arbitrage.model import COST_FIELDS, STORED_COLUMNS
from arbitrage.risk import RISK_COLUMNS, risk_markdown
from arbitrage.storage import render
from tests.unit.features.conftest import Tx, rows

ROOT = Path(__file__).resolve().parents[3]


def test_registry_holds_at_least_70_uniquely_named_documented_features_in_every_group() -> None:
    names = [f.name for f in FEATURES]
    assert len(names) >= 70
    assert len(set(names)) == len(names)
    assert {f.group for f in FEATURES} == {"route", "price", "volume", "network", "risk", "time"}
    assert all(f.definition and f.unit and f.window for f in FEATURES)


def test_feature_and_risk_columns_do_not_collide_with_stored_columns() -> None:
    stored = {c.name for c in STORED_COLUMNS}
    added = [f.name for f in (*FEATURES, LATE_COLUMN, *RISK_COLUMNS)]
    assert not stored & set(added)
    assert len(set(added)) == len(added)


def test_engine_adds_exactly_the_registered_columns_with_their_dtypes() -> None:
    batch = rows(Tx(1, 0), Tx(2, 400))
    out = FeatureEngine().process(batch)
    assert out.columns == [*batch.columns, *feature_schema()]
    assert {name: out.schema[name] for name in feature_schema()} == feature_schema()
    assert out.select(*feature_schema()).null_count().sum_horizontal().item() == 0


def test_committed_migration_matches_the_registry() -> None:
    assert (ROOT / "migrations" / "002_features_risk.sql").read_text() == migration_sql()


def test_committed_docs_match_the_registry() -> None:
    assert (ROOT / "docs" / "features.md").read_text() == features_markdown()
    assert (ROOT / "docs" / "risk.md").read_text() == risk_markdown()
    for feature in FEATURES:
        assert f"| `{feature.name}` |" in features_markdown()


def test_migration_adds_every_column_to_a_stored_transactions_table_in_chdb() -> None:
    db = session.Session()
    try:
        columns = ", ".join(f"{c.name} {c.clickhouse_type}" for c in STORED_COLUMNS)
        db.query(f"CREATE TABLE default.transactions ({columns}) ENGINE = ReplacingMergeTree ORDER BY signature")
        for statement in render(migration_sql(), database="default", cluster=""):
            db.query(statement)
        described = str(db.query("DESCRIBE TABLE default.transactions", "CSV"))
    finally:
        db.close()
    for column in (*FEATURES, LATE_COLUMN, *RISK_COLUMNS):
        assert f'"{column.name}","{column.clickhouse_type}"' in described


def test_cost_definition_names_every_cost_the_stored_total_adds_up() -> None:
    """`cost_sol` is the stored `total_cost_sol`, which includes other costs (third-party fees)."""
    definition = next(f.definition for f in FEATURES if f.name == "cost_sol")
    named = {"fee_lamports": "fee", "priority_fee_lamports": "priority fee", "jito_tip_lamports": "tip"}
    for field in COST_FIELDS:
        assert named.get(field, field.removesuffix("_lamports").replace("_", " ")) in definition, field
    stored = rows(Tx(1, 0, priority=20_000, tip=1_000)).with_columns(
        pl.lit(7_000, pl.UInt64).alias("other_cost_lamports"), total_cost_sol=pl.lit(33_000 / 1e9)
    )
    assert FeatureEngine().process(stored).get_column("cost_sol").to_list() == [33_000 / 1e9]
