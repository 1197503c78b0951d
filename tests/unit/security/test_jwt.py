"""JWT verification: signatures, algorithms and claims."""

from __future__ import annotations

import hashlib
import hmac
import time

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from arbitrage.security import InvalidToken, JwtVerifier, sign_hs256
from arbitrage.security._jwt import b64url_encode, roles_of
from tests.unit.security.rs256 import public_pem, rs256_token

SECRET = "unit-test-hs256-secret"


def _claims(**extra: object) -> dict[str, object]:
    return {"sub": "alice", "exp": int(time.time()) + 300, "roles": ["read"], **extra}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_a_valid_hs256_token_yields_its_claims() -> None:
    claims = JwtVerifier(secret=SECRET).verify(sign_hs256(_claims(), SECRET))
    assert claims["sub"] == "alice"
    assert roles_of(claims) == {"read"}


def test_an_expired_token_is_rejected() -> None:
    token = sign_hs256(_claims(exp=int(time.time()) - 3600), SECRET)
    with pytest.raises(InvalidToken, match="expired"):
        JwtVerifier(secret=SECRET).verify(token)


def test_a_token_without_expiry_is_rejected() -> None:
    token = sign_hs256({"sub": "alice", "roles": ["admin"]}, SECRET)
    with pytest.raises(InvalidToken, match="expiry"):
        JwtVerifier(secret=SECRET).verify(token)


def test_a_token_signed_with_another_secret_is_rejected() -> None:
    with pytest.raises(InvalidToken, match="signature"):
        JwtVerifier(secret=SECRET).verify(sign_hs256(_claims(), "another-secret"))


def test_a_token_whose_claims_were_edited_is_rejected() -> None:
    header, _, signature = sign_hs256(_claims(), SECRET).split(".")
    forged_payload = b64url_encode(msgspec.json.encode(_claims(roles=["admin"])))
    with pytest.raises(InvalidToken, match="signature"):
        JwtVerifier(secret=SECRET).verify(f"{header}.{forged_payload}.{signature}")


def test_alg_none_is_rejected() -> None:
    header = b64url_encode(b'{"alg":"none","typ":"JWT"}')
    payload = b64url_encode(msgspec.json.encode(_claims(roles=["admin"])))
    with pytest.raises(InvalidToken, match="algorithm"):
        JwtVerifier(secret=SECRET).verify(f"{header}.{payload}.")


def test_issuer_audience_and_not_before_are_checked() -> None:
    verifier = JwtVerifier(secret=SECRET, issuer="https://issuer.example", audience="arbitrage")
    good = _claims(iss="https://issuer.example", aud=["other", "arbitrage"])
    assert verifier.verify(sign_hs256(good, SECRET))["sub"] == "alice"
    with pytest.raises(InvalidToken, match="issuer"):
        verifier.verify(sign_hs256({**good, "iss": "https://evil.example"}, SECRET))
    with pytest.raises(InvalidToken, match="audience"):
        verifier.verify(sign_hs256({**good, "aud": "someone-else"}, SECRET))
    with pytest.raises(InvalidToken, match="not yet valid"):
        verifier.verify(sign_hs256({**good, "nbf": int(time.time()) + 3600}, SECRET))


def test_malformed_tokens_are_rejected_without_echoing_them() -> None:
    for token in ("abc", "a.b", "!!!.???.***", "e30.e30.e30.e30"):
        with pytest.raises(InvalidToken) as caught:
            JwtVerifier(secret=SECRET).verify(token)
        assert token not in str(caught.value)


def test_rs256_tokens_verify_against_the_public_key(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = JwtVerifier(public_key=public_pem(rsa_key))
    assert verifier.verify(rs256_token(_claims(), rsa_key))["sub"] == "alice"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(InvalidToken, match="signature"):
        verifier.verify(rs256_token(_claims(), other))


def test_an_hs256_token_signed_with_the_public_key_is_not_accepted_by_an_rs256_server(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    pem = public_pem(rsa_key)
    header = b64url_encode(b'{"alg":"HS256","typ":"JWT"}')
    payload = b64url_encode(msgspec.json.encode(_claims(roles=["admin"])))
    signature = hmac.new(pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    with pytest.raises(InvalidToken, match="algorithm"):
        JwtVerifier(public_key=pem).verify(f"{header}.{payload}.{b64url_encode(signature)}")


def test_roles_come_from_roles_or_scope() -> None:
    assert roles_of({"roles": "read export"}) == {"read", "export"}
    assert roles_of({"scope": "admin"}) == {"admin"}
    assert roles_of({"roles": [1, "read"]}) == {"read"}
    assert roles_of({}) == frozenset()


def test_a_token_with_critical_extensions_is_rejected_even_when_well_signed() -> None:
    """RFC 7515: a recipient that does not understand a `crit` extension must refuse the token."""
    header = b64url_encode(b'{"alg":"HS256","typ":"JWT","crit":["exp-bound-to-key"],"exp-bound-to-key":"k1"}')
    payload = b64url_encode(msgspec.json.encode(_claims()))
    signature = hmac.new(SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{b64url_encode(signature)}"
    with pytest.raises(InvalidToken, match="critical"):
        JwtVerifier(secret=SECRET).verify(token)
