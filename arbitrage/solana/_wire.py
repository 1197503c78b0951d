"""Binary transactions (`base64` / `base58` encodings) -> the `json` encoding's shape.

Nodes and Geyser feeds send transactions serialized as on the wire, with `meta` in JSON as
usual. Parsing them into the dict `json` gives (keys and instruction data as base58 text, v0
lookup tables as `addressTableLookups`) lets the rest of the decoder stay encoding-blind.

The wire layout (Solana's `VersionedTransaction`): a compact-u16 count of 64-byte signatures,
then the message. A v0 message starts with `0x80 | version`; a legacy one with its header.
Header (3 bytes), keys (count + 32 bytes each), recent blockhash (32 bytes), instructions
(count; each a program-id index, account indexes, data), and for v0 the lookup tables (count;
each a table key, writable indexes, readonly indexes).

Nothing is signature-checked here, so a corrupt body is refused only where it breaks the layout
or a rule Solana's sanitize applies to every landed transaction (the header and index checks of
`_message`, which a `json` message goes through too); errors name the field as its `json` path
(`transaction.message.instructions[2].data`) and the byte where the read failed.
"""

from __future__ import annotations

import base64
import binascii
from functools import lru_cache
from typing import Any

from arbitrage.errors import ValidationError
from arbitrage.solana._base58 import b58decode, b58encode
from arbitrage.solana._message import check_header, check_instructions

_FIELD = "transaction"
_MESSAGE = "transaction.message"
_INSTRUCTIONS = "transaction.message.instructions"
_LOOKUPS = "transaction.message.addressTableLookups"


@lru_cache(maxsize=1 << 16)
def _key(raw: bytes) -> str:
    """Base58 of 32 bytes; programs, mints, busy pools and recent blockhashes recur from one transaction to the next."""
    return b58encode(raw)


class _Reader:
    """Bounds-checked reads; a read past the end names its field (a `json` path) and the byte offsets."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int, field: str) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise ValidationError(
                field,
                f"truncated: needs {size} bytes at byte {self.pos}, the transaction ends at byte {len(self.data)}",
            )
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def byte(self, field: str) -> int:
        return self.take(1, field)[0]

    def length(self, field: str) -> int:
        """A compact-u16: 7 bits per byte, low bits first, at most 3 bytes."""
        value = 0
        for shift in (0, 7, 14):
            byte = self.byte(field)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise ValidationError(field, f"malformed length at byte {self.pos - 3}")

    def keys(self, field: str) -> list[str]:
        count = self.length(field)
        raw = self.take(32 * count, field)
        return [_key(raw[i : i + 32]) for i in range(0, len(raw), 32)]

    def counted(self, field: str) -> bytes:
        """A compact-u16 length and that many bytes: account indexes or instruction data."""
        return self.take(self.length(field), field)


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

    Raises:
        ValidationError: naming the field as a `json` path when the bytes run short, run on, or
            break a rule Solana's sanitize enforces before a transaction can land (the header
            agrees with the signatures and keys; every index points at a key, no program at the
            fee payer). Without these a
            corrupt body decodes into the wrong signers or accounts instead of failing.
    """
    reader = _Reader(data)
    count = reader.length("transaction.signatures")
    signatures = [b58encode(reader.take(64, "transaction.signatures")) for _ in range(count)]
    if reader.pos == len(data):
        raise ValidationError(_MESSAGE, f"truncated: missing, the transaction ends at byte {len(data)}")
    versioned = data[reader.pos] & 0x80
    if versioned:
        version = reader.byte(_MESSAGE) & 0x7F
        if version != 0:
            raise ValidationError(_MESSAGE, f"unsupported message version {version}")
    required, readonly_signed, readonly_unsigned = reader.take(3, f"{_MESSAGE}.header")
    keys = reader.keys(f"{_MESSAGE}.accountKeys")
    static = len(keys)
    check_header(count, (required, readonly_signed, readonly_unsigned), static)
    message: dict[str, Any] = {
        "header": {
            "numRequiredSignatures": required,
            "numReadonlySignedAccounts": readonly_signed,
            "numReadonlyUnsignedAccounts": readonly_unsigned,
        },
        "accountKeys": keys,
        "recentBlockhash": _key(reader.take(32, f"{_MESSAGE}.recentBlockhash")),  # shared by most of a block
    }
    instructions = []
    lowest, highest = 1, 0  # the lowest program index, the highest of any index
    for number in range(reader.length(_INSTRUCTIONS)):
        try:
            program = reader.byte("programIdIndex")
            accounts = reader.counted("accounts")
            ix_data = reader.counted("data")
        except ValidationError as exc:
            raise ValidationError(f"{_INSTRUCTIONS}[{number}].{exc.field}", exc.reason) from None
        lowest = min(lowest, program)
        highest = max(highest, program, max(accounts, default=0))
        instructions.append({"programIdIndex": program, "accounts": list(accounts), "data": ix_data})
    message["instructions"] = instructions
    if not raw_data:
        encode_instruction_data(instructions)
    loaded = 0
    if versioned:
        tables = []
        for number in range(reader.length(_LOOKUPS)):
            try:
                table = _key(reader.take(32, "accountKey"))
                writable = reader.counted("writableIndexes")
                readonly = reader.counted("readonlyIndexes")
            except ValidationError as exc:
                raise ValidationError(f"{_LOOKUPS}[{number}].{exc.field}", exc.reason) from None
            loaded += len(writable) + len(readonly)
            tables.append({"accountKey": table, "writableIndexes": list(writable), "readonlyIndexes": list(readonly)})
        message["addressTableLookups"] = tables
    if reader.pos != len(data):
        raise ValidationError(_FIELD, f"{len(data) - reader.pos} bytes left after the message")
    if not lowest or highest >= static + loaded:
        check_instructions(instructions, _INSTRUCTIONS, static, static + loaded, outer=True)
    return {"signatures": signatures, "message": message}


def encode_instruction_data(instructions: list[dict[str, Any]]) -> None:
    """Instruction data from bytes to base58 text, in place, as the `json` encoding has it."""
    for ix in instructions:
        ix["data"] = b58encode(ix["data"])
