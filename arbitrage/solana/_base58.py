"""Base58 (Bitcoin alphabet) for instruction data and pubkeys.

Instruction data in the `json` encoding is base58; the decoder reads a handful of short payloads
per transaction, so a table lookup into one big integer is faster than a general library call.
"""

from __future__ import annotations

_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_VALUE = {c: i for i, c in enumerate(_ALPHABET)}


def b58decode(text: str) -> bytes:
    """Decode base58 text; raises ValueError on a character outside the alphabet."""
    number = 0
    value = _VALUE
    try:
        for char in text:
            number = number * 58 + value[char]
    except KeyError as exc:
        raise ValueError(f"invalid base58 character {exc.args[0]!r}") from None
    zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * zeros + number.to_bytes((number.bit_length() + 7) // 8, "big")


def b58encode(data: bytes) -> str:
    """Encode bytes (e.g. a 32-byte pubkey) as base58 text."""
    number = int.from_bytes(data, "big")
    out = []
    while number:
        number, rem = divmod(number, 58)
        out.append(_ALPHABET[rem])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(out))
