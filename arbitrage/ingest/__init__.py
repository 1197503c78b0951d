"""Validation, batching, dedup and dead letters for every source."""

from arbitrage.ingest._cli import add_ingest_arguments
from arbitrage.ingest._decode import (
    RAW_SCHEMA,
    DecodedBatch,
    KafkaOrigins,
    Reject,
    decode_body,
    decode_records,
    decode_table,
    encoding_for,
)
from arbitrage.ingest._derive import derive
from arbitrage.ingest._service import Enricher, IngestReport, IngestService, RecordError
from arbitrage.ingest._solana_source import SolanaIngestReport, ingest_solana

__all__ = [
    "RAW_SCHEMA",
    "DecodedBatch",
    "Enricher",
    "IngestReport",
    "IngestService",
    "KafkaOrigins",
    "RecordError",
    "Reject",
    "SolanaIngestReport",
    "add_ingest_arguments",
    "decode_body",
    "decode_records",
    "decode_table",
    "derive",
    "encoding_for",
    "ingest_solana",
]
