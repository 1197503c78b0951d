"""Features and risk are computed on ingest and served; raw Solana RPC output is ingested."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from arbitrage.features import FEATURES
from arbitrage.risk import RISK_COLUMNS
from tests.unit.solana.wire import as_binary

pytestmark = pytest.mark.anyio
Client = AsyncTestClient[Any]
FIXTURES = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "solana"
ARB_5HOP = "GCeRpjvfNXZB6BJFQChjpKycdKpRwQGS1BSwUvLjVpJj6NgdzzQACAWt89ZEfEXjeRSqzhDX8CHtzpMUnfJ7VMJ"


async def test_every_stored_transaction_carries_features_and_a_risk_score(
    client: Client, records: list[dict[str, Any]]
) -> None:
    await client.post("/ingest", content=msgspec.json.encode(records))
    item = (await client.get("/transactions", params={"limit": 1})).json()["items"][0]
    assert set(item["features"]) == {f.name for f in FEATURES}
    assert 0.0 <= item["risk"]["score"] <= 1.0
    assert item["risk"]["level"] in {"low", "medium", "high"}
    stored = (await client.get(f"/transactions/{item['signature']}")).json()
    assert stored["features"] == pytest.approx(item["features"])


async def test_features_endpoint_serves_the_registry(client: Client) -> None:
    body = (await client.get("/features")).json()
    assert len(body["features"]) == len(FEATURES) >= 70
    assert {"name", "group", "dtype", "unit", "window", "definition"} <= set(body["features"][0])
    assert {r["name"] for r in body["risk"]} == {c.name for c in RISK_COLUMNS}
    # The flag stored rows and exports carry beside the features is listed too, as documented.
    assert [(q["name"], q["group"], q["dtype"]) for q in body["quality"]] == [("late", "quality", "Bool")]


async def test_risk_of_one_transaction_and_the_summary(client: Client, records: list[dict[str, Any]]) -> None:
    await client.post("/ingest", content=msgspec.json.encode(records))
    one = (await client.get(f"/risk/{records[0]['signature']}")).json()
    assert one["level"] in {"low", "medium", "high"}
    assert set(one["components"]) >= {"sandwich", "il", "token", "competition", "execution"}
    assert (await client.get("/risk/" + "1" * 88)).status_code == 404
    summary = (await client.get("/risk/summary", params={"hours": 24 * 365})).json()
    assert summary["transactions"] == len(records)
    assert set(summary["components"]) == set(one["components"])
    assert sum(summary["levels"].values()) == len(records)
    assert summary["unscored"] == 0


async def test_the_risk_summary_counts_rows_without_a_level_as_unscored(
    client: Client, records: list[dict[str, Any]]
) -> None:
    """Rows stored before the risk columns existed read level '' and score 0: no level, no score."""
    await client.post("/ingest", content=msgspec.json.encode(records))
    warehouse = client.app.state.services.warehouse
    old = [r["signature"] for r in records[:5]]
    await warehouse.execute(
        "ALTER TABLE arbitrage.transactions UPDATE risk_level = '', risk_score = 0 "
        "WHERE has({old:Array(String)}, signature) SETTINGS mutations_sync = 1",
        {"old": old},
    )
    summary = (await client.get("/risk/summary", params={"hours": 24 * 365})).json()
    assert (summary["transactions"], summary["unscored"]) == (len(records), 5)
    assert set(summary["levels"]) == {"low", "medium", "high"}
    assert sum(summary["levels"].values()) == len(records) - 5
    rest = await warehouse.query_arrow(
        "SELECT avg(risk_score) AS mean FROM arbitrage.transactions FINAL WHERE NOT has({old:Array(String)}, signature)",
        {"old": old},
    )
    assert summary["mean_score"] == pytest.approx(rest.column("mean")[0].as_py())
    schema = (await client.get("/schema/openapi.json")).json()["components"]["schemas"]
    summary_schema = next(v for k, v in schema.items() if k.endswith("RiskSummary"))
    assert "unscored" in summary_schema["required"]
    unscored = (await client.get(f"/risk/{old[0]}")).json()
    assert (unscored["score"], unscored["level"], unscored["components"]) == (None, None, {})
    scored = (await client.get(f"/risk/{records[-1]['signature']}")).json()
    assert scored["level"] in ("low", "medium", "high") and scored["components"]


async def test_graphql_answers_a_row_stored_before_risk_scoring_as_rest_does(
    client: Client, records: list[dict[str, Any]]
) -> None:
    """Its '' level and zero scores are not scores: null score and level, no components, in both APIs."""
    await client.post("/ingest", content=msgspec.json.encode(records))
    signature = records[0]["signature"]
    await client.app.state.services.warehouse.execute(
        "ALTER TABLE arbitrage.transactions UPDATE risk_level = '', risk_score = 0 "
        "WHERE signature = {signature:String} SETTINGS mutations_sync = 1",
        {"signature": signature},
    )
    query = f'{{ risk(signature: "{signature}") {{ score level components }} }}'
    answer = (await client.post("/graphql", json={"query": query})).json()
    assert answer["data"]["risk"] == {"score": None, "level": None, "components": {}}
    assert (await client.get(f"/risk/{signature}")).json()["level"] is None


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared/fixtures/solana is not beside the repository")
async def test_raw_solana_transactions_are_decoded_and_stored(client: Client) -> None:
    body = (FIXTURES / "jup_arb_5hop_usdc_jitotip_GCeRpjvf.getTransaction.jsonParsed.json").read_bytes()
    report = (await client.post("/ingest/solana", content=body)).json()
    assert (report["accepted"], report["kinds"]) == (1, {"arbitrage": 1})
    stored = (await client.get(f"/transactions/{ARB_5HOP}")).json()
    assert stored["hops"] == 5
    assert stored["circular"] is True
    assert stored["source"] == "solana"


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared/fixtures/solana is not beside the repository")
async def test_a_raw_block_stores_its_swaps_and_skips_votes(client: Client) -> None:
    body = (FIXTURES / "block_285000037_txs_000-191.getBlock.json").read_bytes()
    report = (await client.post("/ingest/solana", content=body)).json()
    assert report["kinds"]["skipped_vote"] == 27
    assert report["kinds"]["arbitrage"] == 1
    assert report["accepted"] >= 1
    assert report["accepted"] + report["rejected"] <= sum(report["kinds"].values()) - report["kinds"]["skipped_vote"]


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared/fixtures/solana is not beside the repository")
async def test_a_base64_encoded_block_stores_what_its_json_form_stores(client: Client) -> None:
    block = json.loads((FIXTURES / "block_285000037_txs_000-191.getBlock.json").read_bytes())
    binary = {**block, "transactions": [as_binary(entry, "base64") for entry in block["transactions"]]}
    report = (await client.post("/ingest/solana", content=json.dumps(binary).encode())).json()
    assert report["kinds"]["arbitrage"] == 1
    assert report["accepted"] >= 1
    again = (await client.post("/ingest/solana", content=json.dumps(block).encode())).json()
    assert again["kinds"] == report["kinds"]
    assert (again["accepted"], again["duplicates"]) == (0, report["accepted"])


async def test_an_empty_solana_body_is_refused(client: Client) -> None:
    for body in (b"", b" \n"):
        response = await client.post("/ingest/solana", content=body)
        assert response.status_code == 400
        assert "no documents" in response.text


async def test_garbage_sent_as_solana_is_rejected_not_crashing(client: Client) -> None:
    response = await client.post("/ingest/solana", content=b'{"jsonrpc": "2.0", "result": {"nonsense": 1}}')
    assert response.status_code == 422
    assert response.json()["rejected"] == 1
