"""Binary transactions (`base64` / `base58` encodings) -> the `json` encoding's shape.

Nodes and Geyser feeds send transactions serialized as on the wire, with `meta` in JSON as
usual. Parsing them into the dict `json` gives (keys and instruction data as base58 text, v0
lookup tables as `addressTableLookups`) lets the rest of the decoder stay encoding-blind.

The wire layout (Solana's `VersionedTransaction`): a compact-u16 count of 64-byte signatures,
then the message. A v0 message starts with `0x80 | version`; a legacy one with its header.
Header (3 bytes), keys (count + 32 bytes each), recent blockhash (32 bytes), instructions
(count; each a program-id index, account indexes, data), and for v0 the lookup tables (count;
each a table key, writable indexes, readonly indexes).
"""

from __future__ import annotations

import base64
import binascii
from functools import lru_cache
from typing import Any

from arbitrage.errors import ValidationError
from arbitrage.solana._base58 import b58decode, b58encode

_FIELD = "transaction"


@lru_cache(maxsize=1 << 16)
def _key(raw: bytes) -> str:
    """Base58 of 32 bytes; programs, mints, busy pools and recent blockhashes recur from one transaction to the next."""
    return b58encode(raw)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int, what: str) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise ValidationError(_FIELD, f"truncated: {what} runs past the end ({len(self.data)} bytes)")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def length(self, what: str) -> int:
        """A compact-u16: 7 bits per byte, low bits first, at most 3 bytes."""
        value = 0
        for shift in (0, 7, 14):
            byte = self.byte(what)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise ValidationError(_FIELD, f"malformed length of {what}")

    def keys(self, what: str) -> list[str]:
        count = self.length(what)
        raw = self.take(32 * count, what)
        return [_key(raw[i : i + 32]) for i in range(0, len(raw), 32)]

    def indexes(self, what: str) -> list[int]:
        return list(self.take(self.length(what), what))


def wire_bytes(value: Any) -> bytes:
    """The bytes of a `[data, encoding]` pair as the RPC returns binary transactions."""
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise ValidationError(_FIELD, "expected an object (json, jsonParsed) or [data, encoding] (base64, base58)")
    data, encoding = value
    try:
        if encoding == "base64":
            return base64.b64decode(data, validate=True)
        if encoding == "base58":
            return b58decode(data)
    except (binascii.Error, ValueError) as exc:
        raise ValidationError(_FIELD, f"not valid {encoding}: {exc}") from None
    raise ValidationError(_FIELD, f"unknown encoding {encoding!r}; expected one of json, jsonParsed, base64, base58")


def parse_transaction(data: bytes, *, raw_data: bool = False) -> dict[str, Any]:
    """A serialized transaction as the `json` encoding shows it.

    With `raw_data`, instruction data stays bytes until `encode_instruction_data`: a vote or an
    unrelated transaction is classified by its keys alone, and base58 is most of the cost.
    """
    reader = _Reader(data)
    count = reader.length("signatures")
    signatures = [b58encode(reader.take(64, "signatures")) for _ in range(count)]
    message: dict[str, Any] = {}
    first = reader.data[reader.pos : reader.pos + 1]
    versioned = bool(first) and first[0] & 0x80
    if versioned:
        version = reader.byte("version") & 0x7F
        if version != 0:
            raise ValidationError(_FIELD, f"unsupported message version {version}")
    required, readonly_signed, readonly_unsigned = reader.take(3, "header")
    message["header"] = {
        "numRequiredSignatures": required,
        "numReadonlySignedAccounts": readonly_signed,
        "numReadonlyUnsignedAccounts": readonly_unsigned,
    }
    message["accountKeys"] = reader.keys("accountKeys")
    message["recentBlockhash"] = _key(reader.take(32, "recentBlockhash"))  # shared by most of a block
    message["instructions"] = [
        {
            "programIdIndex": reader.byte("instructions"),
            "accounts": reader.indexes("instructions"),
            "data": reader.take(reader.length("instructions"), "instructions"),
        }
        for _ in range(reader.length("instructions"))
    ]
    if not raw_data:
        encode_instruction_data(message["instructions"])
    if versioned:
        message["addressTableLookups"] = [
            {
                "accountKey": _key(reader.take(32, "addressTableLookups")),
                "writableIndexes": reader.indexes("addressTableLookups"),
                "readonlyIndexes": reader.indexes("addressTableLookups"),
            }
            for _ in range(reader.length("addressTableLookups"))
        ]
    if reader.pos != len(data):
        raise ValidationError(_FIELD, f"{len(data) - reader.pos} bytes left after the message")
    return {"signatures": signatures, "message": message}


def encode_instruction_data(instructions: list[dict[str, Any]]) -> None:
    """Instruction data from bytes to base58 text, in place, as the `json` encoding has it."""
    for ix in instructions:
        ix["data"] = b58encode(ix["data"])
