"""Transactions: newest-first pages, one by signature, and historical ranges."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, get_args

import msgspec
from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.enums import MediaType
from litestar.exceptions import NotFoundException
from litestar.openapi import ResponseSpec
from litestar.params import Parameter
from litestar.response import Stream

from arbitrage.api._encoding import accepts_gzip
from arbitrage.api._errors import error_responses
from arbitrage.api._openapi import NDJSON, NdjsonRead, Transaction, WarehouseRead
from arbitrage.cache import HistoricalPages
from arbitrage.errors import ValidationError
from arbitrage.model import DEX_PATTERN
from arbitrage.security import requires
from arbitrage.storage import LATEST, TransactionFilter, TransactionReader, as_utc, decode_cursor, encode_cursor
from arbitrage.stream import RecentTransactions, render_transactions

Limit = Annotated[int, Parameter(ge=1, le=1000, description="Page size, 1-1000.")]
_BASE58 = r"^[1-9A-HJ-NP-Za-km-z]+$"
Token = Annotated[
    str | None, Parameter(min_length=32, max_length=44, pattern=_BASE58, description="Mint anywhere in the route.")
]
Dex = Annotated[str | None, Parameter(min_length=1, max_length=64, pattern=DEX_PATTERN, description="DEX of any leg.")]
Signer = Annotated[
    str | None, Parameter(min_length=32, max_length=44, pattern=_BASE58, description="Signer public key.")
]
MinProfit = Annotated[float | None, Parameter(ge=-1e9, le=1e9, description="Minimum net profit, SOL.")]
TransactionSignature = Annotated[str, Parameter(min_length=64, max_length=88, pattern=_BASE58)]
Cursor = Annotated[
    str | None,
    Parameter(max_length=200, pattern=r"^[A-Za-z0-9_\-]+$", description="`next_cursor` of the previous page."),
]
_LAST_MILLISECOND = LATEST.replace(microsecond=999_000)
Moment = Annotated[
    str,
    Parameter(
        max_length=40,
        description="A date (`2025-01-31`; as `end`, the whole day) or an RFC 3339 datetime (`2025-01-31T12:00:00Z`; "
        "without an offset, UTC). Bounds are inclusive, to the millisecond.",
    ),
]

_BOUNDS = ("gt", "ge", "lt", "le", "multiple_of", "min_length", "max_length", "pattern")


def json_type(parameter: Any) -> Any:
    """A parameter type (`Annotated[T, Parameter(...)]`) with its `Parameter` bounds as `msgspec.Meta`.

    Litestar checks the query the same way (it turns those bounds into `msgspec.Meta`), so a
    value that comes as JSON (a WebSocket subscription, a GraphQL argument) is held to exactly
    the bounds the query string is held to.
    """
    annotated, kwargs = get_args(parameter)
    optional = type(None) in get_args(annotated)
    value = next(arg for arg in get_args(annotated) if arg is not type(None)) if optional else annotated
    meta = {name: getattr(kwargs, name) for name in _BOUNDS if getattr(kwargs, name) is not None}
    bounded: Any = Annotated[value, msgspec.Meta(**meta)]
    return bounded | None if optional else bounded


FILTER_TYPES = {
    name: json_type(parameter)
    for name, parameter in {"token": Token, "dex": Dex, "signer": Signer, "min_profit_sol": MinProfit}.items()
}
"""The filters of `/transactions` by name, as types that hold JSON values to the query's bounds."""


class TransactionPage(msgspec.Struct):
    """A page of `/transactions`, as the schema declares it (bodies are `_RenderedPage`s)."""

    items: list[Transaction]  # type: ignore[valid-type]
    next_cursor: str | None


class _RenderedPage(msgspec.Struct):
    """A `TransactionPage` of rows rendered already: encoded without decoding them."""

    items: list[msgspec.Raw]
    next_cursor: str | None


_PAGE_ENCODER = msgspec.json.Encoder()


def _recent_page_body(recent: RecentTransactions, limit: int, before: tuple[datetime, str] | None) -> bytes | None:
    rows = recent.page(limit + 1, before)
    return None if rows is None else _page_body(rows, limit)


def _page_body(rows: list[bytes], limit: int) -> bytes:
    """The encoded TransactionPage of `limit` rows, given up to one row more (which means a next page)."""
    next_cursor = None
    if len(rows) > limit:
        last = msgspec.json.decode(rows[limit - 1])
        next_cursor = encode_cursor(
            datetime.fromisoformat(last["block_time"].replace("Z", "+00:00")), last["signature"]
        )
    return _PAGE_ENCODER.encode(_RenderedPage([msgspec.Raw(r) for r in rows[:limit]], next_cursor))


def _filters(token: str | None, dex: str | None, signer: str | None, min_profit_sol: float | None) -> TransactionFilter:
    return TransactionFilter(token=token, dex=dex, signer=signer, min_profit_sol=min_profit_sol)


def parse_time(value: str, field: str, *, end_of_day: bool = False) -> datetime:
    """A date or an RFC 3339 datetime (naive is UTC); a date in any ISO 8601 form (`2025-01-31`,
    `20250131`) as `end` means its whole day."""
    text = value.upper()  # RFC 3339 allows a lowercase `t` and `z`
    try:
        day = date.fromisoformat(text)
    except ValueError:
        day = None
    if day is not None:
        return datetime.combine(day, time.max if end_of_day else time.min, UTC)
    try:
        return as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError as exc:
        raise ValidationError(field, f"not a date or RFC 3339 datetime: {value!r}") from exc


def _whole_millisecond(moment: datetime, *, up: bool) -> datetime:
    """The millisecond a stored time can equal, on the inside of a bound: stored times are whole
    milliseconds, so a start between two rounds up (the row just before it stays out) and an end down.
    The bound a cached page keeps is then the one its query used."""
    down = moment - timedelta(microseconds=moment.microsecond % 1000)
    return down + timedelta(milliseconds=1) if up and down != moment and down < _LAST_MILLISECOND else down


def _media_type(request: Request[Any, Any, Any]) -> str:
    """NDJSON when the client prefers it to JSON (`Accept`, with its q-values); JSON otherwise."""
    preferred = request.accept.best_match(["application/json", NDJSON, "application/ndjson"], "application/json")
    return NDJSON if preferred != "application/json" else "application/json"


async def _after_first_read(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`chunks`, read up to the warehouse's first answer before the status is sent.

    A warehouse that cannot answer is then a 503, not a 200 whose body breaks off; the JSON
    array's opening bracket comes before any read, so it does not count as an answer.
    """
    head: list[bytes] = []
    async for chunk in chunks:
        head.append(chunk)
        if chunk != b"[":
            break

    async def resumed() -> AsyncIterator[bytes]:
        for chunk in head:
            yield chunk
        async for chunk in chunks:
            yield chunk

    return resumed()


class TransactionController(Controller):
    tags = ["transactions"]
    guards = [requires("read")]

    @get(
        "/transactions",
        description="Newest first. Pass `next_cursor` back as `cursor` for the next page.",
        responses={
            200: ResponseSpec(
                TransactionPage, description="Request fulfilled, document follows", generate_examples=False
            ),
            **error_responses(400, 503),
        },
        operation_class=WarehouseRead,
    )
    async def list_transactions(
        self,
        reader: NamedDependency[TransactionReader],
        recent: NamedDependency[RecentTransactions],
        limit: Limit = 100,
        cursor: Cursor = None,
        token: Token = None,
        dex: Dex = None,
        signer: Signer = None,
        min_profit_sol: MinProfit = None,
    ) -> Response[bytes]:
        filters = _filters(token, dex, signer, min_profit_sol)
        before = decode_cursor(cursor) if cursor else None
        if filters.is_empty:
            # Unfiltered pages are encoded once per stored batch, not once per request.
            body = recent.derived(("/transactions", limit, before), lambda: _recent_page_body(recent, limit, before))
            if body is not None:
                return Response(body, media_type=MediaType.JSON)
        frame = await reader.page(filters, limit + 1, before)
        return Response(_page_body(render_transactions(frame), limit), media_type=MediaType.JSON)

    @get(
        "/transactions/{signature:str}",
        description="One transaction; 404 when it is not stored.",
        responses={
            200: ResponseSpec(Transaction, description="The transaction", generate_examples=False),
            **error_responses(400, 404, 503),
        },
        operation_class=WarehouseRead,
    )
    async def get_transaction(
        self, reader: NamedDependency[TransactionReader], signature: TransactionSignature
    ) -> msgspec.Raw:
        frame = await reader.get(signature)
        if frame.is_empty():
            raise NotFoundException(f"transaction {signature} not found")
        return msgspec.Raw(render_transactions(frame)[0])

    @get(
        "/historical",
        description="Transactions with start <= block_time <= end, oldest first: a JSON array, "
        "or NDJSON when `Accept` prefers `application/x-ndjson`; a limit above 10,000 rows is streamed as it is read. "
        "Up to 10,000 rows are gzipped when `Accept-Encoding` allows gzip. "
        "Dates (YYYY-MM-DD) or RFC 3339 datetimes (without an offset, UTC).",
        responses={
            200: ResponseSpec(
                list[Transaction],  # type: ignore[valid-type]
                description="The transactions (NDJSON: one per line)",
                generate_examples=False,
            ),
            **error_responses(400, 503),
        },
        operation_class=NdjsonRead,
    )
    async def historical(
        self,
        request: Request[Any, Any, Any],
        historical: NamedDependency[HistoricalPages],
        start: Moment,
        end: Moment,
        token: Token = None,
        dex: Dex = None,
        signer: Signer = None,
        min_profit_sol: MinProfit = None,
        limit: Annotated[int, Parameter(ge=1, le=1_000_000, description="Rows at most (default 1000).")] = 1000,
    ) -> Response[Any]:
        start_at = parse_time(start, "start")
        end_at = parse_time(end, "end", end_of_day=True)
        if end_at < start_at:
            raise ValidationError("end", "is before start")
        filters = msgspec.structs.replace(
            _filters(token, dex, signer, min_profit_sol),
            start=_whole_millisecond(start_at, up=True),
            end=_whole_millisecond(end_at, up=False),
        )
        media_type = _media_type(request)
        ndjson = media_type == NDJSON
        if historical.is_page(limit):
            gzipped = accepts_gzip(request.headers.get("accept-encoding", ""))
            body = await historical.page(filters, limit, ndjson=ndjson, gzipped=gzipped)
            headers = {"vary": "Accept, Accept-Encoding"} | ({"content-encoding": "gzip"} if gzipped else {})
            return Response(body, media_type=media_type, headers=headers)
        return Stream(
            await _after_first_read(historical.stream(filters, limit, ndjson=ndjson)),
            media_type=media_type,
            headers={"vary": "Accept"},  # the body is JSON or NDJSON by `Accept`: caches must key on it
        )
