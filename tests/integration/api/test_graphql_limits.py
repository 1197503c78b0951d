"""`/graphql` query bounds that a request could slip past: the row budget over all `transactions` fields."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from arbitrage.api.graphql import DEFAULT_PAGE, MAX_ALIASES, MAX_PAGE

pytestmark = pytest.mark.anyio


async def test_a_first_left_to_its_default_counts_against_the_row_budget(
    client: AsyncTestClient[Any], records: list[dict[str, Any]]
) -> None:
    """`first: $n` with `$n` omitted runs with the default 50 rows; the budget counted it as 0 rows."""
    await client.post("/ingest", content=msgspec.json.encode(records))
    aliased = " ".join(f"a{i}: transactions(first: $n) {{ items {{ signature }} }}" for i in range(MAX_ALIASES))
    query = f"query($n: Int) {{ {aliased} transactions(first: {MAX_PAGE}) {{ items {{ signature }} }} }}"
    answer = (await client.post("/graphql", json={"query": query})).json()
    rows = sum(len(page["items"]) for page in (answer.get("data") or {}).values())
    assert answer.get("data") is None, f"{rows} rows answered; {MAX_ALIASES * DEFAULT_PAGE + MAX_PAGE} asked"
    assert [e["message"].split(":")[0] for e in answer["errors"]] == ["first"], answer["errors"]
