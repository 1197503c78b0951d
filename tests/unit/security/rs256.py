"""An identity provider's RS256 side for tests: its public key as PEM, and tokens it signs."""

from __future__ import annotations

import msgspec
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from arbitrage.security._jwt import b64url_encode


def rs256_token(claims: dict[str, object], key: rsa.RSAPrivateKey) -> str:
    header = b64url_encode(b'{"alg":"RS256","typ":"JWT"}')
    payload = b64url_encode(msgspec.json.encode(claims))
    signature = key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{b64url_encode(signature)}"


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
