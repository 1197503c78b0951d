"""How live batches cross Redis pub/sub: stored rows as Arrow IPC, in pieces of about 1 MiB.

Rows, not rendered events: every process renders only what its own subscribers read (nothing
without any), as it does for its own batches without Redis. Publishing a 10k-row batch costs
the ingesting process ≈ 1 µs of CPU per row and ≈ 2 KB per row on the wire; rendering every
event in full for the wire cost ≈ 19 µs and ≈ 5 KB per row, with or without clients.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import msgspec
import polars as pl
import pyarrow as pa

from arbitrage.stream._events import LiveBatch


class WireBatch(msgspec.Struct, array_like=True):
    """One pub/sub message (msgpack): consecutive stored rows, or a notice of `skipped` positions."""

    published_at: float
    first: int
    """The position of the first row: how the publisher recognises its own message coming back."""
    rows: bytes = b""
    """An Arrow IPC stream of the rows; empty for a notice."""
    skipped: tuple[int, int] | None = None

    def batch(self) -> LiveBatch:
        """The rows as a batch that renders on demand (call in a worker thread: it decodes the rows)."""
        try:
            table = pa.ipc.open_stream(self.rows).read_all()
        except pa.ArrowException as exc:
            raise WireError(f"rows from position {self.first} do not read as Arrow IPC: {exc}") from exc
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        return LiveBatch.of_rows(frame, self.published_at)


class WireMessage(NamedTuple):
    piece: LiveBatch
    """The rows this message carries, as the publishing process holds them (no copy)."""
    data: bytes


class WireError(ValueError):
    """A message on the channel this version cannot read (another version of arbitrage publishing?)."""


WIRE_MESSAGE_BYTES = 1 << 20
"""About the most row bytes one pub/sub message carries. Redis drops a subscriber whose pending
output passes 32 MiB at once (or 8 MiB for a minute, `client-output-buffer-limit pubsub`), so a
large batch goes out in pieces the subscribers read as they come, the publisher no more than
`WIRE_IN_FLIGHT_BYTES` ahead of its own subscription."""

WIRE_IN_FLIGHT_BYTES = 4 << 20
"""How far a publisher may run ahead of what its own subscription has read: half of Redis's
default soft limit, so a subscriber as fast as this process's is never cut, however large the batch."""

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(WireBatch)


def encode_wire(batch: LiveBatch, max_bytes: int = WIRE_MESSAGE_BYTES) -> list[WireMessage]:
    """The batch's rows as pub/sub messages of consecutive rows, each of about `max_bytes` at most.

    Only a batch of stored rows goes on the wire (what ingest publishes).
    """
    rows = batch.rows
    if rows is None:
        raise TypeError("only a batch of stored rows can be published")
    table = rows.to_arrow()
    per_message = max(1, max_bytes * table.num_rows // max(table.nbytes, 1))
    messages = []
    for offset in range(0, table.num_rows, per_message):
        piece = LiveBatch.of_rows(rows.slice(offset, per_message), batch.published_at)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table.slice(offset, per_message))
        wire = WireBatch(batch.published_at, piece.first, memoryview(sink.getvalue()))  # type: ignore[arg-type]
        messages.append(WireMessage(piece, _ENCODER.encode(wire)))
    return messages


def encode_skipped(first: int, last: int) -> bytes:
    """A notice that positions `first`..`last` will never be published (their insert failed)."""
    return _ENCODER.encode(WireBatch(time.time(), first, skipped=(first, last)))


def decode_wire(data: bytes) -> WireBatch:
    """The message's header and raw rows (decoded by `WireBatch.batch` when needed); `WireError` if unreadable."""
    try:
        return _DECODER.decode(data)
    except msgspec.DecodeError as exc:
        raise WireError(f"not a live-feed message of this version: {exc}") from exc
