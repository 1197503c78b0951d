"""`/graphql` against the REST routes it mirrors: the same roles, the same errors, the same answers."""

from __future__ import annotations

import logging
import types
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import anyio
import msgspec
import pytest
from graphql import GraphQLObjectType, GraphQLScalarType, get_named_type
from litestar.testing import AsyncTestClient
from strawberry.utils.str_converters import to_camel_case

from arbitrage.api._openapi import Transaction as RestTransaction
from arbitrage.api.features import FeatureList, RiskScore, RiskSummary
from arbitrage.api.graphql import SCHEMA
from arbitrage.api.stats import DailyTotals, Stats
from arbitrage.api.transactions import TransactionPage
from arbitrage.app import create_app
from arbitrage.config import load_settings
from arbitrage.export import ExportJob
from arbitrage.schedule import Schedule, ScheduleDetail
from tests.conftest import fresh_data_dir
from tests.integration.security.conftest import ADMIN_TOKEN, JWT_SECRET, bearer, jwt_for

pytestmark = pytest.mark.anyio
Client = AsyncTestClient[Any]


@pytest.fixture
async def secure_client(tmp_path: Path, migrated_template: Path) -> AsyncIterator[Client]:
    """The app with auth on: roles come from the JWT each request carries."""
    settings = load_settings(
        env={},
        overrides={
            "storage.data_dir": str(fresh_data_dir(migrated_template, tmp_path / "data")),
            "export.dir": str(tmp_path / "exports"),
            "auth.enabled": True,
            "auth.admin_token": ADMIN_TOKEN,
            "auth.jwt_secret": JWT_SECRET,
            "auth.rate_limit_per_minute": 0,
        },
    )
    async with AsyncTestClient(create_app(settings)) as client:
        yield client


async def _query(client: Client, query: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": query}, headers=headers or {})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("field", "selection", "route", "granted"),
    [
        ("exports", "exports { id }", "/exports", []),
        ("schedules", "schedules { id }", "/schedules", []),
        ("export", 'export(id: "x") { id }', "/exports/x", None),
        ("schedule", 'schedule(id: "x") { schedule { id } }', "/schedules/x", None),
    ],
)
async def test_a_read_only_credential_gets_no_exports_or_schedules_through_graphql(
    secure_client: Client, field: str, selection: str, route: str, granted: list[Any] | None
) -> None:
    """`GET /exports` and `GET /schedules` need the `export` role; `/graphql` only checked `read`."""
    read = bearer(jwt_for("read"))
    assert (await secure_client.get(route, headers=read)).status_code == 403
    answer = await _query(secure_client, f"{{ {selection} }}", read)
    assert (answer.get("data") or {}).get(field) is None, answer
    assert [e["message"] for e in answer["errors"]] == [f"{field}: this field requires the 'export' role"]
    # Other fields of the same query still answer a read credential, and `export` gets all of them.
    assert (await _query(secure_client, "{ stats { transactions } }", read))["data"]["stats"]["transactions"] == 0
    for role in ("export", "admin"):
        answered = await _query(secure_client, f"{{ {selection} }}", bearer(jwt_for(role)))
        assert answered == {"data": {field: granted}}, (role, answered)


async def test_an_unavailable_warehouse_is_named_without_its_secrets(
    client: Client, records: list[dict[str, Any]]
) -> None:
    """REST answers 503 "warehouse unavailable"; GraphQL quoted the warehouse's own error, credentials and all."""
    await client.post("/ingest", content=msgspec.json.encode(records[:5]))
    warehouse = client.app.state.services.warehouse
    warehouse.fail("cannot reach clickhouse://app:hunter2@db.internal:9000/arbitrage")
    try:
        rest = await client.get("/transactions", params={"signer": records[0]["signer"]})
        assert rest.status_code == 503 and "hunter2" not in rest.text
        query = f'{{ transactions(filter: {{signer: "{records[0]["signer"]}"}}) {{ items {{ signature }} }} }}'
        answer = await _query(client, query)
    finally:
        warehouse.fail(None)
    assert "hunter2" not in msgspec.json.encode(answer).decode(), answer
    assert [e["message"] for e in answer["errors"]] == ["warehouse unavailable"], answer


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("query($n: Int!) { transactions(first: $n) { nextCursor } }", {"n": "x"}),
        ("query($f: TransactionFilterInput) { transactions(filter: $f) { nextCursor } }", {"f": {"bogus": 1}}),
    ],
)
async def test_a_bad_variable_is_told_to_the_client_and_not_logged_as_our_error(
    client: Client, caplog: pytest.LogCaptureFixture, query: str, variables: dict[str, Any]
) -> None:
    """REST answers a bad parameter 400 without an ERROR in the log; strawberry logged these with a traceback."""
    with caplog.at_level(logging.ERROR, logger="strawberry"):
        response = await client.post("/graphql", json={"query": query, "variables": variables})
    (error,) = response.json()["errors"]
    assert error["message"].startswith("Variable '$"), error
    assert [r for r in caplog.records if r.name.startswith("strawberry")] == []


async def test_a_read_only_credential_gets_no_exports_over_the_websocket_either(secure_client: Client) -> None:
    """graphql-transport-ws runs queries too, under the credential the socket was opened with."""
    headers = bearer(jwt_for("read"))
    with await secure_client.websocket_connect(
        "/graphql", subprotocols=["graphql-transport-ws"], headers=headers
    ) as ws:
        ws.send_json({"type": "connection_init"})
        assert ws.receive_json()["type"] == "connection_ack"
        ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": "{ schedules { id } }"}})
        message = ws.receive_json(timeout=10)
    errors = message["payload"] if message["type"] == "error" else message["payload"].get("errors")
    assert [e["message"] for e in errors or ()] == ["schedules: this field requires the 'export' role"], message


@pytest.mark.parametrize("suffix", ["=", "!"])
async def test_an_after_cursor_the_rest_api_refuses_is_refused_naming_after(
    client: Client, records: list[dict[str, Any]], suffix: str
) -> None:
    """`GET /transactions?cursor=` holds a cursor to its alphabet; base64 decoding skips what is outside it."""
    await client.post("/ingest", content=msgspec.json.encode(records[:5]))
    cursor = (await client.get("/transactions", params={"limit": 2})).json()["next_cursor"] + suffix
    assert (await client.get("/transactions", params={"cursor": cursor})).status_code == 400
    answer = (
        await client.post(
            "/graphql",
            json={"query": "query($a: String) { transactions(after: $a) { nextCursor } }", "variables": {"a": cursor}},
        )
    ).json()
    assert [e["message"].split(":")[0] for e in answer.get("errors", ())] == ["after"], answer


# --- Field-by-field parity: every REST answer has its GraphQL type, every REST field its GraphQL field. ---

REST_ANSWERS: dict[str, type[msgspec.Struct]] = {
    "transactions": TransactionPage,
    "transaction": RestTransaction,
    "stats": Stats,
    "dailyStats": DailyTotals,
    "features": FeatureList,
    "risk": RiskScore,
    "riskSummary": RiskSummary,
    "exports": ExportJob,
    "export": ExportJob,
    "schedules": Schedule,
    "schedule": ScheduleDetail,
}
"""Each `Query` field and the type of the REST answer (or list item) it mirrors."""
FOLDED = {"Risk": "components"}
"""GraphQL types that hold some REST fields in one JSON field: a transaction's risk components."""


def _struct_of(annotation: Any) -> type[msgspec.Struct] | None:
    """The struct an annotation holds (through `Annotated`, `| None` and `list[...]`), if any."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return annotation
    if get_origin(annotation) in (list, Union, types.UnionType) or hasattr(annotation, "__metadata__"):
        return next((s for a in get_args(annotation) if (s := _struct_of(a)) is not None), None)
    return None


def _missing(rest: type[msgspec.Struct], graphql: GraphQLObjectType, path: str) -> list[str]:
    """REST fields (`path.field`) that `graphql` lacks, nested types included."""
    missing = []
    hints = get_type_hints(rest, include_extras=True)
    for field in msgspec.structs.fields(rest):
        name = to_camel_case(field.encode_name)
        if name not in graphql.fields:
            if graphql.name not in FOLDED:
                missing.append(f"{path}.{name}")
            continue
        inner = get_named_type(graphql.fields[name].type)
        nested = _struct_of(hints[field.name])
        if nested is not None and isinstance(inner, GraphQLObjectType):
            missing += _missing(nested, inner, f"{path}.{name}")
        elif nested is not None and not (isinstance(inner, GraphQLScalarType) and inner.name == "JSON"):
            missing.append(f"{path}.{name} (an object in REST, {inner.name} here)")
    return missing


def test_every_field_of_every_rest_answer_is_a_graphql_field() -> None:
    """A field added to a REST answer and not to its GraphQL type fails here, whatever the test data holds."""
    query = SCHEMA._schema.query_type
    assert query is not None
    missing = []
    for field, rest in REST_ANSWERS.items():
        if field not in query.fields:
            missing.append(f"{field} (no such query field)")
            continue
        answer = get_named_type(query.fields[field].type)
        if isinstance(answer, GraphQLObjectType):
            missing += _missing(rest, answer, field)
        else:
            missing.append(f"{field} ({answer.name}, not an object type)")
    assert missing == []


REST_PARAMETERS = {
    ("/transactions", "transactions"): {"limit": "first", "cursor": "after"},
    ("/transactions/{signature}", "transaction"): {},
    ("/stats/daily", "dailyStats"): {},
    ("/risk/{signature}", "risk"): {},
    ("/risk/summary", "riskSummary"): {},
    ("/exports", "exports"): {},
    ("/exports/{job_id}", "export"): {"job_id": "id"},
    ("/schedules/{schedule_id}", "schedule"): {"schedule_id": "id"},
}
"""REST reads with parameters, their `Query` field, and the parameters GraphQL names otherwise."""


async def test_every_parameter_of_a_rest_read_is_an_argument_of_its_graphql_field(client: Client) -> None:
    """The filters of `/transactions` are the fields of `filter`; other parameters are arguments of their own."""
    openapi = (await client.get("/schema/openapi.json")).json()
    query = SCHEMA._schema.query_type
    assert query is not None
    missing = []
    for (path, field), renamed in REST_PARAMETERS.items():
        if field not in query.fields:
            missing.append(f"{field} (no such query field)")
            continue
        arguments = query.fields[field].args
        filters = get_named_type(arguments["filter"].type).fields if "filter" in arguments else {}  # type: ignore[union-attr]
        for parameter in openapi["paths"][path]["get"].get("parameters", ()):
            name = renamed.get(parameter["name"], to_camel_case(parameter["name"]))
            if name not in arguments and name not in filters:
                missing.append(f"{field}: {parameter['name']}")
    assert missing == []


def _selection(kind: Any) -> str:
    """Every field of an object type, recursively: what a client asking for everything sends."""
    named = get_named_type(kind)
    if not isinstance(named, GraphQLObjectType):
        return ""
    return "{ " + " ".join(f"{name} {_selection(field.type)}" for name, field in named.fields.items()) + " }"


def _everything(field: str, arguments: str = "") -> str:
    query = SCHEMA._schema.query_type
    assert query is not None
    return f"{{ {field}{arguments} {_selection(query.fields[field].type)} }}"


def _fold_risk(transaction: dict[str, Any]) -> dict[str, Any]:
    """A GraphQL transaction with its risk as REST nests it (score, level and components side by side)."""
    risk = transaction["risk"]
    if risk is None:
        return transaction
    return {**transaction, "risk": {"score": risk["score"], "level": risk["level"], **risk["components"]}}


def _assert_same(rest: Any, graphql: Any, path: str = "") -> None:
    """`graphql` says what `rest` says: the same fields (in camelCase) with the same values (64-bit integers as text)."""
    if isinstance(rest, dict) and isinstance(graphql, dict) and rest != graphql:
        assert {to_camel_case(k) for k in rest} == set(graphql), path
        for key, value in rest.items():
            _assert_same(value, graphql[to_camel_case(key)], f"{path}.{key}")
    elif isinstance(rest, list) and isinstance(graphql, list):
        assert len(rest) == len(graphql), path
        for i, (r, g) in enumerate(zip(rest, graphql, strict=True)):
            _assert_same(r, g, f"{path}[{i}]")
    elif isinstance(rest, int) and not isinstance(rest, bool) and isinstance(graphql, str):
        assert graphql == str(rest), path
    else:
        assert graphql == rest, (path, rest, graphql)


async def _data(client: Client, query: str, headers: dict[str, str] | None = None) -> Any:
    answer = await _query(client, query, headers)
    assert "errors" not in answer, answer["errors"]
    return answer["data"]


async def test_graphql_answers_what_rest_answers_field_by_field(client: Client, records: list[dict[str, Any]]) -> None:
    """Each read on the same stored rows, asking GraphQL for every field it has; they used to lack many."""
    await client.post("/ingest", content=msgspec.json.encode(records))
    signer = records[0]["signer"]
    rest_page = (await client.get("/transactions", params={"limit": 3, "signer": signer})).json()
    page = (await _data(client, _everything("transactions", f'(first: 3, filter: {{signer: "{signer}"}})')))[
        "transactions"
    ]
    page["items"] = [_fold_risk(t) for t in page["items"]]
    _assert_same(rest_page, page, "transactions")
    cursor = rest_page["next_cursor"]
    rest_next = (await client.get("/transactions", params={"limit": 3, "cursor": cursor})).json()
    after = (await _data(client, _everything("transactions", f'(first: 3, after: "{cursor}")')))["transactions"]
    after["items"] = [_fold_risk(t) for t in after["items"]]
    _assert_same(rest_next, after, "transactions(after)")

    signature = rest_page["items"][0]["signature"]
    one = (await _data(client, _everything("transaction", f'(signature: "{signature}")')))["transaction"]
    _assert_same((await client.get(f"/transactions/{signature}")).json(), _fold_risk(one), "transaction")
    risk = (await _data(client, _everything("risk", f'(signature: "{signature}")')))["risk"]
    _assert_same((await client.get(f"/risk/{signature}")).json(), risk, "risk")

    reads = [
        ("/stats", {}, "stats", ""),
        ("/stats/daily", {"days": 3}, "dailyStats", "(days: 3)"),
        ("/features", {}, "features", ""),
        ("/risk/summary", {"hours": 48}, "riskSummary", "(hours: 48)"),
    ]
    for route, params, field, arguments in reads:
        rest = (await client.get(route, params=params)).json()
        graphql = (await _data(client, _everything(field, arguments)))[field]
        _assert_same(rest["days"] if field == "dailyStats" else rest, graphql, field)


async def _until(client: Client, route: str, done: Callable[[Any], bool]) -> None:
    """Polls a REST read until `done` holds for its answer (the app runs on the test client's own loop)."""
    with anyio.fail_after(60):
        while not done((await client.get(route)).json()):  # noqa: ASYNC110 (REST is what there is to poll)
            await anyio.sleep(0.05)


async def test_export_jobs_and_schedules_answer_what_rest_answers_field_by_field(
    client: Client, records: list[dict[str, Any]]
) -> None:
    """`exports` and `schedules` were untyped JSON, without the state filter or one job or schedule by id."""
    await client.post("/ingest", content=msgspec.json.encode(records))
    job = (await client.post("/export/csv", json={"partition_by": ["date"]})).json()
    await _until(client, f"/exports/{job['id']}", lambda j: j["state"] == "done")
    created = (await client.post("/schedule/export", json={"format": "json", "frequency": "daily"})).json()
    run = await client.post(f"/schedules/{created['id']}/run")
    await _until(client, f"/exports/{run.json()['id']}", lambda j: j["state"] == "done")
    await _until(client, f"/schedules/{created['id']}", lambda s: not s["schedule"]["running"])

    jobs = (await client.get("/exports", params={"limit": 5})).json()["items"]
    assert len(jobs) == 2 and jobs[-1]["files"], jobs
    _assert_same(jobs, (await _data(client, _everything("exports", "(limit: 5)")))["exports"], "exports")
    done = (await client.get("/exports", params={"state": "done", "limit": 1})).json()["items"]
    graphql_done = (await _data(client, _everything("exports", '(limit: 1, state: "done")')))["exports"]
    _assert_same(done, graphql_done, "exports(state)")
    one = (await _data(client, _everything("export", f'(id: "{job["id"]}")')))["export"]
    _assert_same((await client.get(f"/exports/{job['id']}")).json(), one, "export")

    schedules = (await client.get("/schedules")).json()["items"]
    _assert_same(schedules, (await _data(client, _everything("schedules")))["schedules"], "schedules")
    detail = (await _data(client, _everything("schedule", f'(id: "{created["id"]}")')))["schedule"]
    rest_detail = (await client.get(f"/schedules/{created['id']}")).json()
    assert rest_detail["last_runs"] and rest_detail["schedule"]["next_run_at"], rest_detail
    _assert_same(rest_detail, detail, "schedule")

    unknown = await _data(client, '{ export(id: "no-such-job") { id } schedule(id: "no-such") { lastRuns { id } } }')
    assert unknown == {"export": None, "schedule": None}
    assert (await client.get("/exports/no-such-job")).status_code == 404


@pytest.mark.parametrize(
    ("query", "argument", "route", "params"),
    [
        ("{ riskSummary(hours: 0) { hours } }", "hours", "/risk/summary", {"hours": 0}),
        ("{ riskSummary(hours: 8761) { hours } }", "hours", "/risk/summary", {"hours": 8761}),
        ('{ risk(signature: "abc") { score } }', "signature", "/risk/abc", {}),
        ('{ exports(state: "finished") { id } }', "state", "/exports", {"state": "finished"}),
    ],
)
async def test_an_argument_out_of_the_rest_bounds_is_an_error_naming_it(
    client: Client, query: str, argument: str, route: str, params: dict[str, Any]
) -> None:
    assert (await client.get(route, params=params)).status_code == 400
    answer = await _query(client, query)
    assert [e["message"].split(":")[0] for e in answer.get("errors", ())] == [argument], answer


async def test_a_job_or_schedule_of_another_caller_is_null_as_rest_answers_404(secure_client: Client) -> None:
    admin = bearer(ADMIN_TOKEN)
    job = (await secure_client.post("/export/csv", json={}, headers=admin)).json()
    created = (
        await secure_client.post("/schedule/export", json={"format": "csv", "frequency": "daily"}, headers=admin)
    ).json()
    other = bearer(jwt_for("export", subject="someone-else"))
    assert (await secure_client.get(f"/exports/{job['id']}", headers=other)).status_code == 404
    assert (await secure_client.get(f"/schedules/{created['id']}", headers=other)).status_code == 404
    query = f'{{ export(id: "{job["id"]}") {{ id }} schedule(id: "{created["id"]}") {{ schedule {{ id }} }} }}'
    assert await _data(secure_client, query, other) == {"export": None, "schedule": None}
    owned = await _data(secure_client, query, admin)
    assert owned == {"export": {"id": job["id"]}, "schedule": {"schedule": {"id": created["id"]}}}
