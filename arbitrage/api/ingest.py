"""POST /ingest (contract records) and POST /ingest/solana (raw Solana RPC output)."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec

from arbitrage.api._encoding import inflated
from arbitrage.api._errors import error_responses
from arbitrage.api._openapi import INGEST_BODY, SOLANA_BODY, raw_body
from arbitrage.ingest import IngestReport, IngestService, SolanaIngestReport, ingest_solana
from arbitrage.security import requires
from arbitrage.services import Services

_DESCRIPTION = """Store a batch of transactions (see the contract in the README).

Send a JSON array (`application/json`), one object per line (`application/x-ndjson`),
a msgpack array (`application/msgpack`), or an Arrow IPC stream
(`application/vnd.apache.arrow.stream`) whose columns are the contract's fields with
`block_time` in ms and `legs` a list of structs. Valid records are stored even when others
are rejected; each reject names its index and field and is kept as a dead letter.
A body may be sent compressed (`Content-Encoding: gzip` or `deflate`; other codings get 415).
200 when anything was accepted or already stored, 422 when every record was rejected,
400 when the body cannot be read at all, 413 when it is (or inflates to) more than `ingest.max_body_bytes` or
holds more records than `ingest.max_records_per_body` (nothing of it is stored), 503 when saturated."""

_SOLANA_DESCRIPTION = """Store what a Solana RPC node returns: `getTransaction` results (`json`,
`jsonParsed`, `base64` or `base58`, with or without the JSON-RPC envelope), `getBlock` results, an array of them, or
NDJSON. Arbitrages, other swaps and failed attempts are stored (the latter two as negative
examples); votes and unrelated transactions are only counted in `kinds`. 200 when anything was
accepted or already stored, 422 when every transaction was invalid (each becomes a dead letter
with its signature, slot, index and error), 400 for an empty body."""


_ERRORS = error_responses(400, 413, 415, 503)


async def _body(request: Request[Any, Any, Any], services: Services) -> bytes:
    """The request body, inflated off the event loop when it was sent compressed."""
    body = await request.body()
    encoding = request.headers.get("content-encoding")
    if encoding is None:
        return body
    return await asyncio.to_thread(inflated, body, encoding, services.settings.ingest.max_body_bytes)


def _rejected(report: type[object]) -> ResponseSpec:
    return ResponseSpec(report, description="Every record was rejected; the report says why", generate_examples=False)


def _status(accepted: int, duplicates: int, rejected: int) -> int:
    return 422 if rejected and not (accepted or duplicates) else 200


class IngestController(Controller):
    path = "/ingest"
    tags = ["ingest"]
    guards = [requires("ingest")]

    @post(
        description=_DESCRIPTION,
        status_code=200,
        response_description="What was stored",
        responses={422: _rejected(IngestReport), **_ERRORS},
        operation_class=raw_body(INGEST_BODY),
    )
    async def ingest(
        self,
        request: Request[Any, Any, Any],
        ingest: NamedDependency[IngestService],
        services: NamedDependency[Services],
    ) -> Response[IngestReport]:
        body = await _body(request, services)
        report = await ingest.ingest_body(body, request.headers.get("content-type"), source="http")
        return Response(report, status_code=_status(report.accepted, report.duplicates, report.rejected))

    @post(
        "/solana",
        description=_SOLANA_DESCRIPTION,
        status_code=200,
        response_description="What was stored",
        responses={422: _rejected(SolanaIngestReport), **_ERRORS},
        operation_class=raw_body(SOLANA_BODY),
    )
    async def ingest_solana(
        self,
        request: Request[Any, Any, Any],
        ingest: NamedDependency[IngestService],
        services: NamedDependency[Services],
    ) -> Response[SolanaIngestReport]:
        report = await ingest_solana(ingest, await _body(request, services))
        return Response(report, status_code=_status(report.accepted, report.duplicates, report.rejected))
