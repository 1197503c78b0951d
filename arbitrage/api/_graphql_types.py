"""The object types of `/graphql`, each the GraphQL spelling of a REST answer, field for field.

They are built from the REST JSON (`from_json`): a value the REST answer has is the value
GraphQL answers, so the two cannot drift apart in meaning, and a REST field left out here
fails the parity test (`tests/integration/api/test_graphql_parity.py`). Unsigned 64-bit
values (lamports, raw amounts, rows and bytes) are strings: they exceed GraphQL's 32-bit `Int`.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

import msgspec
import strawberry
from strawberry.scalars import JSON

_T = TypeVar("_T")


def _text(value: object) -> str | None:
    """A 64-bit integer as GraphQL text (None stays None)."""
    return None if value is None else str(value)


@strawberry.type
class Leg:
    dex: str
    pool: str
    token_in: str
    token_out: str
    amount_in: str
    """Raw integer units as a string (they exceed GraphQL's 32-bit Int)."""
    amount_out: str
    decimals_in: int
    decimals_out: int
    reserve_in: str | None
    reserve_out: str | None
    price: float | None


@strawberry.type
class Risk:
    score: float | None
    level: str | None
    components: JSON


@strawberry.type
class Transaction:
    signature: str
    slot: str
    block_time: str
    signer: str
    success: bool
    fee_lamports: str
    priority_fee_lamports: str
    jito_tip_lamports: str
    other_cost_lamports: str
    compute_units_consumed: str | None
    compute_unit_limit: str | None
    bundle_id: str | None
    leader: str | None
    legs: list[Leg]
    route: list[str]
    dexes: list[str]
    hops: int
    circular: bool
    start_token: str
    gross_revenue: float
    gross_revenue_sol: float | None
    total_cost_lamports: str
    total_cost_sol: float
    net_profit_sol: float | None
    source: str
    kafka_partition: int | None
    kafka_offset: str | None
    ingested_at: str
    late: bool
    stream_position: str | None
    features: JSON
    risk: Risk | None


_LAMPORTS = ("fee_lamports", "priority_fee_lamports", "jito_tip_lamports", "other_cost_lamports", "total_cost_lamports")
_OPTIONAL_COUNTS = ("compute_units_consumed", "compute_unit_limit", "stream_position", "kafka_offset")


def _leg(leg: dict[str, Any]) -> Leg:
    amounts = {name: _text(leg.get(name)) for name in ("amount_in", "amount_out", "reserve_in", "reserve_out")}
    return from_json(Leg, {**leg, **amounts})


def transaction_from_json(payload: bytes) -> Transaction:
    """A Transaction from the API's rendered JSON (the `/transactions` item shape)."""
    row: dict[str, Any] = msgspec.json.decode(payload)
    risk = row.get("risk")
    fields: dict[str, Any] = {
        name: row.get(name) for name in Transaction.__annotations__ if name not in ("legs", "features", "risk")
    }
    fields |= {name: str(row[name]) for name in (*_LAMPORTS, "slot")}
    fields |= {name: _text(row.get(name)) for name in _OPTIONAL_COUNTS}
    return Transaction(
        **fields,
        legs=[_leg(leg) for leg in row["legs"]],
        features=cast(JSON, row.get("features") or {}),
        risk=Risk(
            score=risk.get("score"),
            level=risk.get("level"),
            components=cast(JSON, {k: v for k, v in risk.items() if k not in ("score", "level")}),
        )
        if risk
        else None,
    )


@strawberry.type
class TransactionPage:
    items: list[Transaction]
    next_cursor: str | None


@strawberry.type
class TokenTotals:
    token: str
    transactions: int
    net_profit_sol: float


@strawberry.type
class DexTotals:
    dex: str
    transactions: int
    net_profit_sol: float


@strawberry.type
class SignerTotals:
    signer: str
    transactions: int
    net_profit_sol: float


@strawberry.type(description="`GET /stats`.")
class Stats:
    transactions: int
    successful: int
    circular: int
    profitable: int
    volume_sol: float | None
    gross_revenue_sol: float | None
    total_cost_sol: float | None
    jito_tips_sol: float | None
    net_profit_sol: float | None
    top_tokens: list[TokenTotals]
    top_dexes: list[DexTotals]
    top_signers: list[SignerTotals]


def stats_from_json(raw: dict[str, Any]) -> Stats:
    fields = dict(raw)
    fields["top_tokens"] = [from_json(TokenTotals, t) for t in raw["top_tokens"]]
    fields["top_dexes"] = [from_json(DexTotals, t) for t in raw["top_dexes"]]
    fields["top_signers"] = [from_json(SignerTotals, t) for t in raw["top_signers"]]
    return from_json(Stats, fields)


@strawberry.type(description="One UTC day of `GET /stats/daily`.")
class DailyStat:
    date: str
    transactions: int
    successful: int
    profitable: int
    volume_sol: float | None
    total_cost_sol: float | None
    jito_tips_sol: float | None
    net_profit_sol: float | None


@strawberry.type(description="A column of `GET /features`.")
class Feature:
    name: str
    group: str
    dtype: str
    unit: str
    window: str
    definition: str


@strawberry.type(description="`GET /features`.")
class FeatureList:
    features: list[Feature]
    risk: list[Feature]
    quality: list[Feature]


@strawberry.type(description="`GET /risk/{signature}`; score and level are null for a row stored before risk scoring.")
class RiskScore:
    signature: str
    score: float | None
    level: str | None
    components: JSON


@strawberry.type
class RiskLevels:
    low: int
    medium: int
    high: int


@strawberry.type(description="`GET /risk/summary`: over the transactions of the last `hours`.")
class RiskSummary:
    hours: int
    transactions: int
    unscored: int
    mean_score: float
    p50_score: float
    p90_score: float
    levels: RiskLevels
    components: JSON


def risk_summary_from_json(raw: dict[str, Any]) -> RiskSummary:
    return from_json(RiskSummary, {**raw, "levels": from_json(RiskLevels, raw["levels"])})


@strawberry.type(description="A file an export wrote.")
class ExportFile:
    path: str
    rows: str
    bytes: str
    sha256: str
    partition: JSON


@strawberry.type(description="`GET /exports/{id}`: state, rows, bytes, progress, files and error of a job.")
class ExportJob:
    id: str
    state: str
    format: str
    request: JSON
    destination: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    rows: str
    rows_total: str
    bytes: str
    progress: float
    files: list[ExportFile]
    error: str | None
    schedule_id: str | None
    due_at: str | None
    ingested_after: str | None
    watermark: str | None
    attempt: int
    principal: str | None


def job_from(job: msgspec.Struct) -> ExportJob:
    """An `arbitrage.export.ExportJob` as `GET /exports/{id}` encodes it."""
    raw: dict[str, Any] = msgspec.to_builtins(job)
    files = [from_json(ExportFile, {**f, "rows": str(f["rows"]), "bytes": str(f["bytes"])}) for f in raw["files"]]
    counts = {name: str(raw[name]) for name in ("rows", "rows_total", "bytes")}
    return from_json(ExportJob, {**raw, **counts, "files": files})


@strawberry.type(description="`GET /schedules/{id}` without its runs: a schedule, its run state and next run.")
class Schedule:
    id: str
    name: str
    format: str
    frequency: str
    cron: str
    request: JSON
    upload_to: str | None
    incremental: bool
    enabled: bool
    created_at: str
    updated_at: str
    watermark: str | None
    last_due: str | None
    last_success_at: str | None
    last_job_id: str | None
    last_error: str | None
    consecutive_failures: int
    next_run_at: str | None
    frequency_error: str | None
    running: bool
    principal: str | None


def schedule_from(value: msgspec.Struct) -> Schedule:
    """An `arbitrage.schedule.Schedule` as `GET /schedules` encodes it."""
    return from_json(Schedule, msgspec.to_builtins(value))


@strawberry.type(description="`GET /schedules/{id}`: a schedule with its latest runs.")
class ScheduleDetail:
    schedule: Schedule
    last_runs: list[ExportJob]


def from_json(kind: type[_T], raw: dict[str, Any]) -> _T:
    """A type whose fields are all plain JSON values, from a REST object (fields it lacks are null)."""
    return kind(**{name: raw.get(name) for name in kind.__annotations__})
