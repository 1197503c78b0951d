"""`/graphql`: the REST reads as queries (transactions, stats, features, risk, exports, schedules); a live subscription.

The schema is a thin skin over the same services as the REST controllers, and its types
(`_graphql_types`) are built from the same JSON the REST reads answer, so both APIs agree. Query cost
is bounded: a request body or WebSocket message of at most 100 KiB, depth, token and alias
limits, `first` at most 1000 over the whole query, and 16 subscriptions per connection.
GraphiQL is served from `api/static/graphiql` (vendored from npm: graphiql 3.8.3, react
18.3.1), not a CDN.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import AsyncGenerator, Awaitable, Callable, Hashable, Iterator
from datetime import datetime
from typing import Any, Literal, overload

import msgspec
import strawberry
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationType,
    SelectionSetNode,
    Undefined,
    ValidationContext,
    ValidationRule,
    get_operation_ast,
    value_from_ast_untyped,
)
from litestar import Litestar, WebSocket
from litestar.datastructures import State
from litestar.exceptions import LitestarDeprecationWarning, WebSocketDisconnect
from strawberry.extensions import MaskErrors, MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter, SchemaExtension
from strawberry.litestar import make_graphql_controller
from strawberry.types import ExecutionContext, Info
from strawberry.utils.str_converters import to_camel_case

from arbitrage.api._graphql_types import (
    DailyStat,
    ExportJob,
    Feature,
    FeatureList,
    RiskScore,
    RiskSummary,
    Schedule,
    ScheduleDetail,
    Stats,
    Transaction,
    TransactionPage,
    from_json,
    job_from,
    risk_summary_from_json,
    schedule_from,
    stats_from_json,
    transaction_from_json,
)
from arbitrage.api.features import MAX_RISK_HOURS, risk_score_of, risk_summary_of
from arbitrage.api.transactions import FILTER_TYPES, Cursor, TransactionSignature, json_type
from arbitrage.cache import ResponseCache, ShortCache
from arbitrage.errors import ValidationError, WarehouseUnavailable
from arbitrage.export import JobNotFound, JobState
from arbitrage.features import FEATURES, LATE_COLUMN
from arbitrage.risk import RISK_COLUMNS
from arbitrage.schedule import ScheduleNotFound
from arbitrage.security import CredentialWatch, Identity, identity_of, requires
from arbitrage.services import Services
from arbitrage.storage import TransactionFilter, decode_cursor, encode_cursor
from arbitrage.stream import StreamFilter, render_transactions

MAX_PAGE = 1000
DEFAULT_PAGE = 50
MAX_DEPTH = 8
MAX_TOKENS = 2000
MAX_ALIASES = 15
MAX_SUBSCRIPTIONS = 16
"""Active subscriptions of one connection at most: each costs a decode and a serialization per
event (100 on one socket took 8 s of the event loop per 1000 stored rows), and one socket must
not cost what a thousand clients do."""
MAX_REQUEST_BYTES = 100 * 1024
"""An HTTP body (bytes) or WebSocket message (characters) at most: the 100 kB Apollo Server takes.
The app-wide bound is ingest's 64 MiB, and Granian takes WebSocket messages up to 64 MiB; decoded
whole, unused variables of 8 MiB held 195 MiB for as long as their subscription ran."""
MESSAGE_TOO_BIG = 1009
"""WebSocket close code for a message over `MAX_REQUEST_BYTES` (RFC 6455)."""
_SUBSCRIPTIONS_KEY = "active_subscriptions"
"""Where a connection's context (one dict per WebSocket) counts its active subscriptions."""

log = logging.getLogger(__name__)


@strawberry.input(description="The filters of `GET /transactions`, with the same bounds.")
class TransactionFilterInput:
    token: str | None = None
    dex: str | None = None
    signer: str | None = None
    min_profit_sol: float | None = None


_SIGNATURE = json_type(TransactionSignature)
_CURSOR = json_type(Cursor)


def _checked(value: object, kind: Any, argument: str) -> None:
    """Refuse `value` unless the REST API would take it for the same parameter (`kind` holds its bounds)."""
    try:
        msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        raise ValidationError(argument, str(exc)) from None


def _filter_values(value: TransactionFilterInput | None) -> dict[str, Any]:
    """The filter's values by name, each checked as `/transactions` checks it."""
    values = {name: getattr(value, name, None) for name in FILTER_TYPES}
    for name, kind in FILTER_TYPES.items():
        _checked(values[name], kind, f"filter.{to_camel_case(name)}")
    return values


class FieldForbidden(Exception):
    """The caller's credential lacks the role a field's REST route needs (that route's 403)."""

    def __init__(self, field: str, role: str) -> None:
        super().__init__(f"{field}: this field requires the {role!r} role")


class CredentialRevoked(Exception):
    """The credential a subscription was started with no longer holds (revoked, expired): it ends."""


def _connection(info: Info[Any, Any]) -> Any:
    """The HTTP request, or the WebSocket of a subscription, an operation came in on."""
    return info.context.get("request") or info.context.get("socket")


def _require(info: Info[Any, Any], role: str) -> Identity:
    """The caller, unless it lacks `role`: `/graphql` admits `read`, some fields need more."""
    connection = _connection(info)
    identity = identity_of(connection) if connection is not None else None
    if identity is None or role not in identity.roles:
        raise FieldForbidden(info.field_name, role)
    return identity


def _services(info: Info[Any, Any]) -> Services:
    services = info.context["services"]
    assert isinstance(services, Services)
    return services


def _owned(info: Info[Any, Any], extra: str) -> tuple[Any, str | None]:
    """The exports or schedules service (None when off) and whose the caller may see; needs `export`."""
    scope = _require(info, "export").owner_scope
    return _services(info).extras.get(extra), scope


async def _aggregate(services: Services, key: tuple[Hashable, ...], compute: Callable[[], Awaitable[Any]]) -> Any:
    """An aggregate through the answers `/stats` shares (same keys): aliases and concurrent queries compute it once."""
    answers = services.extras.get(ShortCache.EXTRAS_KEY)
    if not isinstance(answers, ShortCache):
        return await compute()
    cache = services.extras.get(ResponseCache.EXTRAS_KEY)
    generation = await cache.generation() if isinstance(cache, ResponseCache) else None
    return await answers.get((*key, generation), compute)


@strawberry.type
class Query:
    @strawberry.field(description="Newest first; pass `nextCursor` back as `after`. `first` is 1-1000.")
    async def transactions(
        self,
        info: Info[Any, Any],
        filter: TransactionFilterInput | None = None,
        first: int = DEFAULT_PAGE,
        after: str | None = None,
    ) -> TransactionPage:
        if not 1 <= first <= MAX_PAGE:
            raise ValidationError("first", f"must be 1-{MAX_PAGE}")
        services = _services(info)
        filters = TransactionFilter(**_filter_values(filter))
        _checked(after, _CURSOR, "after")
        before = decode_cursor(after, "after") if after else None
        items = services.recent.page(first + 1, before) if filters.is_empty else None
        if items is None:
            items = render_transactions(await services.reader.page(filters, first + 1, before))
        page = [transaction_from_json(item) for item in items[:first]]
        cursor = None
        if len(items) > first:
            last = page[-1]
            cursor = encode_cursor(datetime.fromisoformat(last.block_time.replace("Z", "+00:00")), last.signature)
        return TransactionPage(items=page, next_cursor=cursor)

    @strawberry.field(description="One stored transaction with its legs, features and risk; null when unknown.")
    async def transaction(self, info: Info[Any, Any], signature: str) -> Transaction | None:
        _checked(signature, _SIGNATURE, "signature")
        frame = await _services(info).reader.get(signature)
        return None if frame.is_empty() else transaction_from_json(render_transactions(frame)[0])

    @strawberry.field(description="`GET /stats`: totals over everything stored, and the top tokens, DEXes and signers.")
    async def stats(self, info: Info[Any, Any]) -> Stats:
        services = _services(info)
        return stats_from_json(await _aggregate(services, ("stats",), services.reader.stats))

    @strawberry.field(description="`GET /stats/daily`: one row per UTC day for the last `days` days (1-3650).")
    async def daily_stats(self, info: Info[Any, Any], days: int = 30) -> list[DailyStat]:
        if not 1 <= days <= 3650:
            raise ValidationError("days", "must be 1-3650")
        services = _services(info)

        async def compute() -> dict[str, list[dict[str, Any]]]:
            return {"days": await services.reader.daily(days)}

        rows = (await _aggregate(services, ("daily", days), compute))["days"]
        return [from_json(DailyStat, row) for row in rows]

    @strawberry.field(description="`GET /features`: the feature columns, then the risk columns and quality flags.")
    def features(self) -> FeatureList:
        return FeatureList(
            features=[from_json(Feature, msgspec.to_builtins(f)) for f in FEATURES],
            risk=[from_json(Feature, msgspec.to_builtins(c)) for c in RISK_COLUMNS],
            quality=[from_json(Feature, msgspec.to_builtins(LATE_COLUMN))],
        )

    @strawberry.field(description="`GET /risk/{signature}`: score, level and components; null when not stored.")
    async def risk(self, info: Info[Any, Any], signature: str) -> RiskScore | None:
        _checked(signature, _SIGNATURE, "signature")
        score = await risk_score_of(_services(info).reader, signature)
        return None if score is None else from_json(RiskScore, msgspec.to_builtins(score))

    @strawberry.field(
        description="`GET /risk/summary`: levels, score quantiles and mean components over the last `hours` (1-8760)."
    )
    async def risk_summary(self, info: Info[Any, Any], hours: int = 24) -> RiskSummary:
        if not 1 <= hours <= MAX_RISK_HOURS:
            raise ValidationError("hours", f"must be 1-{MAX_RISK_HOURS}")
        summary = await risk_summary_of(_services(info).reader, hours)
        return risk_summary_from_json(msgspec.to_builtins(summary))

    @strawberry.field(
        description="`GET /exports`: export jobs, newest first (`limit` 1-1000, `state` one of queued, running, "
        "done, failed, cancelled); empty when exports are off. Needs the `export` role."
    )
    async def exports(self, info: Info[Any, Any], limit: int = 100, state: str | None = None) -> list[ExportJob]:
        service, scope = _owned(info, "exports")
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationError("limit", f"must be 1-{MAX_PAGE}")
        _checked(state, JobState | None, "state")
        jobs = [] if service is None else await service.list(limit=limit, state=state, principal=scope)
        return [job_from(job) for job in jobs]

    @strawberry.field(
        description="`GET /exports/{id}`; null when there is no such job, or it is another caller's (REST's 404). "
        "Needs the `export` role."
    )
    async def export(self, info: Info[Any, Any], id: str) -> ExportJob | None:
        service, scope = _owned(info, "exports")
        if service is None:
            return None
        try:
            return job_from(await service.get(id, principal=scope))
        except JobNotFound:
            return None

    @strawberry.field(
        description="`GET /schedules`: export schedules with their next run; empty when schedules are off. "
        "Needs the `export` role."
    )
    async def schedules(self, info: Info[Any, Any]) -> list[Schedule]:
        service, scope = _owned(info, "schedules")
        return [] if service is None else [schedule_from(s) for s in await service.list(principal=scope)]

    @strawberry.field(
        description="`GET /schedules/{id}`: a schedule with its latest runs; null when there is no such schedule, "
        "or it is another caller's (REST's 404). Needs the `export` role."
    )
    async def schedule(self, info: Info[Any, Any], id: str) -> ScheduleDetail | None:
        service, scope = _owned(info, "schedules")
        if service is None:
            return None
        try:
            detail = await service.get(id, principal=scope)
        except ScheduleNotFound:
            return None
        return ScheduleDetail(
            schedule=schedule_from(detail.schedule), last_runs=[job_from(j) for j in detail.last_runs]
        )


@strawberry.type
class Subscription:
    @strawberry.subscription(description="Newly stored transactions matching the filter, as they are stored.")
    async def transactions(
        self,
        info: Info[Any, Any],
        filter: TransactionFilterInput | None = None,
    ) -> AsyncGenerator[Transaction, None]:
        services = _services(info)
        assert services.feed is not None
        filters = StreamFilter(**_filter_values(filter))
        context = info.context
        if context.setdefault(_SUBSCRIPTIONS_KEY, 0) >= MAX_SUBSCRIPTIONS:
            raise ValidationError("subscription", f"at most {MAX_SUBSCRIPTIONS} at once on one connection")
        watch = CredentialWatch(_connection(info), "read")
        resume = await services.feed.resume(filters, services.settings.stream.client_queue_events, None)
        context[_SUBSCRIPTIONS_KEY] += 1
        try:
            while True:
                items = await resume.subscription.next()
                if not watch.holds():
                    raise CredentialRevoked("the credential was revoked or has expired")
                if items is None:
                    raise ValidationError("subscription", "slow consumer: too many undelivered events")
                for batch, selected in items:
                    events = batch.events if selected is None else [batch.events[i] for i in selected]
                    for event in events:
                        yield transaction_from_json(event.payload)
        finally:
            context[_SUBSCRIPTIONS_KEY] -= 1
            services.feed.hub.unsubscribe(resume.subscription)


def _first(field: FieldNode, variables: dict[str, Any]) -> int:
    """The `first` a `transactions` field asks for (its default when absent; 0 when not an int, which fails anyway).

    A variable the request leaves out, with no default of its own, leaves `first` to its default too.
    """
    argument = next((a for a in field.arguments or () if a.name.value == "first"), None)
    if argument is None:
        return DEFAULT_PAGE
    value = value_from_ast_untyped(argument.value, variables)
    if value is Undefined:
        return DEFAULT_PAGE
    return max(0, value) if isinstance(value, int) and not isinstance(value, bool) else 0


def _rows_asked(
    selections: SelectionSetNode,
    fragments: dict[str, FragmentDefinitionNode],
    variables: dict[str, Any],
    seen: set[str],
) -> dict[str, int]:
    """Rows each root `transactions` field asks for, by response key (fields of one key merge into one)."""
    asked: dict[str, int] = {}
    for selection in selections.selections:
        if isinstance(selection, FieldNode) and selection.name.value == "transactions":
            asked[selection.alias.value if selection.alias else "transactions"] = _first(selection, variables)
        elif isinstance(selection, InlineFragmentNode):
            asked |= _rows_asked(selection.selection_set, fragments, variables, seen)
        elif isinstance(selection, FragmentSpreadNode) and selection.name.value in fragments.keys() - seen:
            seen.add(selection.name.value)
            asked |= _rows_asked(fragments[selection.name.value].selection_set, fragments, variables, seen)
    return asked


def _query_rows(document: DocumentNode, operation_name: str | None, provided: dict[str, Any]) -> int:
    """Transactions the operation to run asks for in all (0 for a subscription, or an ambiguous operation)."""
    operation = get_operation_ast(document, operation_name)
    if operation is None or operation.operation != OperationType.QUERY:
        return 0
    defaults = {
        d.variable.name.value: value_from_ast_untyped(d.default_value)
        for d in operation.variable_definitions or ()
        if d.default_value is not None
    }
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    return sum(_rows_asked(operation.selection_set, fragments, defaults | provided, set()).values())


class _RowBudget(SchemaExtension):
    """Refuses a query whose `transactions` fields ask for more than `MAX_PAGE` rows in all.

    `first` bounds one field, but aliases multiply it: one 2 KB query of 15 aliased
    `transactions(first: 1000)` held the event loop for 3.6 s and answered 40 MB. Checked
    with the other validation rules, before anything runs; variables count with their values.
    """

    def on_operation(self) -> Iterator[None]:
        execution = self.execution_context

        class RowBudget(ValidationRule):
            def __init__(self, context: ValidationContext) -> None:
                super().__init__(context)
                asked = _query_rows(context.document, execution.operation_name, execution.variables or {})
                if asked > MAX_PAGE:
                    message = f"at most {MAX_PAGE} transactions in all of a query; this one asks for {asked}"
                    context.report_error(GraphQLError(str(ValidationError("first", message))))

        execution.validation_rules = (*execution.validation_rules, RowBudget)
        yield


_CLIENT_ERRORS = (ValidationError, FieldForbidden, CredentialRevoked)
"""Errors that are the client's answer, told as they are; anything else is ours."""


class _PlainErrors(MaskErrors):
    """Tells our failures as REST does ("warehouse unavailable", "internal error"), not in their own words.

    Their messages quote what the client must not see: a warehouse URL with its password, SQL, paths.
    The original error stays attached for our log (`_Schema.process_errors`).
    """

    def __init__(self) -> None:
        super().__init__(should_mask_error=_ours)

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        unavailable = isinstance(error.original_error, WarehouseUnavailable)
        return GraphQLError(
            "warehouse unavailable" if unavailable else "internal error",
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            original_error=error.original_error,
        )


def _ours(error: GraphQLError) -> bool:
    """Raised on our side; a bad variable's error wraps graphql-core's own (a `GraphQLError`), the client's."""
    original = error.original_error
    return original is not None and not isinstance(original, (*_CLIENT_ERRORS, GraphQLError))


class _Schema(strawberry.Schema):
    """Logs what went wrong on our side only: a client's bad argument is its answer, not an ERROR in our log."""

    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        ours = [e for e in errors if _ours(e)]
        for error in ours:
            if isinstance(error.original_error, WarehouseUnavailable):
                log.warning("warehouse unavailable: %s", error.original_error)
        super().process_errors(
            [e for e in ours if not isinstance(e.original_error, WarehouseUnavailable)], execution_context
        )


SCHEMA = _Schema(
    query=Query,
    subscription=Subscription,
    extensions=[
        lambda: QueryDepthLimiter(max_depth=MAX_DEPTH),
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
        lambda: MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
        _RowBudget,
        _PlainErrors,
    ],
)

_GRAPHIQL_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>arbitrage · GraphiQL</title>
<link rel="stylesheet" href="/static/graphiql/graphiql.min.css">
<style>body{margin:0;height:100vh}#graphiql{height:100vh}</style></head>
<body><div id="graphiql">Loading…</div>
<script src="/static/graphiql/react.production.min.js"></script>
<script src="/static/graphiql/react-dom.production.min.js"></script>
<script src="/static/graphiql/graphiql.min.js"></script>
<script>
const ws = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/graphql";
const fetcher = GraphiQL.createFetcher({ url: "/graphql", subscriptionUrl: ws });
ReactDOM.createRoot(document.getElementById("graphiql")).render(React.createElement(GraphiQL, { fetcher }));
</script></body></html>
"""


async def _context(state: State) -> dict[str, Any]:
    return {"services": state.get("services")}


_Base = make_graphql_controller(SCHEMA, path="/graphql", context_getter=_context, graphql_ide="graphiql")


class _BoundedWebSocket(WebSocket[Any, Any, Any]):
    """Closes the connection (1009) on a message over `MAX_REQUEST_BYTES`, before strawberry decodes it."""

    @overload
    async def receive_data(self, mode: Literal["text"]) -> str: ...

    @overload
    async def receive_data(self, mode: Literal["binary"]) -> bytes: ...

    async def receive_data(self, mode: Literal["text", "binary"]) -> str | bytes:
        data = await super().receive_data(mode)
        if len(data) > MAX_REQUEST_BYTES:
            await self.close(MESSAGE_TOO_BIG, f"a message is at most {MAX_REQUEST_BYTES} characters")
            raise WebSocketDisconnect(detail="message too big", code=MESSAGE_TOO_BIG)
        return data


class GraphQLController(_Base):  # type: ignore[misc,valid-type]
    """Strawberry's controller with GraphiQL from local assets and a size bound on what clients send."""

    tags = ["graphql"]
    include_in_schema = False
    guards = [requires("read")]
    request_max_body_size = MAX_REQUEST_BYTES
    websocket_class = _BoundedWebSocket

    @property
    def graphql_ide_html(self) -> str:
        return _GRAPHIQL_HTML

    def decode_json(self, data: str | bytes) -> object:
        """JSON nested past Python's recursion limit is a client's invalid message, not our failure (4500)."""
        try:
            return super().decode_json(data)
        except RecursionError:
            raise json.JSONDecodeError("nested too deeply", "", 0) from None


def register_graphql(app: Litestar) -> None:
    """Add `/graphql` to the app.

    Strawberry's controller declares its dependencies the pre-2.22 way (inferred), which
    Litestar warns about at registration; that one warning is silenced here, for it only.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*Inferred dependency field", LitestarDeprecationWarning)
        app.register(GraphQLController)
