"""POST /ingest: contract records as JSON, NDJSON, msgpack or an Arrow IPC stream."""

from __future__ import annotations

from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency

from arbitrage.ingest import IngestReport, IngestService

_DESCRIPTION = """Store a batch of transactions (see the contract in the README).

Send a JSON array (`application/json`), one object per line (`application/x-ndjson`),
a msgpack array (`application/msgpack`), or an Arrow IPC stream
(`application/vnd.apache.arrow.stream`) whose columns are the contract's fields with
`block_time` in ms and `legs` a list of structs. Valid records are stored even when others
are rejected; each reject names its index and field and is kept as a dead letter.
200 when anything was accepted or already stored, 422 when every record was rejected,
400 when the body cannot be read at all, 413 when it is too large, 503 when saturated."""


class IngestController(Controller):
    path = "/ingest"
    tags = ["ingest"]

    @post(description=_DESCRIPTION, status_code=200, response_description="What was stored")
    async def ingest(
        self, request: Request[object, object, object], ingest: NamedDependency[IngestService]
    ) -> Response[IngestReport]:
        body = await request.body()
        report = await ingest.ingest_body(body, request.headers.get("content-type"), source="http")
        status = 422 if report.rejected and not (report.accepted or report.duplicates) else 200
        return Response(report, status_code=status)
