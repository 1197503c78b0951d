"""JWT bearer tokens: HS256 (stdlib `hmac`) and RS256 (`cryptography`), claims checked.

Only compact JWS with the algorithm the server is configured for is accepted: a token
whose header names another algorithm (`none`, or HS256 when only a public key is set) is
forged as far as we are concerned. `exp` is required; `nbf`, `iss` and `aud` are checked
when present or configured.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any

import msgspec

from arbitrage.errors import ArbitrageError, ConfigError

LEEWAY_SECONDS = 30
"""Clock skew tolerated on `exp` and `nbf`."""


class InvalidToken(ArbitrageError):
    """A bearer token that is malformed, forged, expired or meant for someone else."""


def b64url_decode(segment: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidToken("malformed token") from exc


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class JwtVerifier:
    """Verifies signature and claims of a compact JWT.

    Args:
        secret: HS256 shared secret; empty disables HS256.
        public_key: RS256 public key (PEM text); empty disables RS256.
        issuer: required `iss` when set.
        audience: required member of `aud` when set.
    """

    def __init__(self, *, secret: str = "", public_key: str = "", issuer: str = "", audience: str = "") -> None:
        self._secret = secret.encode()
        self._public_key: Any = _load_public_key(public_key) if public_key else None
        self.issuer = issuer
        self.audience = audience

    @property
    def enabled(self) -> bool:
        return bool(self._secret) or self._public_key is not None

    def verify(self, token: str, *, now: float | None = None) -> dict[str, Any]:
        """The token's claims, or `InvalidToken` saying why not (without echoing the token)."""
        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidToken("malformed token")
        header_b64, payload_b64, signature_b64 = parts
        try:
            header = msgspec.json.decode(b64url_decode(header_b64))
            claims = msgspec.json.decode(b64url_decode(payload_b64))
        except (msgspec.DecodeError, RecursionError) as exc:
            # A forged token nested deeper than the decoder goes is as invalid as any other (401, and
            # counted against the sender's budget), not a malformed request body (400).
            raise InvalidToken("malformed token") from exc
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise InvalidToken("malformed token")
        signing_input = f"{header_b64}.{payload_b64}".encode()
        signature = b64url_decode(signature_b64)
        algorithm = header.get("alg")
        if algorithm == "HS256" and self._secret:
            expected = hmac.new(self._secret, signing_input, hashlib.sha256).digest()
            if not hmac.compare_digest(expected, signature):
                raise InvalidToken("bad signature")
        elif algorithm == "RS256" and self._public_key is not None:
            self._verify_rs256(signing_input, signature)
        else:
            raise InvalidToken("unsupported algorithm")
        if "crit" in header:
            # RFC 7515 §4.1.11: extensions the issuer marks critical must be understood, and this
            # verifier understands none (a token may, say, be bound to a key or a request it cannot check).
            raise InvalidToken("critical header extensions are not supported")
        self._check_claims(claims, time.time() if now is None else now)
        return claims

    def _verify_rs256(self, signing_input: bytes, signature: bytes) -> None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        try:
            self._public_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature as exc:
            raise InvalidToken("bad signature") from exc

    def _check_claims(self, claims: Mapping[str, Any], now: float) -> None:
        expires = claims.get("exp")
        if not isinstance(expires, int | float) or isinstance(expires, bool):
            raise InvalidToken("token has no expiry")
        if now > expires + LEEWAY_SECONDS:
            raise InvalidToken("token expired")
        not_before = claims.get("nbf")
        if not_before is not None and (not isinstance(not_before, int | float) or now + LEEWAY_SECONDS < not_before):
            raise InvalidToken("token not yet valid")
        if self.issuer and not _same(claims.get("iss"), self.issuer):
            raise InvalidToken("wrong issuer")
        if self.audience:
            audience = claims.get("aud")
            members = audience if isinstance(audience, list) else [audience]
            if not any(_same(member, self.audience) for member in members):
                raise InvalidToken("wrong audience")


def roles_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """Roles from a `roles` claim (list or space-separated string), else from `scope`."""
    raw = claims.get("roles", claims.get("scope", ""))
    if isinstance(raw, str):
        return frozenset(raw.split())
    if isinstance(raw, list):
        return frozenset(r for r in raw if isinstance(r, str))
    return frozenset()


def sign_hs256(claims: Mapping[str, Any], secret: str) -> str:
    """A signed HS256 token (for tests and tools that mint tokens for this server)."""
    header = b64url_encode(b'{"alg":"HS256","typ":"JWT"}')
    payload = b64url_encode(msgspec.json.encode(claims))
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url_encode(signature)}"


def _same(value: object, expected: str) -> bool:
    return isinstance(value, str) and hmac.compare_digest(value.encode(), expected.encode())


def _load_public_key(pem: str) -> Any:
    """An RSA public key from PEM text, or from a file when the value is a path."""
    try:
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError("auth.jwt_public_key: RS256 needs the `cryptography` package") from exc
    text = pem
    if "-----BEGIN" not in pem:
        try:
            with open(pem, encoding="ascii") as handle:
                text = handle.read()
        except OSError as exc:
            raise ConfigError(f"auth.jwt_public_key: neither PEM text nor a readable file ({exc.strerror})") from exc
    try:
        key = load_pem_public_key(text.encode())
    except ValueError as exc:
        raise ConfigError("auth.jwt_public_key: not a PEM public key") from exc
    if not isinstance(key, RSAPublicKey):
        raise ConfigError("auth.jwt_public_key: RS256 needs an RSA public key")
    return key
