"""Security headers on every answer of the API: never framed (X-Frame-Options DENY, CSP frame-ancestors 'none'),
never content-sniffed (nosniff), no referrer; JSON answers load nothing (CSP default-src 'none').

A route that serves a page sets its own Content-Security-Policy (the docs do): headers a response already has
are kept. Error answers built by errors.error_response carry the same headers themselves, because the answers
of the catch-all exception handler are sent from outside every middleware.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS: dict[str, str] = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
}


class SecurityHeadersMiddleware:
    """Adds `headers` (default SECURITY_HEADERS) to every HTTP answer that does not set them itself."""

    def __init__(self, app: ASGIApp, headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or SECURITY_HEADERS).items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {bytes(name).lower() for name, _ in headers}
                headers += [(name, value) for name, value in self.raw if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
