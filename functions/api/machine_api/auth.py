"""The bearer API token check shared by the Lambda authorizer and the app's own check (defence in depth)."""

from __future__ import annotations

import hmac
from enum import Enum


class TokenCheck(Enum):
    OK = "ok"
    MISSING = "missing"  # no Authorization header, or not a Bearer one -> 401
    INVALID = "invalid"  # a bearer token, but not ours (or no token configured: fail closed) -> 403


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def check_bearer(authorization: str | None) -> TokenCheck:
    from agent_machine.secrets import get_secret

    token = bearer_token(authorization)
    if token is None:
        return TokenCheck.MISSING
    expected = get_secret("api_token")
    if not expected:
        return TokenCheck.INVALID
    # Constant time over bytes: the comparison's duration says nothing about how much of the token matched.
    if hmac.compare_digest(token.encode("utf-8", errors="replace"), expected.encode("utf-8")):
        return TokenCheck.OK
    return TokenCheck.INVALID
