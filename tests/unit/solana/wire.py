"""Solana's wire format, written from a `json`-encoded transaction: binary test and benchmark bodies."""

from __future__ import annotations

import base64
from typing import Any

from arbitrage.solana._base58 import b58decode, b58encode


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _message_bytes(message: dict[str, Any], versioned: bool) -> bytes:
    header = message["header"]
    out = bytearray(b"\x80" if versioned else b"")
    out += bytes(
        [header["numRequiredSignatures"], header["numReadonlySignedAccounts"], header["numReadonlyUnsignedAccounts"]]
    )
    out += _length(len(message["accountKeys"])) + b"".join(b58decode(k) for k in message["accountKeys"])
    out += b58decode(message["recentBlockhash"])
    out += _length(len(message["instructions"]))
    for ix in message["instructions"]:
        data = b58decode(ix["data"])
        out += bytes([ix["programIdIndex"]]) + _length(len(ix["accounts"])) + bytes(ix["accounts"])
        out += _length(len(data)) + data
    if versioned:
        out += _length(len(message["addressTableLookups"]))
        for table in message["addressTableLookups"]:
            out += b58decode(table["accountKey"])
            out += _length(len(table["writableIndexes"])) + bytes(table["writableIndexes"])
            out += _length(len(table["readonlyIndexes"])) + bytes(table["readonlyIndexes"])
    return bytes(out)


def serialized(entry: dict[str, Any]) -> tuple[bytes, bytes]:
    """(whole transaction, message) on the wire, from a `json`-encoded transaction-with-meta."""
    transaction = entry["transaction"]
    message = _message_bytes(transaction["message"], entry.get("version") == 0)
    signatures = [b58decode(s) for s in transaction["signatures"]]
    return _length(len(signatures)) + b"".join(signatures) + message, message


def as_binary(entry: dict[str, Any], encoding: str) -> dict[str, Any]:
    wire, _ = serialized(entry)
    data = base64.b64encode(wire).decode() if encoding == "base64" else b58encode(wire)
    return {**entry, "transaction": [data, encoding]}
