"""`make bench` is not part of the suite: its scripts must still import, and their data fit today's schema."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from arbitrage.ingest._decode import decode_body
from arbitrage.model import STORED_SCHEMA

SCRIPTS = sorted(p.stem for p in (Path(__file__).parents[2] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_benchmark_script_imports(name: str) -> None:
    module = importlib.import_module(f"benchmarks.{name}")
    assert name.startswith("_") or callable(getattr(module, "main", None))


def test_the_export_benchmarks_rows_have_the_stored_schema() -> None:
    from benchmarks.export import synthetic

    table = pl.from_arrow(synthetic(50, 0, datetime(2024, 1, 1, tzinfo=UTC)))
    assert isinstance(table, pl.DataFrame)
    assert table.schema == pl.Schema(STORED_SCHEMA)


def test_the_ingest_benchmarks_bodies_are_accepted_whole() -> None:
    from benchmarks._common import arrow_bodies, json_bodies

    for body, encoding in ((json_bodies(200, 100)[0], "json"), (arrow_bodies(200, 100)[0], "arrow")):
        decoded = decode_body(body, encoding)
        assert (len(decoded.frame), decoded.rejects) == (100, [])
