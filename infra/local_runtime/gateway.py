"""API Gateway on one port: the HTTP API (payload 2.0 events to the template's functions, with its Lambda
authorizer), the WebSocket API at /ws ($connect / $disconnect / $default) and its management API
(`/@connections/{id}`, so boto3's apigatewaymanagementapi client works unchanged), and the dashboard's files.

Like the edges it stands for: every HTTP answer carries the security headers CloudFront adds to the dashboard
(the API's middleware, machine_api.security, with the dashboard's headers; the API's own answers already have
them), and a client gets `header_timeout` seconds to send a request's headers (HeaderTimeoutProtocol), so
connections that never finish one cannot pile up.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import mimetypes
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from machine_api.security import SecurityHeadersMiddleware
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from local_runtime import sigv4
from local_runtime.events import (
    LambdaContext,
    authorizer_event,
    http_event,
    new_connection_id,
    websocket_event,
)
from local_runtime.invoker import FunctionInvoker
from local_runtime.logs import log
from local_runtime.template import CorsConfig, HttpRoute

API_GATEWAY_MAX_BODY = 10 * 1024 * 1024  # HTTP API's payload limit: larger requests get 413 at the edge
# HTTP API waits at most 30 s for an integration, then answers 503 (the function may still be running).
HTTP_INTEGRATION_TIMEOUT_SECONDS = 30.0
WS_IDLE_TIMEOUT_SECONDS = 600  # API Gateway closes idle WebSocket connections after 10 minutes
WS_MAX_SECONDS = 2 * 3600  # ... and every connection after 2 hours
DEFAULT_HEADER_TIMEOUT_SECONDS = 10.0
# What the template's CloudFront response-headers policy adds to the dashboard (DashboardSecurityHeaders).
SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "content-security-policy": "frame-ancestors 'none'; object-src 'none'; base-uri 'none'",
    "referrer-policy": "no-referrer",
}
_TIMEOUT_ANSWER = b"request headers not received in time\n"


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol with a deadline for each request's headers. uvicorn bounds only the idle time after
    a response (keep-alive), so a client that connects, or sends half a request line, and then waits would hold
    its connection forever. Armed when the connection opens and after each response; disarmed once a request's
    headers are complete (the protocol then starts a new cycle) or the connection becomes a WebSocket. A slow
    body or a long-running request is not limited by it. Past the deadline: 408 and the connection is closed."""

    header_timeout = DEFAULT_HEADER_TIMEOUT_SECONDS
    _deadline: asyncio.TimerHandle | None = None
    _cycle_when_armed: object = None

    def _arm(self) -> None:
        self._disarm()
        self._cycle_when_armed = self.cycle
        self._deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        head = (
            "HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(_TIMEOUT_ANSWER)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode("ascii") + _TIMEOUT_ANSWER)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._deadline is not None and self.cycle is not self._cycle_when_armed:
            self._disarm()  # a new request's headers are complete

    def handle_websocket_upgrade(self) -> None:
        self._disarm()
        super().handle_websocket_upgrade()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # the next request is parsed already: its headers are in
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def header_timeout_protocol(seconds: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class for uvicorn.Config(http=...) with this deadline (uvicorn builds it with fixed kwargs)."""
    if not seconds > 0:
        raise ValueError(f"the header timeout must be a positive number of seconds, not {seconds!r}")
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": float(seconds)})


@dataclass
class RouteTarget:
    route: HttpRoute
    function_name: str
    handler: str
    timeout: int
    pattern: re.Pattern[str] = field(init=False)
    specificity: tuple[int, int, int] = field(init=False)

    def __post_init__(self) -> None:
        regex = ""
        for part in re.split(r"(\{[^}]+\})", self.route.path):
            if part.startswith("{") and part.endswith("+}"):
                regex += f"(?P<{part[1:-2]}>.+)"
            elif part.startswith("{"):
                regex += f"(?P<{part[1:-1]}>[^/]+)"
            else:
                regex += re.escape(part)
        self.pattern = re.compile(f"^{regex}$")
        greedy = "+}" in self.route.path
        params = self.route.path.count("{")
        # API Gateway picks the most specific route: literal paths, then fewer parameters, then exact methods.
        self.specificity = (int(greedy), params, int(self.route.method == "ANY"))


@dataclass
class LiveConnection:
    socket: WebSocket
    source_ip: str
    user_agent: str
    connected_at: float = field(default_factory=time.time)
    last_active: float = field(default_factory=time.time)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _management_forbidden(error_type: str, message: str) -> Response:
    return JSONResponse({"message": message}, status_code=403, headers={"x-amzn-ErrorType": error_type})


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class Gateway:
    def __init__(
        self,
        *,
        routes: list[RouteTarget],
        authorizer: str | None,
        websocket_handler: str | None,
        static_dir: Path,
        invoker: FunctionInvoker,
        max_body: int = API_GATEWAY_MAX_BODY,
        cors: CorsConfig | None = None,
        management_secret_for: Callable[[str], str | None] | None = None,
        authorizer_function: str = "AuthorizerFunction",
        authorizer_timeout: int = 10,
        websocket_function: str = "WebSocketFunction",
        websocket_timeout: int = 29,
    ) -> None:
        self.authorizer_function = authorizer_function
        self.authorizer_timeout = authorizer_timeout
        self.websocket_function = websocket_function
        self.websocket_timeout = websocket_timeout
        self.cors = cors
        # The management API answers only requests signed with the runtime's own credentials (sigv4.py): the
        # secret key of an access key id, or None. Without it, it answers nobody.
        self.management_secret_for = management_secret_for
        self.routes = sorted(routes, key=lambda r: r.specificity)
        self.authorizer = authorizer
        self.websocket_handler = websocket_handler
        self.static_dir = static_dir.resolve()
        self.invoker = invoker
        self.max_body = max_body
        self.connections: dict[str, LiveConnection] = {}
        self.app = Starlette(
            routes=[
                WebSocketRoute("/ws", self.websocket),
                Route("/@connections/{connection_id:path}", self.management, methods=["GET", "POST", "DELETE"]),
                Route("/{path:path}", self.http, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
            ],
            middleware=[Middleware(SecurityHeadersMiddleware, headers=SECURITY_HEADERS)],
        )

    # --- HTTP API -------------------------------------------------------------------------------------------

    def match(self, method: str, path: str) -> tuple[RouteTarget, dict[str, str]] | None:
        for target in self.routes:
            if target.route.method not in ("ANY", method):
                continue
            found = target.pattern.match(path)
            if found:
                return target, found.groupdict()
        return None

    def _preflight(self, request: Request) -> Response | None:
        """A CORS preflight, answered as API Gateway does from the API's CorsConfiguration: never routed, never
        authorized."""
        if self.cors is None or request.method != "OPTIONS":
            return None
        wanted = request.headers.get("access-control-request-method")
        origin = request.headers.get("origin")
        if not wanted or not origin:
            return None
        cors = self.cors
        headers: dict[str, str] = {}
        origin_ok = "*" in cors.allow_origins or origin in cors.allow_origins
        method_ok = "*" in cors.allow_methods or wanted.upper() in cors.allow_methods
        asked = [h.strip().lower() for h in request.headers.get("access-control-request-headers", "").split(",")]
        asked = [h for h in asked if h]
        headers_ok = "*" in cors.allow_headers or all(h in cors.allow_headers for h in asked)
        if origin_ok and method_ok and headers_ok:
            star = "*" in cors.allow_origins and not cors.allow_credentials
            headers["access-control-allow-origin"] = "*" if star else origin
            headers["access-control-allow-methods"] = ",".join(cors.allow_methods)
            if asked:
                headers["access-control-allow-headers"] = ",".join(asked)
            if cors.max_age is not None:
                headers["access-control-max-age"] = str(cors.max_age)
            if cors.allow_credentials:
                headers["access-control-allow-credentials"] = "true"
            if not star:
                headers["vary"] = "origin"
        return Response(status_code=204, headers=headers)

    async def http(self, request: Request) -> Response:
        path = request.url.path
        preflight = self._preflight(request)
        if preflight is not None:
            return preflight
        matched = self.match(request.method, path)
        if matched is None:
            if request.method in ("GET", "HEAD"):
                return self._static(path)
            return JSONResponse({"message": "Not Found"}, status_code=404)
        target, params = matched
        body = await self._read_body(request)
        if body is None:
            return JSONResponse({"message": "Request Entity Too Large"}, status_code=413)
        authorizer_context: dict[str, Any] | None = None
        if target.route.authorized and self.authorizer:
            if not request.headers.get("authorization"):
                return JSONResponse({"message": "Unauthorized"}, status_code=401)
            auth_event = authorizer_event(
                f"{request.method}{path}", target.route.route_key, dict(request.headers), request.url.query, path
            )
            try:
                auth = await self.invoker.invoke(
                    self.authorizer,
                    auth_event,
                    LambdaContext(self.authorizer_function, timeout_seconds=self.authorizer_timeout),
                )
            except Exception as exc:
                # A failed (or timed-out) authorizer: API Gateway answers 500 without calling the route.
                log(f"{self.authorizer_function} failed: {exc}")
                return JSONResponse({"message": "Internal Server Error"}, status_code=500)
            if not (isinstance(auth, dict) and auth.get("isAuthorized")):
                return JSONResponse({"message": "Forbidden"}, status_code=403)
            authorizer_context = dict(auth.get("context") or {})
        event = http_event(
            request.method,
            path,
            body=body,
            headers=request.headers.items(),
            query=request.url.query,
            route_key=target.route.route_key,
            path_parameters=params or None,
            authorizer=authorizer_context,
            source_ip=request.client.host if request.client else "127.0.0.1",
            domain=request.headers.get("host", "localhost").split(":")[0],
        )
        invocation = self.invoker.invoke(target.handler, event, LambdaContext(target.function_name, target.timeout))
        try:
            if target.timeout > HTTP_INTEGRATION_TIMEOUT_SECONDS:
                result = await asyncio.wait_for(asyncio.shield(invocation), HTTP_INTEGRATION_TIMEOUT_SECONDS)
            else:
                result = await invocation
        except TimeoutError:
            log(f"{target.function_name}: no answer within HTTP API's {HTTP_INTEGRATION_TIMEOUT_SECONDS:.0f} s")
            return JSONResponse({"message": "Service Unavailable"}, status_code=503)
        except Exception as exc:
            # The function failed (raised, timed out, its runtime exited): a Lambda error is a 500 at the edge.
            log(f"{target.function_name} failed: {exc}")
            return JSONResponse({"message": "Internal Server Error"}, status_code=500)
        return self._lambda_response(result)

    async def _read_body(self, request: Request) -> bytes | None:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body:
            return None  # refused before reading a byte, as the edge does
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_body:
                    return None
                chunks.append(chunk)
        except ClientDisconnect:
            return b""
        return b"".join(chunks)

    @staticmethod
    def _lambda_response(result: Any) -> Response:
        # Payload 2.0: a dict with statusCode is taken as is; anything else is 200 JSON of the value.
        if not (isinstance(result, dict) and "statusCode" in result):
            return JSONResponse(result)
        body = result.get("body") or ""
        raw = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
        response = Response(raw, status_code=int(result["statusCode"]))
        for name, value in (result.get("headers") or {}).items():
            response.headers[name] = str(value)
        for name, values in (result.get("multiValueHeaders") or {}).items():
            for value in values:
                response.headers.append(name, str(value))
        for cookie in result.get("cookies") or []:
            response.headers.append("set-cookie", cookie)
        return response

    def _static(self, path: str) -> Response:
        relative = path.lstrip("/") or "index.html"
        candidate = (self.static_dir / relative).resolve()
        if not candidate.is_relative_to(self.static_dir) or not candidate.is_file():
            if "." in Path(relative).name:
                return JSONResponse({"message": "Not Found"}, status_code=404)
            candidate = self.static_dir / "index.html"  # client-side routes
        media_type = mimetypes.guess_type(candidate.name)[0] or "application/octet-stream"
        if candidate.suffix == ".js":
            media_type = "text/javascript"
        return FileResponse(candidate, media_type=media_type, headers={"cache-control": "no-cache"})

    # --- WebSocket API --------------------------------------------------------------------------------------

    async def _ws_invoke(self, event: dict[str, Any]) -> Any:
        assert self.websocket_handler
        context = LambdaContext(self.websocket_function, self.websocket_timeout)
        return await self.invoker.invoke(self.websocket_handler, event, context)

    async def _ws_message(self, event: dict[str, Any]) -> None:
        try:
            await self._ws_invoke(event)
        except Exception as exc:
            log(f"{self.websocket_function} failed on a message: {exc}")

    async def websocket(self, socket: WebSocket) -> None:
        if not self.websocket_handler:
            await socket.close(code=1011)
            return
        connection_id = new_connection_id()
        connect = websocket_event(
            "$connect",
            connection_id,
            query=socket.url.query,
            headers=dict(socket.headers),
            domain=socket.url.hostname or "localhost",
        )
        try:
            result = await self._ws_invoke(connect)
        except Exception as exc:
            log(f"{self.websocket_function} failed on $connect: {exc}")
            await socket.close(code=1011)  # before accept: the handshake is refused
            return
        status = int(result.get("statusCode", 200)) if isinstance(result, dict) else 200
        if status >= 300:
            await socket.close(code=1008)  # before accept: the client sees the handshake refused (403)
            return
        await socket.accept()
        client = socket.client
        live = LiveConnection(socket, client.host if client else "127.0.0.1", socket.headers.get("user-agent", ""))
        self.connections[connection_id] = live
        pending: set[asyncio.Task[Any]] = set()
        try:
            while True:
                remaining = min(WS_IDLE_TIMEOUT_SECONDS, live.connected_at + WS_MAX_SECONDS - time.time())
                if remaining <= 0:
                    break
                try:
                    received = await asyncio.wait_for(socket.receive(), timeout=remaining)
                except TimeoutError:
                    break
                if received.get("type") == "websocket.disconnect":
                    break
                live.last_active = time.time()
                text = received.get("text")
                event = websocket_event(
                    "$default", connection_id, body=text or "", connected_at=int(live.connected_at * 1000)
                )
                if text is None and received.get("bytes") is not None:
                    # A binary frame: API Gateway passes it to the integration base64-encoded.
                    event["body"] = base64.b64encode(received["bytes"]).decode("ascii")
                    event["isBase64Encoded"] = True
                # API Gateway invokes per message without waiting for the previous one.
                task = asyncio.create_task(self._ws_message(event))
                pending.add(task)
                task.add_done_callback(pending.discard)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self.connections.pop(connection_id, None)
            with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
                await socket.close()  # the client may already be gone
            try:
                await self._ws_invoke(websocket_event("$disconnect", connection_id))
            except Exception as exc:
                log(f"$disconnect handler raised {exc!r}")

    def _management_refusal(self, request: Request, body: bytes | None) -> Response | None:
        """403 unless the request is signed (SigV4) with the runtime's credentials; `body` None: not read yet (only
        the key is checked: a stranger's request is refused before its body is read)."""
        secret_for = self.management_secret_for
        authorization = request.headers.get("authorization", "")
        signed = sigv4.parse(authorization) if secret_for is not None else None
        if secret_for is None or signed is None or secret_for(signed.access_key_id) is None:
            return _management_forbidden("MissingAuthenticationTokenException", "Forbidden")
        if body is None:
            return None
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        problem = sigv4.verify(
            method=request.method,
            raw_path=raw_path.decode("latin-1"),
            query=request.scope.get("query_string", b"").decode("latin-1"),
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw],
            body=body,
            secret_for=secret_for,
        )
        if problem is not None:
            return _management_forbidden("InvalidSignatureException", f"Forbidden: {problem}")
        return None

    async def management(self, request: Request) -> Response:
        refused = self._management_refusal(request, None)
        if refused is not None:
            return refused
        data = await self._read_body(request)
        if data is None:
            return JSONResponse(
                {"message": "Request Entity Too Large"},
                status_code=413,
                headers={"x-amzn-ErrorType": "PayloadTooLargeException"},
            )
        refused = self._management_refusal(request, data)
        if refused is not None:
            return refused
        connection_id = request.path_params["connection_id"]
        live = self.connections.get(connection_id)
        if live is None:
            return Response(
                json.dumps({"message": None}),
                status_code=410,
                headers={"x-amzn-ErrorType": "GoneException", "content-type": "application/json"},
            )
        if request.method == "GET":
            # The management API's wire shape (botocore's GetConnection output: connectedAt, lastActiveAt, identity).
            return JSONResponse(
                {
                    "connectedAt": _iso(live.connected_at),
                    "lastActiveAt": _iso(live.last_active),
                    "identity": {"sourceIp": live.source_ip, "userAgent": live.user_agent},
                }
            )
        if request.method == "DELETE":
            self.connections.pop(connection_id, None)
            await live.socket.close()
            return Response(status_code=204)
        if len(data) > 128 * 1024:
            return JSONResponse(
                {"message": "Message too long"},
                status_code=413,
                headers={"x-amzn-ErrorType": "PayloadTooLargeException"},
            )
        try:
            async with live.lock:
                await live.socket.send_text(data.decode("utf-8", errors="replace"))
        except (WebSocketDisconnect, RuntimeError):
            self.connections.pop(connection_id, None)
            return Response(
                json.dumps({"message": None}),
                status_code=410,
                headers={"x-amzn-ErrorType": "GoneException", "content-type": "application/json"},
            )
        return Response(status_code=200)
