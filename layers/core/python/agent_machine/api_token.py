"""The API token check, one for every door: the HTTP API's Lambda authorizer, the API app's own check (defence in
depth) and the WebSocket `$connect`. Each door maps the result to its own answer (401 / 403 / deny)."""

from __future__ import annotations

import hmac
from enum import Enum

from agent_machine import secrets


class TokenCheck(Enum):
    OK = "ok"
    MISSING = "missing"  # no token (no Authorization header, not a Bearer one, or empty) -> 401
    INVALID = "invalid"  # a token, but not ours (or no token configured: fail closed) -> 403


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value (scheme case-insensitive), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def check_token(token: str | None) -> TokenCheck:
    """Compares a presented token with API_TOKEN. A failing secret lookup raises: each door decides (the
    authorizer denies, the app answers 500)."""
    if not token:
        return TokenCheck.MISSING
    # Through the module attribute, looked up per call: a rotation (clear_cache) or a test's stand-in is seen.
    expected = secrets.get_secret("api_token")
    if not expected:
        return TokenCheck.INVALID
    # Constant time over bytes: the comparison's duration says nothing about how much of the token matched.
    if hmac.compare_digest(token.encode("utf-8", errors="replace"), expected.encode("utf-8")):
        return TokenCheck.OK
    return TokenCheck.INVALID


def check_bearer(authorization: str | None) -> TokenCheck:
    """check_token of an Authorization header value."""
    return check_token(bearer_token(authorization))
