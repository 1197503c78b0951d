"""Every role against every route class, API keys and JWTs end to end, hardening, secrets.

One app with auth on (real embedded warehouse) serves the whole module.
"""

from __future__ import annotations

import base64
import stat
import time
from typing import Any

import msgspec
import pytest
from litestar import get
from litestar.testing import AsyncTestClient

from arbitrage.security import requires, role_of
from tests.integration.security.conftest import ADMIN_TOKEN, JWT_SECRET, LogCapture, bearer, jwt_for

pytestmark = pytest.mark.anyio
Client = AsyncTestClient[Any]


@get("/probe/export", guards=[requires("export")], sync_to_thread=False)
def export_probe() -> dict[str, bool]:
    return {"ok": True}


ROUTES = [
    ("GET", "/transactions", "read"),
    ("GET", "/stats/daily", "read"),
    ("GET", "/features", "read"),
    ("POST", "/ingest", "ingest"),
    ("GET", "/export/formats", "export"),
    ("GET", "/admin/config", "admin"),
    ("GET", "/admin/keys", "admin"),
    ("GET", "/health", "public"),
]
GRANTS = {"read": {"read", "export", "admin"}, "export": {"export", "admin"}, "ingest": {"ingest", "admin"}}


@pytest.fixture(scope="module")
async def client(secure_client: Client) -> Client:
    paths = {route.path for route in secure_client.app.routes}
    if "/export/formats" not in paths:
        secure_client.app.register(export_probe)
    return secure_client


def _path(client: Client, path: str) -> str:
    paths = {route.path for route in client.app.routes}
    return path if path in paths else "/probe/export"


async def _call(client: Client, method: str, path: str, headers: dict[str, str]) -> int:
    if method == "POST":
        response = await client.post(_path(client, path), content=b"[]", headers=headers)
    else:
        response = await client.get(_path(client, path), headers=headers)
    return response.status_code


@pytest.mark.parametrize(("method", "path", "role"), ROUTES)
async def test_every_role_gets_401_403_or_through_on_every_route_class(
    client: Client, method: str, path: str, role: str
) -> None:
    credentials = {f"jwt:{r}": bearer(jwt_for(r)) for r in ("read", "export", "ingest", "admin")}
    credentials["admin_token"] = bearer(ADMIN_TOKEN)
    for name, headers in credentials.items():
        status = await _call(client, method, path, headers)
        held = "admin" if name == "admin_token" else name.split(":")[1]
        if role == "public" or role == held or held in GRANTS.get(role, set()):
            assert status not in (401, 403), (name, path, status)
        else:
            assert status == 403, (name, path, status)
    for headers in ({}, bearer("not-a-credential"), {"X-API-Key": "arb_000000000000_" + "x" * 43}):
        status = await _call(client, method, path, headers)
        assert status == (200 if role == "public" else 401), (headers, path, status)


async def test_a_401_says_how_to_authenticate_and_a_403_names_the_role(client: Client) -> None:
    missing = await client.get("/transactions")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["status_code"] == 401
    forbidden = await client.get("/admin/config", headers=bearer(jwt_for("read")))
    assert forbidden.status_code == 403
    assert "admin" in forbidden.json()["detail"]


async def test_expired_forged_and_foreign_jwts_are_rejected(client: Client) -> None:
    good = jwt_for("admin")
    header, payload, signature = good.split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    from arbitrage.security import sign_hs256

    tokens = {
        "expired": jwt_for("admin", lifetime=-3600),
        "forged signature": f"{header}.{payload}.{flipped}",
        "other secret": sign_hs256({"sub": "x", "roles": ["admin"], "exp": int(time.time()) + 60}, "guess"),
        "alg none": "eyJhbGciOiJub25lIn0." + payload + ".",
        "no expiry": sign_hs256({"sub": "x", "roles": ["admin"]}, JWT_SECRET),
    }
    for reason, token in tokens.items():
        response = await client.get("/admin/config", headers=bearer(token))
        assert response.status_code == 401, reason
        assert token not in response.text
    assert (await client.get("/admin/config", headers=bearer(good))).status_code == 200


async def test_a_forged_jwt_nested_past_the_json_decoder_is_a_401_like_any_forged_token(client: Client) -> None:
    """Not a 400 'nested too deeply': that answer skipped the challenge and the failed-attempt budget."""
    header = base64.urlsafe_b64encode(b"[" * 3000 + b"]" * 3000).rstrip(b"=").decode()
    for token in (f"{header}.e30.AA", f"eyJhbGciOiJIUzI1NiJ9.{header}.AA"):
        response = await client.get("/transactions", headers=bearer(token))
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_api_keys_are_shown_once_stored_hashed_and_stop_working_when_revoked(client: Client) -> None:
    admin = bearer(ADMIN_TOKEN)
    created = await client.post("/admin/keys", json={"name": "notebook", "roles": ["read"]}, headers=admin)
    assert created.status_code == 201, created.text
    token, key_id = created.json()["token"], created.json()["key"]["id"]
    assert token.startswith(f"arb_{key_id}_")
    assert (await client.get("/stats/daily", headers={"X-API-Key": token})).status_code == 200
    assert (await client.get("/stats/daily", headers=bearer(token))).status_code == 200
    assert (await client.post("/ingest", content=b"[]", headers=bearer(token))).status_code == 403

    listed = await client.get("/admin/keys", headers=admin)
    assert key_id in {k["id"] for k in listed.json()["items"]}
    assert token not in listed.text
    stored = await client.app.state.services.warehouse.query_arrow(
        "SELECT * FROM arbitrage.api_keys WHERE id = {id:String}", {"id": key_id}
    )
    row_text = msgspec.json.encode(stored.to_pylist(), enc_hook=str).decode()
    assert token not in row_text and token.split("_", 2)[2] not in row_text
    import hashlib

    assert stored.column("hash")[0].as_py() == hashlib.sha256(token.encode()).hexdigest()

    revoked = await client.delete(f"/admin/keys/{key_id}", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert (await client.get("/stats/daily", headers=bearer(token))).status_code == 401
    assert (await client.delete("/admin/keys/ffffffffffff", headers=admin)).status_code == 404
    assert (await client.delete("/admin/keys/..%2F..", headers=admin)).status_code in (400, 404)


async def test_keys_with_unknown_roles_or_bad_fields_are_refused(client: Client) -> None:
    admin = bearer(ADMIN_TOKEN)
    for body in ({"roles": ["root"]}, {"roles": []}, {"roles": ["read"], "expires_in_days": -1}, {"bogus": 1}):
        response = await client.post("/admin/keys", json=body, headers=admin)
        assert response.status_code == 400, body


async def test_an_expired_key_is_refused(client: Client) -> None:
    admin = bearer(ADMIN_TOKEN)
    created = await client.post("/admin/keys", json={"roles": ["read"], "expires_in_days": 0.00001}, headers=admin)
    token = created.json()["token"]
    deadline = time.monotonic() + 5
    while (await client.get("/features", headers=bearer(token))).status_code != 401:
        assert time.monotonic() < deadline


INJECTIONS = ["' OR 1=1 --", "x'); DROP TABLE arbitrage.transactions; --", "{token:String}", "1 UNION SELECT 1", "\\'"]
FILTERS = [
    ("/transactions", "token"),
    ("/transactions", "dex"),
    ("/transactions", "signer"),
    ("/transactions", "min_profit_sol"),
    ("/transactions", "cursor"),
    ("/transactions", "limit"),
    ("/historical", "start"),
    ("/historical", "end"),
    ("/historical", "token"),
    ("/historical", "dex"),
    ("/historical", "signer"),
    ("/historical", "limit"),
    ("/stats/daily", "days"),
    ("/risk/summary", "hours"),
]


async def test_injection_attempts_in_every_filter_parameter_answer_400_and_change_nothing(
    client: Client, records: list[dict[str, Any]]
) -> None:
    ingested = await client.post("/ingest", content=msgspec.json.encode(records[:50]), headers=bearer(ADMIN_TOKEN))
    assert ingested.status_code == 200
    warehouse = client.app.state.services.warehouse

    async def snapshot() -> tuple[Any, ...]:
        count = await warehouse.query_arrow("SELECT count() AS n FROM arbitrage.transactions")
        tables = await warehouse.query_arrow(
            "SELECT name FROM system.tables WHERE database = 'arbitrage' ORDER BY name"
        )
        return count.column("n")[0].as_py(), tuple(tables.column("name").to_pylist())

    before = await snapshot()
    reader = bearer(jwt_for("read"))
    for path, name in FILTERS:
        for payload in INJECTIONS:
            params = {"start": "2024-01-01", "end": "2030-01-01"} if path == "/historical" else {}
            params[name] = payload
            response = await client.get(path, params=params, headers=reader)
            assert response.status_code == 400, (path, name, payload, response.status_code)
            assert "Traceback" not in response.text
    for payload in INJECTIONS:
        for path in ("/transactions/", "/risk/"):
            response = await client.get(path + payload.replace("/", "%2F"), headers=reader)
            assert response.status_code in (400, 404), (path, payload)
    assert await snapshot() == before


async def test_secrets_never_appear_in_admin_config_the_schema_or_logs(client: Client) -> None:
    admin = bearer(ADMIN_TOKEN)
    with LogCapture() as logs:
        created = await client.post("/admin/keys", json={"name": "ci", "roles": ["read"]}, headers=admin)
        api_token = created.json()["token"]
        config = await client.get("/admin/config", headers=admin)
        schema = await client.get("/schema/openapi.json")
        await client.get("/transactions", headers=bearer(api_token[:-1] + "!"))
        await client.get("/transactions", headers=bearer(JWT_SECRET))
        await client.get("/transactions", headers={"X-API-Key": ADMIN_TOKEN + "x"})
        status = await client.get("/admin/status", headers=admin)
    assert config.status_code == schema.status_code == status.status_code == 200
    assert config.json()["auth"]["admin_token"] == "***"
    assert config.json()["auth"]["jwt_secret"] == "***"
    assert "HTTP Request" in logs.text
    for secret in (ADMIN_TOKEN, JWT_SECRET, api_token):
        assert secret not in config.text
        assert secret not in schema.text
        assert secret not in status.text
        assert secret not in logs.text


async def test_admin_status_reports_uptime_versions_ingest_queues_and_the_warehouse(client: Client) -> None:
    status = (await client.get("/admin/status", headers=bearer(ADMIN_TOKEN))).json()
    assert status["uptime_seconds"] >= 0
    assert {"arbitrage", "python", "litestar", "chdb"} <= set(status["versions"])
    assert "stored_per_second" in status["ingest"]
    assert status["queues"]["ingest_pending_batches"] == 0
    tables = {t["table"]: t for t in status["warehouse"]["tables"]}
    assert "schema_migrations" in tables
    assert status["warehouse"]["clickhouse_version"]
    assert isinstance(status["last_errors"], list)


async def test_admin_can_optimize_a_table_and_flush_caches_but_not_name_arbitrary_sql(client: Client) -> None:
    admin = bearer(ADMIN_TOKEN)
    optimized = await client.post("/admin/warehouse/optimize", params={"table": "api_keys"}, headers=admin)
    assert optimized.status_code == 200, optimized.text
    assert optimized.json()["parts_after"] <= max(1, optimized.json()["parts_before"])
    for table in ("system.parts", "transactions; DROP TABLE x", "no_such_table"):
        refused = await client.post("/admin/warehouse/optimize", params={"table": table}, headers=admin)
        assert refused.status_code == 400, table
    flushed = await client.post("/admin/cache/flush", headers=admin)
    assert flushed.status_code == 200 and "response_cache" in flushed.json()["flushed"]


async def test_responses_carry_security_headers_and_no_cors_by_default(client: Client) -> None:
    response = await client.get("/health", headers={"Origin": "https://evil.example"})
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert "access-control-allow-origin" not in response.headers
    preflight = await client.options(
        "/transactions",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    admin = await client.get("/admin/config", headers=bearer(ADMIN_TOKEN))
    assert admin.headers["cache-control"] == "no-store"


async def test_oversized_admin_bodies_are_refused_with_413(client: Client) -> None:
    body = b'{"name": "' + b"x" * 100_000 + b'"}'
    response = await client.post(
        "/admin/keys", content=body, headers={**bearer(ADMIN_TOKEN), "content-type": "application/json"}
    )
    assert response.status_code == 413


async def test_every_route_declares_the_role_it_needs(client: Client) -> None:
    undeclared = []
    for route in client.app.routes:
        if route.path.startswith("/schema") or route.path.startswith("/probe"):
            continue
        handlers = getattr(route, "route_handlers", None) or [route.route_handler]  # type: ignore[attr-defined]
        for handler in handlers:
            if role_of(handler) is None:
                undeclared.append(route.path)
    assert not undeclared, f"routes without a role: {sorted(set(undeclared))}"


def test_generated_admin_token_file_is_private(tmp_path: Any) -> None:
    from arbitrage.config import load_settings
    from arbitrage.security import admin_token, admin_token_path

    settings = load_settings(env={}, overrides={"storage.data_dir": str(tmp_path / "d")})
    token = admin_token(settings)
    path = admin_token_path(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert admin_token(settings) == token
    path.chmod(0o644)
    from arbitrage.errors import ConfigError

    with pytest.raises(ConfigError, match="readable by others"):
        admin_token(settings)


@pytest.mark.parametrize("path", ["/admin/dead-letters/replay", "/admin/kafka/pause", "/admin/kafka/replay"])
async def test_oversized_bodies_are_refused_with_413_on_every_admin_controller(client: Client, path: str) -> None:
    body = b'{"source": "' + b"x" * 100_000 + b'"}'
    headers = {**bearer(ADMIN_TOKEN), "content-type": "application/json"}
    assert (await client.post(path, content=body, headers=headers)).status_code == 413


@pytest.mark.parametrize("body", [{"limit": -1}, {"limit": 0}, {"limit": 2**40}, {"source": "x" * 65}])
async def test_a_dead_letter_replay_out_of_bounds_is_a_400_naming_the_field(
    client: Client, body: dict[str, Any]
) -> None:
    response = await client.post("/admin/dead-letters/replay", json=body, headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 400, response.text
    assert next(iter(body)) in response.text


@pytest.mark.parametrize(
    "path", ["/admin/keys", "/admin/dead-letters/replay", "/admin/kafka/pause", "/export/csv", "/schedule/export"]
)
async def test_a_deeply_nested_body_is_a_400_not_a_500(client: Client, path: str) -> None:
    body = b"[" * 20_000 + b"]" * 20_000
    headers = {**bearer(ADMIN_TOKEN), "content-type": "application/json"}
    with LogCapture() as logs:
        response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert "Traceback" not in logs.text


async def test_the_first_admin_status_already_shows_the_ingest_rate(
    client: Client, records: list[dict[str, Any]]
) -> None:
    """Sampled only when asked, the rate read 0.0 on the first call whatever had been stored."""
    headers = {**bearer(ADMIN_TOKEN), "content-type": "application/json"}
    assert (await client.post("/ingest", content=msgspec.json.encode(records[:50]), headers=headers)).status_code == 200
    status = (await client.get("/admin/status", headers=bearer(ADMIN_TOKEN))).json()
    assert status["ingest"]["stored_per_second"] > 0
