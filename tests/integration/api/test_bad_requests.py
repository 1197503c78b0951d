"""Every 400 has one shape, `{"status_code", "detail", "extra": {"field", "reason"}}`, whoever found the fault
(a route, or Litestar checking the handler's signature), and a scalar query parameter comes at most once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from arbitrage.api import before_request
from arbitrage.config import Settings

pytestmark = pytest.mark.anyio
Client = AsyncTestClient[Any]
SIGNATURE = "1" * 88

BAD_REQUESTS: list[tuple[str, str, dict[str, Any], str]] = [
    ("GET", "/transactions?limit=0", {}, "limit"),
    ("GET", "/transactions?limit=abc&dex=@@", {}, "limit"),
    ("GET", "/transactions?cursor=%25%25", {}, "cursor"),
    ("GET", "/transactions?min_profit_sol=nan", {}, "min_profit_sol"),
    ("GET", "/transactions/abc", {}, "signature"),
    ("GET", "/historical?end=2025-01-01", {}, "start"),
    ("GET", "/historical?start=2025-01-01", {}, "end"),
    ("GET", "/historical?start=2025-01-01&end=2025-01-02&limit=0", {}, "limit"),
    ("GET", "/stats/daily?days=0", {}, "days"),
    ("GET", "/risk/summary?hours=0", {}, "hours"),
    ("GET", "/risk/abc", {}, "signature"),
    ("GET", "/sse/stream?signer=short", {}, "signer"),
    ("GET", "/exports?state=bogus", {}, "state"),  # the handler calls it `job_state`
    ("GET", "/exports?limit=0", {}, "limit"),
    ("POST", "/export/csv", {"json": {"bogus": 1}}, "bogus"),
    ("POST", "/export/csv", {"json": {"tokens": ["a", 2]}}, "tokens[1]"),
    ("POST", "/export/csv", {"json": 5}, "$"),
    ("POST", "/export/csv", {"content": b"{", "headers": {"content-type": "application/json"}}, "$"),
    ("POST", "/schedule/export", {"json": {"format": "csv"}}, "frequency"),
    ("PATCH", "/schedules/x", {"json": [1]}, "$"),
    ("POST", "/admin/keys", {"json": {"roles": [1]}}, "roles[0]"),
    ("DELETE", "/admin/keys/zz", {}, "key_id"),
    ("POST", "/admin/warehouse/optimize?table=1x", {}, "table"),
    ("GET", "/admin/dead-letters?limit=0", {}, "limit"),
    ("POST", "/admin/dead-letters/replay", {"json": {"limit": -1}}, "limit"),
    ("POST", "/admin/kafka/pause", {"json": {"partitions": ["a"]}}, "partitions[0]"),
    ("POST", "/admin/kafka/replay", {"json": {"partition": "x"}}, "partition"),
]


def _admin(settings: Settings) -> dict[str, str]:
    return {"authorization": f"Bearer {(Path(settings.storage.data_dir) / 'admin_token').read_text().strip()}"}


@pytest.fixture
async def schema(client: Client) -> dict[str, Any]:
    return (await client.get("/schema/openapi.json")).json()  # type: ignore[no-any-return]


def _operation(schema: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    """The schema's operation that serves `path` (a concrete path, matched against the templates)."""
    concrete = path.split("?")[0]
    parts = concrete.split("/")
    templates = [concrete] if concrete in schema["paths"] else list(schema["paths"])
    for template in templates:
        pattern = template.split("/")
        matches = len(pattern) == len(parts) and all(
            p == q or p.startswith("{") for p, q in zip(pattern, parts, strict=True)
        )
        if matches and method.lower() in schema["paths"][template]:
            return schema["paths"][template][method.lower()]  # type: ignore[no-any-return]
    raise AssertionError(f"no operation for {method} {path}")


@pytest.mark.parametrize(("method", "path", "request_kwargs", "field"), BAD_REQUESTS)
async def test_every_400_names_the_field_at_fault_in_the_shape_the_schema_declares(
    client: Client,
    settings: Settings,
    schema: dict[str, Any],
    method: str,
    path: str,
    request_kwargs: dict[str, Any],
    field: str,
) -> None:
    headers = {**_admin(settings), **request_kwargs.pop("headers", {})}
    response = await client.request(method, path, headers=headers, **request_kwargs)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["status_code"] == 400
    assert body["extra"]["field"] == field, body
    assert body["extra"]["reason"] and body["detail"].startswith(f"{field}: "), body
    declared = _operation(schema, method, path)["responses"]["400"]["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator({**declared, "components": schema["components"]}).validate(body)


async def test_every_operation_that_can_answer_400_declares_the_one_shape(schema: dict[str, Any]) -> None:
    """Litestar declares its own 400 (with a list `extra`) for every route with parameters or a body."""
    components = schema["components"]["schemas"]
    operations = {
        f"{method} {path}": operation for path, item in schema["paths"].items() for method, operation in item.items()
    }
    can_fail = {name for name, op in operations.items() if op.get("parameters") or op.get("requestBody")}
    assert can_fail >= {"get /transactions", "get /exports", "post /schedule/export", "post /admin/keys"}
    for name, operation in operations.items():
        if "400" not in operation["responses"]:
            assert name not in can_fail, name
            continue
        body = operation["responses"]["400"]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/BadRequestBody"}, name
    extra = components["BadRequestBody"]["properties"]["extra"]
    fault = next(option for option in extra["oneOf"] if "$ref" in option)
    assert fault == {"$ref": "#/components/schemas/FieldAtFault"}
    assert set(components["FieldAtFault"]["required"]) == {"field", "reason"}


def _scalar_query_parameters(schema: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (method.upper(), path, parameter["name"])
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "query" and parameter["schema"].get("type") != "array"
    ]


async def test_a_scalar_query_parameter_given_twice_is_a_400_naming_it_on_every_route(
    client: Client, settings: Settings, schema: dict[str, Any]
) -> None:
    parameters = _scalar_query_parameters(schema)
    assert {(p, n) for _, p, n in parameters} >= {
        ("/transactions", "dex"),
        ("/historical", "end"),
        ("/exports", "state"),
    }
    for method, path, name in parameters:
        url = path.replace("{", "").replace("}", "")  # a path parameter's value is not checked before this
        # `fields=nonexistent` makes the code without the check answer the SSE route (with a 400 on `fields`)
        # instead of streaming for ever.
        query = f"{name}=1&{name}=2" + ("&fields=nonexistent" if path == "/sse/stream" else "")
        response = await client.request(method, f"{url}?{query}", headers=_admin(settings))
        assert response.status_code == 400, (method, path, name, response.text)
        assert response.json()["extra"] == {"field": name, "reason": "given more than once"}, (method, path)


async def test_a_repeated_parameter_is_refused_whatever_its_values_and_others_still_pass(client: Client) -> None:
    same = await client.get("/transactions?limit=5&limit=5")
    assert (same.status_code, same.json()["extra"]["field"]) == (400, "limit")
    encoded = await client.get("/transactions?dex=a&d%65x=b")
    assert (encoded.status_code, encoded.json()["extra"]["field"]) == (400, "dex")
    several = await client.get("/transactions?limit=5&dex=raydium_amm&min_profit_sol=0")
    assert several.status_code == 200, several.text
    graphql = await client.get("/graphql", params=[("query", "{ __typename }"), ("query", "{ __typename }")])
    assert "status_code" not in graphql.json(), "GraphQL answers in its own format"


async def test_no_route_replaces_the_hook_that_refuses_repeated_parameters(client: Client) -> None:
    """Litestar runs only the nearest layer's `before_request`: a route with its own would skip the check."""
    handlers = [h for route in client.app.routes if isinstance(route, HTTPRoute) for h in route.route_handlers]
    assert handlers
    assert [h for h in handlers if h.resolve_before_request() is not before_request] == []
