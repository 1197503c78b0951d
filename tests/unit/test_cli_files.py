"""`arbitrage ingest` reads every input format into the same chunks of records."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path

import msgspec
import pytest

from arbitrage.errors import ArbitrageError
from arbitrage.ingest._files import file_chunks
from arbitrage.simulator import Simulator

RECORDS = [msgspec.json.encode(record) for record in itertools.islice(Simulator(seed=3).stream(), 25)]


def _written(path: Path, body: bytes) -> Path:
    path.write_bytes(body)
    return path


def test_a_json_array_gives_the_records_of_the_same_ndjson(tmp_path: Path) -> None:
    ndjson = _written(tmp_path / "records.ndjson", b"\n".join(RECORDS) + b"\n")
    array = _written(tmp_path / "records.json", b"  \n[\n  " + b" ,\n  ".join(RECORDS) + b"\n]\n")

    expected = list(file_chunks(ndjson, 10))
    assert [len(chunk) for chunk in expected] == [10, 10, 5]
    assert [[msgspec.json.decode(r) for r in chunk] for chunk in file_chunks(array, 10)] == [
        [msgspec.json.decode(r) for r in chunk] for chunk in expected
    ]


@pytest.mark.parametrize("name", ["records.ndjson.gz", "records.json.gz"])
def test_gzipped_files_give_the_records_of_the_plain_file(tmp_path: Path, name: str) -> None:
    plain = b"\n".join(RECORDS) if "ndjson" in name else b"[" + b",".join(RECORDS) + b"]"
    expected = list(file_chunks(_written(tmp_path / name.removesuffix(".gz"), plain), 10))
    assert list(file_chunks(_written(tmp_path / name, gzip.compress(plain)), 10)) == expected


@pytest.mark.parametrize("name", ["cut.ndjson.gz", "cut.json.gz"])
def test_a_cut_gzip_file_names_the_file(tmp_path: Path, name: str) -> None:
    body = gzip.compress(b"\n".join(RECORDS) if "ndjson" in name else b"[" + b",".join(RECORDS) + b"]")
    with pytest.raises(ArbitrageError, match=name.replace(".", r"\.")):
        list(file_chunks(_written(tmp_path / name, body[: len(body) // 2]), 10))


def test_a_json_array_left_early_releases_its_file(tmp_path: Path) -> None:
    array = _written(tmp_path / "records.json", b"[" + b",".join(RECORDS) + b"]")
    chunks = file_chunks(array, 4)
    assert len(next(chunks)) == 4
    chunks.close()
    assert [len(chunk) for chunk in file_chunks(array, 20)] == [20, 5]


def test_a_broken_json_array_names_the_file(tmp_path: Path) -> None:
    array = _written(tmp_path / "cut.json", b"[" + b",".join(RECORDS)[:-30])
    with pytest.raises(ArbitrageError, match=r"cut\.json"):
        list(file_chunks(array, 10))
