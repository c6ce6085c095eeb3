"""The model credential broker: the CLI reaches the model only through this proxy, and never holds a real key.

One proxy per task, on 127.0.0.1 (an ephemeral port), started before the CLI is spawned and stopped once it has
exited. The CLI gets `ANTHROPIC_BASE_URL=http://127.0.0.1:<port>` and a random per-task token as its
`ANTHROPIC_API_KEY` (under Bedrock: `ANTHROPIC_BEDROCK_BASE_URL=http://127.0.0.1:<port>/t/<token>` with
`CLAUDE_CODE_SKIP_BEDROCK_AUTH=1`, the CLI's documented LLM-gateway settings; with auth skipped the CLI sends no
credential at all, and the path carries the token to every Bedrock call, the control-plane ones included). The
proxy checks the token (constant time; `x-api-key`, `Authorization: Bearer` or the path), drops it, puts the
runner's own credential on the upstream request and relays the answer unchanged, chunk by chunk as it arrives
(SSE and Bedrock's event stream alike: no buffering). The credential is the runner's: the Anthropic key from its
environment or Secrets Manager (`agent_machine.secrets`), or, under Bedrock, a SigV4 signature made with the
runner's AWS credentials (its role on Lambda and Fargate). The upstream is the runner's own `ANTHROPIC_BASE_URL`
(default https://api.anthropic.com) or `ANTHROPIC_BEDROCK_BASE_URL` (default: the region's Bedrock endpoints).
Only model paths are forwarded (messages, token counting, model and inference-profile listings): the token is
no key to the rest of the provider's API (batches, files), whose spend could not be metered here.

Metering: each response's `usage` (a JSON body, or the SSE / event-stream `message_start` and `message_delta`
events) is priced with `agent_machine.domain.pricing` (the CLI's own table) into the task's running cost. A
model request is refused, before anything is spent, once that cost has reached the task's cap (the CLI's
`--max-budget-usd`) or what is left of the day's (`DAILY_BUDGET_USD` minus what finished tasks booked today,
re-read every DAY_REFRESH_SECONDS): HTTP 402 with an Anthropic-shaped `billing_error` and `x-should-retry:
false`, which the CLI reports as its result (`API Error: 402 …budget…`). This holds for every process that uses
the token, not only for the CLI's own accounting (a tool that calls the API with it is metered and capped too).
No one knows a response's length before it is written, so a request admitted just under a cap can end past it
by its own cost; no request starts past it.

Implementation, after measuring (bench/bench_model_proxy.py): standard-library threads, one per CLI connection,
with `http.client` upstream over a per-process pool of keep-alive connections (a new task reuses the connection
a previous one opened; the CLI's `HEAD /` preconnect opens one ahead of the first request). Each relayed chunk
is one `read1` and one `sendall` (TCP_NODELAY both ways, so Nagle never holds a small SSE event back); the
response head goes out with the first chunk; usage parsing happens after a chunk is written. Measured against a
bare asyncio relay on a loop in its own thread (no parsing, no metering): the same added time to first byte
behind a 300 ms upstream (p50 ~1.2 ms for both: waking a thread or a loop from a 300 ms wait) and ~0.15 ms less
behind a 0 ms one, which does not pay for an HTTP client and parser of our own. None of it runs on the runner's
event loop, which keeps streaming the CLI's output.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import os
import re
import secrets
import selectors
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from http import HTTPStatus
from http.client import HTTPConnection, HTTPException, HTTPResponse, HTTPSConnection, RemoteDisconnected
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit

import botocore.session
from agent_machine.domain import budgets, pricing
from agent_machine.observability import get_logger
from agent_machine.settings import get_settings
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.eventstream import EventStreamBuffer

DEFAULT_ANTHROPIC_URL = "https://api.anthropic.com"
AUTH_PATH_PREFIX = "/t/"  # /t/<token>/<the provider's path>: the token where the CLI sends no credential (Bedrock)
MAX_REQUEST_BYTES = 64 * 1024 * 1024  # above the Messages API's own request limit (32 MB)
MAX_JSON_BYTES = 16 * 1024 * 1024  # a non-streamed answer read for its usage (larger ones are relayed, unmetered)
MAX_EVENT_LINE_BYTES = 1024 * 1024  # an SSE line longer than this cannot be a usage event: not kept
READ_CHUNK = 64 * 1024
CLIENT_IDLE_SECONDS = 900.0  # a CLI's idle keep-alive connection (and its thread) is dropped after this
POOL_IDLE_SECONDS = 30.0  # an idle upstream connection older than this is not reused (servers drop them)
POOL_MAX_IDLE = 8  # idle upstream connections kept per host
DAY_REFRESH_SECONDS = 60.0
BEDROCK_SIGNING_NAME = "bedrock"  # the SigV4 service name of both bedrock and bedrock-runtime

# Hop-by-hop headers (RFC 9110 7.6.1) and what the proxy sets itself: never relayed either way.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
# The CLI's credential headers (the token) and anything that could pass for a signature of its own.
_CLIENT_CREDENTIALS = frozenset(
    {"x-api-key", "authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"}
)

Kind = Literal["anthropic", "bedrock"]


@dataclass(frozen=True)
class Route:
    metered: bool  # a model call: admitted only under the caps, its usage priced
    control: bool = False  # Bedrock's control plane (bedrock.<region>), not its runtime
    model: str | None = None  # the model named by the path (Bedrock)


_ANTHROPIC_ROUTES: tuple[tuple[str, re.Pattern[str], Route], ...] = (
    ("POST", re.compile(r"/v1/messages"), Route(metered=True)),
    ("POST", re.compile(r"/v1/messages/count_tokens"), Route(metered=False)),
    ("GET", re.compile(r"/v1/models(/[^/]+)?"), Route(metered=False)),
)
_BEDROCK_MODEL = re.compile(r"/model/(?P<model>[^/]+)/(?P<action>invoke|invoke-with-response-stream|count-tokens)")
_BEDROCK_CONTROL = re.compile(r"/(inference-profiles|foundation-models)(/[^/]+)?")


def route(kind: Kind, method: str, path: str) -> Route | None:
    """What a request is (path without its query), or None when the proxy does not forward it."""
    if kind == "anthropic":
        for allowed, pattern, found in _ANTHROPIC_ROUTES:
            if method == allowed and pattern.fullmatch(path):
                return found
        return None
    match = _BEDROCK_MODEL.fullmatch(path)
    if match and method == "POST":
        return Route(metered=match["action"] != "count-tokens", model=unquote(match["model"]))
    if method == "GET" and _BEDROCK_CONTROL.fullmatch(path):
        return Route(metered=False, control=True)
    return None


# --------------------------------------------------------------------------------------------------- upstream


@dataclass(frozen=True)
class Upstream:
    """Where model requests go and the runner's credential for them (never given to the CLI)."""

    kind: Kind
    base_url: str | None  # None under Bedrock: the region's endpoints
    region: str
    headers: tuple[tuple[str, str], ...] = ()  # the credential (Anthropic) and ANTHROPIC_CUSTOM_HEADERS
    beta: str | None = None  # an anthropic-beta flag the credential needs (OAuth)

    def url_for(self, path_and_query: str, found: Route) -> str:
        if self.base_url:
            return self.base_url.rstrip("/") + path_and_query
        host = "bedrock" if found.control else "bedrock-runtime"
        return f"https://{host}.{self.region}.amazonaws.com{path_and_query}"


def upstream_from_env(api_key: str | None, env: Mapping[str, str] | None = None) -> Upstream:
    """The runner's upstream and credential. Anthropic: `api_key` (the runner's key: environment or Secrets
    Manager), else the runner's ANTHROPIC_AUTH_TOKEN or CLAUDE_CODE_OAUTH_TOKEN; Bedrock: the runner's AWS
    credentials, resolved per request."""
    src = os.environ if env is None else env
    region = get_settings().aws_region
    if _is_true(src.get("CLAUDE_CODE_USE_BEDROCK")):
        return Upstream("bedrock", src.get("ANTHROPIC_BEDROCK_BASE_URL") or None, region)
    headers: list[tuple[str, str]] = []
    beta = None
    if api_key:
        headers.append(("x-api-key", api_key))
    elif src.get("ANTHROPIC_AUTH_TOKEN"):
        headers.append(("authorization", f"Bearer {src['ANTHROPIC_AUTH_TOKEN']}"))
    elif src.get("CLAUDE_CODE_OAUTH_TOKEN"):
        # The CLI adds this beta itself when it holds an OAuth token; here it holds the proxy's token instead.
        headers.append(("authorization", f"Bearer {src['CLAUDE_CODE_OAUTH_TOKEN']}"))
        beta = "oauth-2025-04-20"
    for line in (src.get("ANTHROPIC_CUSTOM_HEADERS") or "").splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() and value.strip():
            headers.append((name.strip(), value.strip()))
    return Upstream("anthropic", src.get("ANTHROPIC_BASE_URL") or DEFAULT_ANTHROPIC_URL, region, tuple(headers), beta)


def _is_true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@cache
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()  # honours SSL_CERT_FILE / SSL_CERT_DIR


@cache
def _aws_session() -> Any:
    return botocore.session.get_session()


def sign_bedrock(method: str, url: str, body: bytes, headers: Mapping[str, str], region: str) -> dict[str, str]:
    """SigV4 headers (Authorization, X-Amz-Date, X-Amz-Security-Token) for a Bedrock request, made with the
    runner's credentials (its role on Lambda / Fargate; botocore's default chain)."""
    credentials = _aws_session().get_credentials()
    if credentials is None:
        raise UpstreamError("the runner has no AWS credentials to sign Bedrock requests with")
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    SigV4Auth(credentials.get_frozen_credentials(), BEDROCK_SIGNING_NAME, region).add_auth(request)
    return {name: str(value) for name, value in request.headers.items()}


def bedrock_path(path: str) -> str:
    """The path as botocore sends it: each segment percent-encoded (a model id's ':' becomes %3A), the form
    whose SigV4 canonical URI Bedrock computes."""
    return "/".join(quote(unquote(part), safe="") for part in path.split("/"))


class UpstreamError(RuntimeError):
    pass


@dataclass(frozen=True)
class _Host:
    scheme: str
    host: str
    port: int


class _Pool:
    """Idle keep-alive upstream connections, per host, shared by every task of this runner process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[_Host, list[tuple[float, HTTPConnection]]] = {}

    def get(self, target: _Host) -> tuple[HTTPConnection, bool]:
        now = time.monotonic()
        with self._lock:
            idle = self._idle.get(target, [])
            while idle:
                since, conn = idle.pop()
                if now - since < POOL_IDLE_SECONDS:
                    return conn, True
                conn.close()
        return _connect(target), False

    def warm(self, target: _Host) -> None:
        """Open one connection ahead of need, unless one is idle already."""
        with self._lock:
            if self._idle.get(target):
                return
        self.put(target, _connect(target))

    def put(self, target: _Host, conn: HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(target, [])
            if len(idle) < POOL_MAX_IDLE:
                idle.append((time.monotonic(), conn))
                return
        conn.close()


_POOL = _Pool()


def _timeout() -> float:
    """The CLI's own API timeout (API_TIMEOUT_MS, default 10 minutes) bounds a silent upstream here too."""
    try:
        return max(1.0, float(os.environ.get("API_TIMEOUT_MS") or 600_000) / 1000)
    except ValueError:
        return 600.0


def _connect(target: _Host) -> HTTPConnection:
    proxy = _egress_proxy(target)
    conn: HTTPConnection
    if proxy is not None:  # the runner's HTTPS_PROXY: a CONNECT tunnel to the upstream
        proxy_host, proxy_port = proxy
        if target.scheme == "https":
            conn = HTTPSConnection(proxy_host, proxy_port, timeout=_timeout(), context=_tls())
        else:
            conn = HTTPConnection(proxy_host, proxy_port, timeout=_timeout())
        conn.set_tunnel(target.host, target.port)
    elif target.scheme == "https":
        conn = HTTPSConnection(target.host, target.port, timeout=_timeout(), context=_tls())
    else:
        conn = HTTPConnection(target.host, target.port, timeout=_timeout())
    conn.connect()
    if conn.sock is not None:
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def _egress_proxy(target: _Host) -> tuple[str, int] | None:
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(target.scheme)
    if not proxy or urllib.request.proxy_bypass(target.host):
        return None
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return (parts.hostname, parts.port or 80) if parts.hostname else None


def _target(url: str) -> tuple[_Host, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamError(f"unsupported upstream URL scheme: {parts.scheme or '(none)'}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    return _Host(parts.scheme, parts.hostname, port), path + (f"?{parts.query}" if parts.query else "")


# --------------------------------------------------------------------------------------------------- metering


class Meter:
    """A task's running model cost and its caps. Thread-safe: every connection of the proxy adds to it."""

    def __init__(
        self,
        cap_usd: float,
        *,
        daily_cap_usd: float | None = None,
        spent_today: Callable[[], float] | None = None,
    ) -> None:
        self.cap_usd = cap_usd
        self.daily_cap_usd = daily_cap_usd
        self._spent_today = spent_today
        self._lock = threading.Lock()
        self.cost_usd = 0.0
        self.requests = 0  # model calls admitted
        self.refused = 0
        self.day_spent_usd = 0.0  # what other tasks booked or hold today, as last read
        self._day_read_at = -DAY_REFRESH_SECONDS
        self._day_reading = False
        self.refresh_day()

    def refresh_day(self) -> None:
        """Re-read today's spend in the background once the last read is DAY_REFRESH_SECONDS old: never on a
        request's path nor the task's start (the runner checked the day just before; until the first read comes
        back, only this task's own spend counts against the day's cap)."""
        with self._lock:
            stale = time.monotonic() - self._day_read_at >= DAY_REFRESH_SECONDS
            if self._spent_today is None or self._day_reading or not stale:
                return
            self._day_reading = True
        threading.Thread(target=self._read_day, name="model-proxy-day", daemon=True).start()

    def _read_day(self) -> None:
        assert self._spent_today is not None
        try:
            spent = self._spent_today()
        except Exception as exc:  # a blip: the last figure stands, the next refresh tries again
            get_logger().warning("could not read today's spend", extra={"error": repr(exc)})
            spent = None
        with self._lock:
            self._day_reading = False
            self._day_read_at = time.monotonic()
            if spent is not None:
                self.day_spent_usd = spent

    def admit(self) -> str | None:
        """None when a model request may go, else why not (the refusal the CLI will report)."""
        with self._lock:
            if self.cost_usd >= self.cap_usd:
                self.refused += 1
                return (
                    f"this task's budget of ${usd(self.cap_usd)} is spent (${usd(self.cost_usd)} metered by the "
                    "runner's model proxy): no further model requests"
                )
            if self.daily_cap_usd is not None and self.day_spent_usd + self.cost_usd >= self.daily_cap_usd:
                self.refused += 1
                return (
                    f"today's budget of ${usd(self.daily_cap_usd)} is spent (${usd(self.day_spent_usd)} booked or "
                    f"held by other tasks + ${usd(self.cost_usd)} by this one; DAILY_BUDGET_USD): no further model "
                    "requests"
                )
            self.requests += 1
            return None

    def add(self, model: str, usage: Mapping[str, Any]) -> float:
        cost = pricing.cost_usd(model, usage)
        with self._lock:
            self.cost_usd += cost
        return cost


def usd(value: float) -> str:
    """A dollar amount to the micro-dollar, without trailing zeros: 3, 0.505, 0.00705."""
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"


class UsageReader:
    """The usage of one response, read from its bytes as they stream by (JSON, SSE or Bedrock's event stream)."""

    def __init__(self, content_type: str) -> None:
        kind = content_type.split(";", 1)[0].strip().lower()
        self.mode = (
            "sse"
            if kind == "text/event-stream"
            else "eventstream"
            if kind == "application/vnd.amazon.eventstream"
            else "json"
            if kind == "application/json"
            else None
        )
        self.model: str | None = None
        self.usage: dict[str, Any] | None = None
        self._body = bytearray()
        self._line = b""
        self._skipping = False  # inside an SSE line too long to be a usage event
        self._events: Any = None
        if self.mode == "eventstream":
            self._events = EventStreamBuffer()

    def feed(self, chunk: bytes) -> None:
        if self.mode == "sse":
            self._feed_sse(chunk)
        elif self.mode == "json":
            if len(self._body) + len(chunk) <= MAX_JSON_BYTES:
                self._body += chunk
            else:
                self.mode = None  # too big to hold: relayed, not metered
                self._body.clear()
        elif self.mode == "eventstream":
            self._feed_eventstream(chunk)

    def finish(self) -> None:
        if self.mode == "json" and self._body:
            with contextlib.suppress(ValueError):
                obj = json.loads(self._body)
                if isinstance(obj, dict) and isinstance(obj.get("usage"), dict):
                    self.usage = dict(obj["usage"])
                    self.model = obj.get("model") if isinstance(obj.get("model"), str) else None
        elif self.mode == "sse" and self._line and not self._skipping:
            self._sse_line(self._line)

    def _feed_sse(self, chunk: bytes) -> None:
        data = self._line + chunk if self._line else chunk
        lines = data.split(b"\n")
        self._line = lines.pop()
        for line in lines:
            if self._skipping:
                self._skipping = False
                continue
            self._sse_line(line)
        if len(self._line) > MAX_EVENT_LINE_BYTES:
            self._line, self._skipping = b"", True

    def _sse_line(self, line: bytes) -> None:
        # Only message_start and message_delta carry usage; content deltas (nearly every line) are not parsed.
        if line.startswith(b"data:") and (b"message_start" in line or b"message_delta" in line):
            with contextlib.suppress(ValueError):
                self._event(json.loads(line[5:]))

    def _feed_eventstream(self, chunk: bytes) -> None:
        try:
            self._events.add_data(chunk)
            for message in self._events:
                payload = json.loads(message.payload or b"{}")
                encoded = payload.get("bytes") if isinstance(payload, dict) else None
                if isinstance(encoded, str):
                    self._event(json.loads(base64.b64decode(encoded)))
        except Exception:  # a frame it cannot read: relayed anyway, the rest of this response unmetered
            self.mode = None

    def _event(self, event: object) -> None:
        if not isinstance(event, dict):
            return
        if event.get("type") == "message_start" and isinstance(event.get("message"), dict):
            message = event["message"]
            if isinstance(message.get("usage"), dict):
                self.usage = dict(message["usage"])
            if isinstance(message.get("model"), str):
                self.model = message["model"]
        elif event.get("type") == "message_delta" and isinstance(event.get("usage"), dict):
            # message_delta's counts are cumulative: they replace message_start's (output_tokens first of all).
            update = {k: v for k, v in event["usage"].items() if v is not None}
            self.usage = {**(self.usage or {}), **update}


_MODEL_IN_BODY = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')


def model_in_request(body: bytes) -> str | None:
    found = _MODEL_IN_BODY.search(body)
    return found.group(1).decode("utf-8", "replace") if found else None


# --------------------------------------------------------------------------------------------------- the proxy


@dataclass
class Stats:
    forwarded: int = 0
    unauthorized: int = 0
    not_forwarded: int = 0
    upstream_errors: int = 0
    unmetered: int = 0  # model responses whose usage could not be read
    by_status: dict[int, int] = field(default_factory=dict)


class ModelProxy:
    """One task's proxy: `start()` before the CLI is spawned, `cli_env()` for its environment, `stop()` after."""

    def __init__(self, upstream: Upstream, meter: Meter, *, token: str | None = None) -> None:
        self.upstream = upstream
        self.meter = meter
        self.token = token or f"machine-{secrets.token_urlsafe(32)}"
        self.stats = Stats()
        self._token_bytes = self.token.encode()
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._clients: set[socket.socket] = set()
        self._clients_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cost_usd(self) -> float:
        return self.meter.cost_usd

    def cli_env(self) -> dict[str, str]:
        """The CLI's model settings: the proxy's address and token, nothing else."""
        if self.upstream.kind == "bedrock":
            return {
                "CLAUDE_CODE_USE_BEDROCK": "1",
                "ANTHROPIC_BEDROCK_BASE_URL": f"{self.url}{AUTH_PATH_PREFIX}{self.token}",
                "CLAUDE_CODE_SKIP_BEDROCK_AUTH": "1",
                "AWS_REGION": self.upstream.region,  # picks the CLI's model ids (us./eu. profiles); no credential
            }
        return {"ANTHROPIC_BASE_URL": self.url, "ANTHROPIC_API_KEY": self.token}

    def start(self) -> ModelProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self._listener, self.port = listener, listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name=f"model-proxy-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, and end idle keep-alive connections (their threads exit). Does not wait."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        with self._clients_lock:
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)

    def _serve(self) -> None:
        assert self._listener is not None
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self._listener, selectors.EVENT_READ)
                selector.register(self._wake_r, selectors.EVENT_READ)
                while not self._stopped:
                    for key, _events in selector.select():
                        if key.fileobj is self._wake_r:
                            return
                        with contextlib.suppress(OSError):
                            client, address = self._listener.accept()
                            threading.Thread(
                                target=self._connection, args=(client, address), name="model-proxy-conn", daemon=True
                            ).start()
        finally:
            for sock in (self._listener, self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    sock.close()

    def _connection(self, client: socket.socket, address: Any) -> None:
        with self._clients_lock:
            if self._stopped:
                client.close()
                return
            self._clients.add(client)
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _Handler(client, address, self)
        except OSError:
            pass  # the CLI went away mid-request
        finally:
            with self._clients_lock:
                self._clients.discard(client)
            with contextlib.suppress(OSError):
                client.close()

    # ----------------------------------------------------------------------------------------- one request

    def authorized(self, handler: BaseHTTPRequestHandler, path: str) -> tuple[bool, str]:
        """Whether the request carries this task's token, and its path without the token."""
        presented: list[str] = []
        if path.startswith(AUTH_PATH_PREFIX):
            token, _, rest = path[len(AUTH_PATH_PREFIX) :].partition("/")
            presented.append(token)
            path = "/" + rest
        if handler.headers.get("x-api-key"):
            presented.append(handler.headers["x-api-key"].strip())
        bearer = handler.headers.get("authorization") or ""
        if bearer[:7].lower() == "bearer ":
            presented.append(bearer[7:].strip())
        ok = False
        for candidate in presented:
            ok |= hmac.compare_digest(candidate.encode(), self._token_bytes)
        return ok, path

    def handle(self, handler: _Handler) -> None:
        ok, path_and_query = self.authorized(handler, handler.path)
        path = path_and_query.split("?", 1)[0]
        if handler.command == "HEAD" and path == "/":
            # The CLI's preconnect (no credential): it warms its connection, and the proxy warms its own upstream
            # one in turn, so the first model request does not pay for a TLS handshake.
            handler.send_response_only(200)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            self._warm()
            return
        if not ok:
            self.stats.unauthorized += 1
            get_logger().warning(
                "model proxy: a request without this task's token",
                extra={"method": handler.command, "path": path[:200]},
            )
            _drain(handler)
            send_error(handler, 401, "authentication_error", "invalid or missing token for the runner's model proxy")
            return
        found = route(self.upstream.kind, handler.command, path)
        if found is None:
            self.stats.not_forwarded += 1
            get_logger().warning("model proxy: path not forwarded", extra={"method": handler.command, "path": path})
            _drain(handler)
            send_error(handler, 404, "not_found_error", "the runner's model proxy forwards model requests only")
            return
        body = _read_body(handler)
        if body is None:
            return
        if found.metered:
            refusal = self.meter.admit()
            if refusal is not None:
                get_logger().warning("model proxy: budget reached", extra={"reason": refusal})
                send_error(handler, 402, "billing_error", refusal, retry=False)
                return
        try:
            self._forward(handler, path_and_query, found, body)
        finally:
            if found.metered:
                self.meter.refresh_day()

    def _forward(self, handler: _Handler, path_and_query: str, found: Route, body: bytes) -> None:
        upstream = self.upstream
        if upstream.kind == "bedrock":
            path, _, query = path_and_query.partition("?")
            path_and_query = bedrock_path(path) + (f"?{query}" if query else "")
        url = upstream.url_for(path_and_query, found)
        headers = _client_headers(handler)
        try:
            target, request_path = _target(url)
            if upstream.kind == "bedrock":
                signed = {k: v for k, v in headers.items() if k.lower() in ("content-type", "accept")}
                headers.update(sign_bedrock(handler.command, url, body, signed, upstream.region))
            else:
                for name, value in upstream.headers:
                    headers[name.lower()] = value
                if upstream.beta:
                    betas = [b for b in headers.pop("anthropic-beta", "").split(",") if b.strip()]
                    headers["anthropic-beta"] = ",".join([*betas, upstream.beta])
            conn, response = _send(target, handler.command, request_path, body, headers)
        except (OSError, HTTPException, UpstreamError) as exc:
            self.stats.upstream_errors += 1
            get_logger().warning("model proxy: upstream unreachable", extra={"error": repr(exc)[:300]})
            send_error(handler, 502, "api_error", f"the runner's model proxy could not reach the model API: {exc}")
            return
        self.stats.forwarded += 1
        self.stats.by_status[response.status] = self.stats.by_status.get(response.status, 0) + 1
        reader = UsageReader(response.getheader("content-type") or "") if found.metered else None
        complete = _relay(handler, response, reader)
        if complete and not response.will_close:
            _POOL.put(target, conn)
        else:
            conn.close()
        if reader is not None:
            reader.finish()
            if reader.usage is not None:
                model = reader.model or found.model or model_in_request(body) or ""
                self.meter.add(model, reader.usage)
            elif response.status < 300:
                self.stats.unmetered += 1

    def _warm(self) -> None:
        with contextlib.suppress(OSError, HTTPException, UpstreamError):
            target, _ = _target(self.upstream.url_for("/", Route(metered=True)))
            _POOL.warm(target)


def _send(
    target: _Host, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[HTTPConnection, HTTPResponse]:
    """Send on a pooled connection; once more on a fresh one if a reused one turns out closed before any answer
    (a keep-alive connection the server dropped while idle)."""
    conn, reused = _POOL.get(target)
    try:
        conn.request(method, path, body=body, headers=headers)
        return conn, conn.getresponse()
    except (RemoteDisconnected, BrokenPipeError, ConnectionResetError):
        conn.close()
        if not reused:
            raise
    conn = _connect(target)
    conn.request(method, path, body=body, headers=headers)
    return conn, conn.getresponse()


def _client_headers(handler: BaseHTTPRequestHandler) -> dict[str, str]:
    """The CLI's headers to forward, names lower-cased (one spelling per header for what the proxy replaces)."""
    listed = {h.strip().lower() for h in (handler.headers.get("connection") or "").split(",")}
    kept: dict[str, str] = {}
    for name, value in handler.headers.items():
        lower = name.lower()
        if lower in _HOP_BY_HOP or lower in _CLIENT_CREDENTIALS or lower in listed:
            continue
        kept[lower] = value
    # Identity: the usage is read from the bytes as they pass (http.client then adds nothing else).
    kept["accept-encoding"] = "identity"
    return kept


def _relay(handler: _Handler, response: HTTPResponse, reader: UsageReader | None) -> bool:
    """The upstream's answer to the CLI as it arrives. True when it was relayed whole (the upstream connection
    may be reused); on a broken side the other is closed too."""
    no_body = handler.command == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200
    length = response.getheader("content-length")
    chunked = not no_body and (length is None or response.chunked)
    lines = [f"HTTP/1.1 {response.status} {response.reason}"]
    lines += [f"{name}: {value}" for name, value in response.getheaders() if name.lower() not in _HOP_BY_HOP]
    if no_body:
        lines.append(f"Content-Length: {length or 0}")
    elif chunked:
        lines.append("Transfer-Encoding: chunked")
    else:
        lines.append(f"Content-Length: {length}")
    # The head goes out with the body's first chunk: one write and one wake-up of the CLI to its first byte.
    pending = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    try:
        while not no_body:
            try:
                chunk = response.read1(READ_CHUNK)
            except (OSError, HTTPException):
                handler.close_connection = True  # the CLI sees a cut answer (no final chunk) and retries
                if pending:
                    send_error(handler, 502, "api_error", "the model API's answer broke off before it began")
                return False
            if not chunk:
                break
            handler.wfile.write(pending + (b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk))
            pending = b""
            if reader is not None:
                reader.feed(chunk)
        response.close()  # read to its end: closed, so the connection can carry another request
        handler.wfile.write(pending + (b"0\r\n\r\n" if chunked else b""))
    except OSError:  # the CLI went away (stopped, killed): its part of the answer is what was sent
        handler.close_connection = True
        return False
    return True


def _read_body(handler: BaseHTTPRequestHandler) -> bytes | None:
    if "chunked" in (handler.headers.get("transfer-encoding") or "").lower():
        handler.close_connection = True
        send_error(handler, 411, "invalid_request_error", "the model proxy needs a Content-Length")
        return None
    try:
        length = int(handler.headers.get("content-length") or 0)
    except ValueError:
        length = -1
    if length < 0 or length > MAX_REQUEST_BYTES:
        handler.close_connection = True
        send_error(handler, 413, "request_too_large", "request too large for the runner's model proxy")
        return None
    return handler.rfile.read(length) if length else b""


def _drain(handler: BaseHTTPRequestHandler) -> None:
    """Read (and drop) a refused request's body, so the connection can carry the next one; close it otherwise."""
    try:
        length = int(handler.headers.get("content-length") or 0)
    except ValueError:
        length = -1
    if 0 < length <= MAX_REQUEST_BYTES and "chunked" not in (handler.headers.get("transfer-encoding") or ""):
        handler.rfile.read(length)
    elif length != 0:
        handler.close_connection = True


def send_error(
    handler: BaseHTTPRequestHandler, status: int, kind: str, message: str, *, retry: bool | None = None
) -> None:
    """An Anthropic-shaped error (`message` at the top too: Bedrock's SDK shows that one)."""
    body = json.dumps({"type": "error", "error": {"type": kind, "message": message}, "message": message}).encode()
    handler.send_response_only(status, HTTPStatus(status).phrase)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    if retry is not None:
        handler.send_header("x-should-retry", "true" if retry else "false")
    if handler.close_connection:
        handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(body)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the CLI reuses its connection to the proxy
    timeout = CLIENT_IDLE_SECONDS

    def __init__(self, request: socket.socket, address: Any, proxy: ModelProxy) -> None:
        self.proxy = proxy
        super().__init__(request, address, None)  # type: ignore[arg-type]  # no socketserver: see ModelProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the runner logs what matters (refusals, bad tokens, upstream errors) itself

    def do_POST(self) -> None:
        self.proxy.handle(self)

    do_GET = do_POST
    do_HEAD = do_POST
    do_PUT = do_POST
    do_DELETE = do_POST
    do_PATCH = do_POST


# --------------------------------------------------------------------------------------------------- the runner's


def daily_spent(cap_usd: float) -> Callable[[], float]:
    """Today's figure for a task with this cap: booked, plus what other running tasks hold (its own hold is
    its own spend, metered here)."""
    return lambda: budgets.committed_by_others(cap_usd, max_age_seconds=DAY_REFRESH_SECONDS)


def for_task(cap_usd: float, api_key: str | None) -> ModelProxy:
    """Start a task's proxy: its cap, the day's, the runner's upstream and credential (binds a socket and starts
    threads: call it off the event loop)."""
    meter = Meter(cap_usd, daily_cap_usd=get_settings().daily_budget_usd, spent_today=daily_spent(cap_usd))
    return ModelProxy(upstream_from_env(api_key), meter).start()
