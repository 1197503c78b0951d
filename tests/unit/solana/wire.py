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


class _Writer:
    """The wire bytes, and beside them the `json` path of the field each byte belongs to."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.paths: list[str] = []

    def add(self, chunk: bytes, path: str) -> None:
        self.data += chunk
        self.paths += [path] * len(chunk)

    def counted(self, chunk: bytes, path: str, count: int | None = None) -> None:
        self.add(_length(len(chunk) if count is None else count), path)
        self.add(chunk, path)


def _write(entry: dict[str, Any]) -> tuple[_Writer, int]:
    """The whole transaction written out, and where its message starts."""
    transaction = entry["transaction"]
    message = transaction["message"]
    out = _Writer()
    signatures = [b58decode(s) for s in transaction["signatures"]]
    out.counted(b"".join(signatures), "transaction.signatures", len(signatures))
    start = len(out.data)
    if entry.get("version") == 0:
        out.add(b"\x80", "transaction.message.version")
    header = message["header"]
    for name in ("numRequiredSignatures", "numReadonlySignedAccounts", "numReadonlyUnsignedAccounts"):
        out.add(bytes([header[name]]), f"transaction.message.header.{name}")
    keys = message["accountKeys"]
    out.counted(b"".join(b58decode(k) for k in keys), "transaction.message.accountKeys", len(keys))
    out.add(b58decode(message["recentBlockhash"]), "transaction.message.recentBlockhash")
    out.add(_length(len(message["instructions"])), "transaction.message.instructions")
    for number, ix in enumerate(message["instructions"]):
        path = f"transaction.message.instructions[{number}]"
        out.add(bytes([ix["programIdIndex"]]), f"{path}.programIdIndex")
        out.counted(bytes(ix["accounts"]), f"{path}.accounts")
        out.counted(b58decode(ix["data"]), f"{path}.data")
    if entry.get("version") == 0:
        out.add(_length(len(message["addressTableLookups"])), "transaction.message.addressTableLookups")
        for number, table in enumerate(message["addressTableLookups"]):
            path = f"transaction.message.addressTableLookups[{number}]"
            out.add(b58decode(table["accountKey"]), f"{path}.accountKey")
            out.counted(bytes(table["writableIndexes"]), f"{path}.writableIndexes")
            out.counted(bytes(table["readonlyIndexes"]), f"{path}.readonlyIndexes")
    return out, start


def serialized(entry: dict[str, Any]) -> tuple[bytes, bytes]:
    """(whole transaction, message) on the wire, from a `json`-encoded transaction-with-meta."""
    out, start = _write(entry)
    return bytes(out.data), bytes(out.data[start:])


def field_paths(entry: dict[str, Any]) -> list[str]:
    """The `json` path of the field each byte of `serialized(entry)[0]` belongs to."""
    return _write(entry)[0].paths


def as_binary(entry: dict[str, Any], encoding: str) -> dict[str, Any]:
    wire, _ = serialized(entry)
    data = base64.b64encode(wire).decode() if encoding == "base64" else b58encode(wire)
    return {**entry, "transaction": [data, encoding]}
