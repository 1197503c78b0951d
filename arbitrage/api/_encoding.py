"""HTTP transport codings: request bodies sent compressed (`Content-Encoding: gzip` or `deflate`),
as bulk loaders and log shippers do, and whether a client takes a gzipped answer.

Bodies are inflated with a bound: a small body may expand a thousandfold, so output past the
route's byte limit is refused with 413 before it is ever held whole.
"""

from __future__ import annotations

import zlib

from litestar.exceptions import HTTPException

from arbitrage.errors import ValidationError

_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}
"""zlib's window bits per coding: 31 reads gzip's header and trailer, 15 zlib's (HTTP's `deflate`)."""


def inflated(body: bytes, content_encoding: str, limit: int) -> bytes:
    """The body as it was before transport compression; at most `limit` bytes of it.

    Raises HTTPException 415 for a coding other than gzip/deflate, 413 past `limit`, and
    ValidationError for a body that is not what its coding says.
    """
    coding = content_encoding.strip().lower()
    if coding in ("", "identity"):
        return body
    if coding not in _WBITS:
        raise HTTPException(
            status_code=415, detail=f"Content-Encoding {coding!r} is not supported (gzip, deflate or none)"
        )
    parts: list[bytes] = []
    size = 0
    rest = body
    while rest:  # gzip allows several members one after another
        inflater = zlib.decompressobj(_WBITS[coding])
        try:
            part = inflater.decompress(rest, limit + 1 - size)
        except zlib.error as exc:
            raise ValidationError("$", f"body is not valid {coding}: {exc}") from exc
        size += len(part)
        if size > limit or inflater.unconsumed_tail:
            raise HTTPException(status_code=413, detail=f"the body inflates to more than {limit:,} bytes")
        if not inflater.eof:
            raise ValidationError("$", f"body is not valid {coding}: it ends before its compressed stream does")
        parts.append(part)
        rest = inflater.unused_data if coding != "deflate" else b""
    return b"".join(parts)


def accepts_gzip(accept_encoding: str) -> bool:
    """An `Accept-Encoding` value names gzip with a q-value above 0 (as browsers, curl --compressed and httpx send).

    Litestar's `Accept` reads media types and takes `gzip;q=0` as a match, hence this.
    """
    for item in accept_encoding.split(","):
        coding, *params = (part.strip().lower() for part in item.split(";"))
        if coding not in ("gzip", "x-gzip"):
            continue
        weights = [value for name, _, value in (p.partition("=") for p in params) if name.strip() == "q"]
        try:
            return not weights or float(weights[0]) > 0
        except ValueError:
            return False
    return False
