"""Raw Solana RPC output (getTransaction / getBlock results) as an ingest source."""

from __future__ import annotations

import asyncio
from collections import Counter
from itertools import islice

import msgspec

from arbitrage.errors import TooManyRecords, ValidationError
from arbitrage.ingest._decode import Reject
from arbitrage.ingest._service import IngestReport, IngestService, RecordError
from arbitrage.solana import SolanaDecoded, decode_documents


class SolanaIngestReport(msgspec.Struct):
    """The ingest report of the records found, plus what each decoded transaction was."""

    accepted: int
    duplicates: int
    rejected: int
    errors: list[RecordError]
    kinds: dict[str, int]


async def ingest_solana(service: IngestService, body: bytes, *, source: str = "solana") -> SolanaIngestReport:
    """Decode, then store arbitrages, swaps and failed attempts; votes and unrelated are counted only.

    A body of more transactions than `service.max_records_per_body` is refused whole (TooManyRecords).

    Records keep their position among the decoded transactions as their error index.
    """
    if not body.strip():
        raise ValidationError("$", "body holds no documents")
    service.admit()
    limit = service.max_records_per_body
    decoded = await asyncio.to_thread(
        lambda: list(islice(decode_documents(body), None if limit is None else limit + 1))
    )
    if limit is not None and len(decoded) > limit:
        raise TooManyRecords(limit)
    kinds: Counter[str] = Counter(item.kind for item in decoded)
    invalid = [
        Reject(i, "$", item.error or "invalid transaction", _raw(item))
        for i, item in enumerate(decoded)
        if item.kind == "invalid"
    ]
    positions = [i for i, item in enumerate(decoded) if item.record is not None]
    encoder = msgspec.json.Encoder()
    records = [encoder.encode(decoded[i].record) for i in positions]
    report = await service.ingest_records(records, source=source) if records else IngestReport(0, 0, 0, [])
    if invalid:
        await service.record_rejects(invalid, source)
    errors = [RecordError(positions[e.index], e.field, e.reason) for e in report.errors]
    errors += [RecordError(r.index, r.field, r.reason) for r in invalid]
    errors.sort(key=lambda e: e.index)
    return SolanaIngestReport(report.accepted, report.duplicates, report.rejected + len(invalid), errors, dict(kinds))


def _raw(item: SolanaDecoded) -> bytes:
    return msgspec.json.encode(
        {"signature": item.signature, "slot": item.slot, "index": item.index, "error": item.error}
    )
