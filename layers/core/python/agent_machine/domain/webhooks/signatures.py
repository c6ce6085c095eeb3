"""Signature checks over the raw request body, in constant time.

GitHub: `X-Hub-Signature-256: sha256=<hex>` (the SHA-1 `X-Hub-Signature` alone is refused).
Jira:   `X-Hub-Signature: sha256=<hex>` (WebSub style; any other method= is refused: fail closed).
Sentry: `Sentry-Hook-Signature: <hex>` (no prefix).
Dynamic webhooks: the configured header, `sha256=<hex>` or bare hex.
"""

from __future__ import annotations

import hashlib
import hmac


class SignatureError(Exception):
    """The request is not signed, or not signed with our secret. Always answered 401."""


def _digest(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _matches(expected_hex: str, given_hex: str) -> bool:
    # compare_digest on ASCII bytes: a non-ASCII header must fail, not raise.
    given = given_hex.strip().lower().encode("ascii", errors="replace")
    return hmac.compare_digest(expected_hex.encode("ascii"), given)


def _prefixed(header: str | None, what: str) -> str:
    if not header:
        raise SignatureError(f"missing {what} signature")
    method, sep, value = header.strip().partition("=")
    if not sep or method.strip().lower() != "sha256":
        raise SignatureError(f"{what} signature must be 'sha256=<hex>'")
    return value


def verify_github(body: bytes, signature_256: str | None, secret: str | None) -> None:
    """X-Hub-Signature-256 over the raw body (for form deliveries: the url-encoded `payload=...` bytes)."""
    if not secret:
        raise SignatureError("the GitHub webhook secret is not configured")
    if not _matches(_digest(secret, body), _prefixed(signature_256, "X-Hub-Signature-256")):
        raise SignatureError("X-Hub-Signature-256 does not match")


def verify_jira(body: bytes, signature: str | None, secret: str) -> None:
    if not _matches(_digest(secret, body), _prefixed(signature, "X-Hub-Signature")):
        raise SignatureError("X-Hub-Signature does not match")


def verify_sentry(body: bytes, signature: str | None, secret: str | None) -> None:
    if not secret:
        raise SignatureError("the Sentry client secret is not configured")
    if not signature:
        raise SignatureError("missing Sentry-Hook-Signature")
    if not _matches(_digest(secret, body), signature):
        raise SignatureError("Sentry-Hook-Signature does not match")


def verify_generic(body: bytes, signature: str | None, secret: str, header_name: str) -> None:
    """A dynamic webhook: `sha256=<hex>` or bare `<hex>` in its configured header."""
    if not signature:
        raise SignatureError(f"missing {header_name}")
    value = signature.strip()
    if "=" in value:
        value = _prefixed(value, header_name)
    if not _matches(_digest(secret, body), value):
        raise SignatureError(f"{header_name} does not match")


def sign(secret: str, body: bytes, *, prefix: str = "sha256=") -> str:
    """The header value a sender would compute (tests, the bench and the dashboard's 'send test event')."""
    return prefix + _digest(secret, body)
