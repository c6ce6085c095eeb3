"""Checks done before any route runs, as plain ASGI (no body is read for them):

1. Size: a Content-Length over MAX_BODY_BYTES is refused with 413 before a byte of the body is read; without a
   Content-Length the body is counted as it is read and refused once past the cap (BodyTooLarge).
2. Auth for /api/* (except the open paths): `Authorization: Bearer <API_TOKEN>`, checked by
   agent_machine.api_token (the authorizer's and WebSocket $connect's check too). Missing -> 401, wrong -> 403 (as
   API Gateway's authorizer answers). Defence in depth: on AWS the authorizer checked it first.
3. Media type for /api/* bodies: JSON only (415 otherwise).
"""

from __future__ import annotations

from typing import Any

from agent_machine.api_token import TokenCheck, check_bearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from machine_api.docs import ASSETS as DOCS_ASSETS
from machine_api.errors import BodyTooLarge, error_response

MAX_BODY_BYTES = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB; nothing legitimate is bigger
# The docs page's own scripts and styles are open as it is, by name (no prefix: nothing else is opened with them).
OPEN_PATHS = frozenset(
    {"/api/health", "/api/config", "/api/docs", "/api/openapi.json", *(f"/api/docs/{name}" for name in DOCS_ASSETS)}
)
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class GuardMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rejection = self._reject(scope)
        if rejection is not None:
            await rejection(scope, receive, send)
            return
        limit = self.max_body_bytes
        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, capped_receive, send)

    def _reject(self, scope: Scope) -> Any:
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                size = int(length.strip())
            except ValueError:
                return error_response(400, "bad_request", "Content-Length is not a number")
            if size > self.max_body_bytes:
                return error_response(413, "payload_too_large", f"the body is larger than {self.max_body_bytes} bytes")
        path: str = scope.get("path", "")
        method: str = scope.get("method", "GET")
        if not path.startswith("/api/") or path in OPEN_PATHS or method == "OPTIONS":
            return None
        result = check_bearer(_header(scope, b"authorization"))
        if result is TokenCheck.MISSING:
            return error_response(
                401,
                "unauthorized",
                "missing bearer token (Authorization: Bearer <API_TOKEN>)",
                headers={"www-authenticate": "Bearer"},
            )
        if result is TokenCheck.INVALID:
            return error_response(
                403, "forbidden", "invalid API token", headers={"www-authenticate": 'Bearer error="invalid_token"'}
            )
        if method in BODY_METHODS and length != "0":
            content_type = (_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
            if content_type and content_type != "application/json" and not content_type.endswith("+json"):
                return error_response(415, "unsupported_media_type", "request bodies must be application/json")
        return None
