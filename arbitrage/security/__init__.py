"""Authentication, authorization, rate limits and request hardening.

Routes declare their role with `guards=[requires("read")]` (or `public` for the few that
hold no data); the app's lifespan builds the `Security` the guards consult with
`start_security`. See docs/security.md.
"""

from arbitrage.security._access import (
    PUBLIC,
    Identity,
    Security,
    admin_token,
    admin_token_path,
    check_jwt_settings,
    fallback_security,
    start_security,
    visible_to,
)
from arbitrage.security._cli import add_keys_arguments
from arbitrage.security._guard import (
    CredentialWatch,
    PublicOperation,
    caller,
    credential_of,
    destination_allowed,
    identity_of,
    public,
    requires,
    role_of,
    security_of,
)
from arbitrage.security._hardening import check_bind, check_destination, check_destination_form, is_loopback
from arbitrage.security._headers import add_security_headers
from arbitrage.security._jwt import InvalidToken, JwtVerifier, sign_hs256
from arbitrage.security._keys import ROLES, ApiKey, CreatedKey, KeyCreate, KeyNotFound, KeyStore

__all__ = [
    "PUBLIC",
    "ROLES",
    "ApiKey",
    "CreatedKey",
    "CredentialWatch",
    "Identity",
    "InvalidToken",
    "JwtVerifier",
    "KeyCreate",
    "KeyNotFound",
    "KeyStore",
    "PublicOperation",
    "Security",
    "add_keys_arguments",
    "add_security_headers",
    "admin_token",
    "admin_token_path",
    "caller",
    "check_bind",
    "check_destination",
    "check_destination_form",
    "check_jwt_settings",
    "credential_of",
    "destination_allowed",
    "fallback_security",
    "identity_of",
    "is_loopback",
    "public",
    "requires",
    "role_of",
    "security_of",
    "sign_hs256",
    "start_security",
    "visible_to",
]
