"""`/schema/openapi.json` says what the routes do: bodies, errors, media types, security, shapes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import openapi_spec_validator
import pytest
from litestar.testing import AsyncTestClient

from arbitrage.app import create_app
from arbitrage.security import PUBLIC, role_of
from tests.integration.security.conftest import secure_settings

pytestmark = pytest.mark.anyio
Client = AsyncTestClient[Any]

PUBLIC_PATHS = {"/", "/health", "/metrics", "/schema", "/schema/openapi.json", "/schema/swagger"}
"""Answer without a credential with auth on: they hold no data (docs/security.md)."""
PUBLIC_ASSETS = ("/static/", "/schema/")
"""Prefixes of the status page's and the API docs' static files, public too."""
DOCUMENTED_FIELDS = (
    "signature",
    "slot",
    "block_time",
    "signer",
    "success",
    "legs",
    "route",
    "hops",
    "circular",
    "total_cost_sol",
    "net_profit_sol",
    "features",
    "risk",
)


@pytest.fixture
async def schema(client: Client) -> dict[str, Any]:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """The schema a `$ref` (or an `allOf` of one, which Litestar uses to describe a reference) points to."""
    while "$ref" in node or len(node.get("allOf", ())) == 1:
        node = node["allOf"][0] if "allOf" in node else schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


async def test_the_schema_is_valid_openapi(schema: dict[str, Any]) -> None:
    openapi_spec_validator.validate(schema)


@pytest.mark.parametrize(
    ("path", "media_types"),
    [
        (
            "/ingest",
            {
                "application/json",
                "application/x-ndjson",
                "application/msgpack",
                "application/vnd.apache.arrow.stream",
            },
        ),
        ("/ingest/solana", {"application/json", "application/x-ndjson"}),
    ],
)
async def test_ingest_declares_its_bodies_and_every_answer(
    schema: dict[str, Any], path: str, media_types: set[str]
) -> None:
    operation = schema["paths"][path]["post"]
    assert operation["requestBody"]["required"] is True
    assert set(operation["requestBody"]["content"]) == media_types
    responses = operation["responses"]
    assert {"200", "400", "413", "422", "503"} <= set(responses)
    for code in ("400", "413", "503"):
        error = _resolve(schema, responses[code]["content"]["application/json"]["schema"])
        assert {"status_code", "detail", "extra"} <= set(error["properties"]), code
    report = responses["200"]["content"]["application/json"]["schema"]
    assert responses["422"]["content"]["application/json"]["schema"] == report
    assert "Retry-After" in responses["503"]["headers"]


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/transactions/{signature}", "get"),
        ("/risk/{signature}", "get"),
        ("/exports/{job_id}", "get"),
        ("/exports/{job_id}", "delete"),
        ("/exports/{job_id}/download", "get"),
        ("/schedules/{schedule_id}", "get"),
        ("/schedules/{schedule_id}", "patch"),
        ("/schedules/{schedule_id}", "delete"),
        ("/schedules/{schedule_id}/run", "post"),
        ("/export/{format_name}", "post"),
    ],
)
async def test_routes_that_answer_404_declare_it(schema: dict[str, Any], path: str, method: str) -> None:
    not_found = schema["paths"][path][method]["responses"]["404"]
    assert "detail" in _resolve(schema, not_found["content"]["application/json"]["schema"])["properties"]


async def test_guarded_routes_declare_the_guards_refusals_and_routes_with_a_body_the_413(
    schema: dict[str, Any],
) -> None:
    """Answered before any handler runs, so no route listed them: a client generated from the schema knew none."""
    checked = 0
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method not in {"get", "post", "patch", "delete"}:
                continue
            codes = set() if operation.get("security") == [] else {"401", "403", "429"}
            codes |= {"413"} if "requestBody" in operation else set()
            assert codes <= set(operation["responses"]), (method, path)
            for code in codes:
                error = _resolve(schema, operation["responses"][code]["content"]["application/json"]["schema"])
                assert {"status_code", "detail"} <= set(error["properties"]), (method, path, code)
            checked += bool(codes)
    assert checked > 30


async def test_an_export_download_is_declared_as_a_file(schema: dict[str, Any]) -> None:
    responses = schema["paths"]["/exports/{job_id}/download"]["get"]["responses"]
    content = responses["200"]["content"]
    assert "application/json" not in content
    (body,) = content.values()
    assert body["schema"]["type"] == "string"
    assert {"404", "409"} <= set(responses)


async def test_public_routes_drop_the_global_security_requirement(client: Client, schema: dict[str, Any]) -> None:
    assert schema["security"] == [{"bearer": []}, {"apiKey": []}]
    public = {r.path for r in client.app.routes for h in _handlers(r) if role_of(h) == PUBLIC}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if path in public:
                assert operation["security"] == [], (method, path)
            else:
                assert "security" not in operation, (method, path)
    assert {"/health", "/metrics"} <= set(schema["paths"])


async def test_every_route_declares_its_role_and_the_public_ones_are_the_documented_list(client: Client) -> None:
    roles = {(r.path, role_of(h)) for r in client.app.routes for h in _handlers(r)}
    assert not [path for path, role in roles if role is None]
    public = {path for path, role in roles if role == PUBLIC}
    assert public >= PUBLIC_PATHS
    assert all(path in PUBLIC_PATHS or path.startswith(PUBLIC_ASSETS) for path in public), sorted(public)


async def test_with_auth_on_only_the_public_routes_answer_without_a_credential(tmp_path: Path) -> None:
    async with AsyncTestClient(create_app(secure_settings(tmp_path))) as client:
        for path in (*sorted(PUBLIC_PATHS), "/static/status.js", "/schema/assets/swagger-ui.css"):
            assert (await client.get(path)).status_code == 200, path
        for path in ("/transactions", "/stats", "/exports", "/admin/config"):
            assert (await client.get(path)).status_code == 401, path
        assert (await client.get("/graphql", headers={"Accept": "text/html"})).status_code == 401


async def test_transactions_have_a_real_schema_that_matches_what_is_served(
    client: Client, schema: dict[str, Any], records: list[dict[str, Any]]
) -> None:
    paths = schema["paths"]
    page = _resolve(schema, paths["/transactions"]["get"]["responses"]["200"]["content"]["application/json"]["schema"])
    item = page["properties"]["items"]["items"]
    one = paths["/transactions/{signature}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    historical = paths["/historical"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert one == item == historical["items"]
    transaction = _resolve(schema, item)
    assert set(DOCUMENTED_FIELDS) <= set(transaction["properties"])
    features = _resolve(schema, transaction["properties"]["features"])
    assert features["type"] == "object" and len(features["properties"]) >= 80
    assert {p["type"] for p in features["properties"].values()} <= {"number", "integer", "boolean"}
    risk = _resolve(schema, transaction["properties"]["risk"])
    assert {"score", "level"} <= set(risk["properties"])

    response = await client.post("/ingest", content=msgspec.json.encode(records[:20]))
    assert response.json()["accepted"] == 20

    def check(body: Any, ref: dict[str, Any]) -> None:
        jsonschema.Draft202012Validator({**ref, "components": schema["components"]}).validate(body)

    served = (await client.get("/transactions", params={"limit": 5})).json()
    check(served, {"$ref": "#/components/schemas/TransactionPage"})
    for body in served["items"]:
        assert set(body) == set(transaction["properties"]), "served fields the schema leaves out"
    signature = served["items"][0]["signature"]
    check((await client.get(f"/transactions/{signature}")).json(), item)
    filtered = (await client.get("/transactions", params={"signer": served["items"][0]["signer"]})).json()
    check(filtered, {"$ref": "#/components/schemas/TransactionPage"})
    ranged = await client.get("/historical", params={"start": "2020-03-16", "end": "2100-01-01", "limit": 3})
    check(ranged.json(), historical)


async def test_every_path_is_in_the_docs(schema: dict[str, Any]) -> None:
    docs = _shape(_docs())
    assert not [path for path in schema["paths"] if _shape(path) not in docs]


def _docs() -> str:
    root = Path(__file__).parents[3]
    return "\n".join(path.read_text() for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))])


def _shape(text: str) -> str:
    """Path parameters as `{}`, whatever the docs or the routes call them."""
    return re.sub(r"\{[^}]*\}", "{}", text)


def _handlers(route: Any) -> list[Any]:
    return getattr(route, "route_handlers", None) or [route.route_handler]
