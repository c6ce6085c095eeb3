"""WebSocket push through the API Gateway management API (post_to_connection).

Frames: `{"type": "events", "events": [...]}` carries one or more task events (bursts are coalesced by the
caller). A single event too big for one frame is sent as `{"type": "event_part", "part": i, "parts": n,
"data": <slice of the event's JSON>}` frames for the client to join: every frame stays under 128 KB.

The management API's endpoint is the WebSocket API stage's own URL spoken over HTTP (`management_url`): the template
passes WEBSOCKET_URL as the API's ApiEndpoint plus the stage, so it is right wherever the stack runs (AWS answers
wss://<id>.execute-api.<region>.amazonaws.com, LocalStack its own host and port), never an amazonaws.com address
built by hand. WEBSOCKET_MANAGEMENT_URL, when set, wins (a custom domain, or an emulator serving it elsewhere).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from botocore.exceptions import ClientError

from agent_machine import aws
from agent_machine.models import TaskEvent
from agent_machine.settings import get_settings
from agent_machine.store import connections

MAX_FRAME_BYTES = 120 * 1024  # API Gateway's limit is 128 KB per message; keep headroom

# A WebSocket stage's clients speak ws(s); its @connections management API is plain HTTP(S) on the same host.
_HTTP_SCHEMES = {"wss": "https", "ws": "http", "https": "https", "http": "http"}


def management_url(websocket_url: str | None, explicit: str | None = None) -> str | None:
    """The management API endpoint (https://<host>/<stage>) of a WebSocket API stage: `explicit` when given, else
    `websocket_url` (the stage's wss:// URL); either has its scheme turned to HTTP (wss -> https, ws -> http),
    its query and fragment dropped. None when there is no usable URL (pushing is then off)."""
    url = (explicit or "").strip() or (websocket_url or "").strip()
    if not url:
        return None
    parts = urlsplit(url)
    scheme = _HTTP_SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        return None
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def frames(
    events: Sequence[TaskEvent], max_bytes: int = MAX_FRAME_BYTES, *, texts: Sequence[str] | None = None
) -> list[bytes]:
    """The frames carrying `events`; `texts` are their JSON when the caller has already encoded them (the
    runner encodes each event once, for storing and for every watcher). Every frame is at most `max_bytes`
    bytes of UTF-8."""
    out: list[bytes] = []
    batch: list[bytes] = []
    size = 0
    overhead = len(b'{"type":"events","events":[]}')

    def flush() -> None:
        nonlocal batch, size
        if batch:
            out.append(b'{"type":"events","events":[' + b",".join(batch) + b"]}")
            batch, size = [], 0

    for event, text in zip(events, texts if texts is not None else [e.model_dump_json() for e in events], strict=True):
        text, raw = _utf8(text)
        n = len(raw)
        if n + overhead > max_bytes:
            flush()
            out.extend(_split(event, text, max_bytes, raw))
            continue
        if size + n + 1 + overhead > max_bytes:
            flush()
        batch.append(raw)
        size += n + 1
    flush()
    return out


def _utf8(text: str) -> tuple[str, bytes]:
    """The event JSON and its UTF-8 bytes. JSON text holding lone surrogates (not encodable as UTF-8) is
    re-encoded with ASCII escapes: the same JSON value."""
    try:
        return text, text.encode()
    except UnicodeEncodeError:
        text = json.dumps(json.loads(text), separators=(",", ":"))
        return text, text.encode()


_CONTROL = bytes(range(0x20))


def _escaped_size(chunk: bytes) -> int:
    """An upper bound of the bytes `chunk` (UTF-8) takes inside a JSON string written with ensure_ascii=False:
    `"` and `\\` take 2 bytes, control characters at most 6 (\\u00XX), everything else its UTF-8 bytes."""
    controls = len(chunk) - len(chunk.translate(None, _CONTROL))
    return len(chunk) + chunk.count(b'"') + chunk.count(b"\\") + 5 * controls


def _split(event: TaskEvent, text: str, max_bytes: int, raw: bytes | None = None) -> list[bytes]:
    """`event_part` frames of at most `max_bytes` bytes each: the event's JSON text is cut by its UTF-8 size
    (on character boundaries), so ASCII fills a frame and emoji (4 bytes, never the 12 of `\\ud83d\\ude00`
    escapes) never overflow one."""
    if raw is None:
        _, raw = _utf8(text)

    def envelope(part: int, parts: int, data: str) -> bytes:
        head = json.dumps(
            {
                "type": "event_part",
                "task_id": event.task_id,
                "session_id": event.session_id,
                "seq": event.seq,
                "part": part,
                "parts": parts,
            },
            separators=(",", ":"),
        )
        return (head[:-1] + ',"data":' + json.dumps(data, ensure_ascii=False) + "}").encode()

    budget = max_bytes - len(envelope(10**9, 10**9, ""))
    if budget < 64:
        raise ValueError(f"max_bytes {max_bytes} leaves no room for event data")
    pieces: list[str] = []
    start = 0
    while start < len(raw):
        end = min(len(raw), start + budget)
        while True:
            while end < len(raw) and (raw[end] & 0xC0) == 0x80:  # never cut inside a UTF-8 sequence
                end -= 1
            over = _escaped_size(raw[start:end]) - budget
            if over <= 0:
                break
            end -= over
        pieces.append(raw[start:end].decode())
        start = end
    return [envelope(i, len(pieces), piece) for i, piece in enumerate(pieces)]


@dataclass
class Pusher:
    """Posts frames to connections; forgets connections API Gateway says are gone (410)."""

    endpoint_url: str | None = None
    calls: int = 0
    gone: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.endpoint_url is None:
            settings = get_settings()
            self.endpoint_url = management_url(settings.websocket_url, settings.websocket_management_url)

    def post(self, connection_id: str, data: bytes) -> bool:
        if not self.endpoint_url or connection_id in self.gone:
            return False
        self.calls += 1
        try:
            aws.ws_management(self.endpoint_url).post_to_connection(ConnectionId=connection_id, Data=data)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = exc.response.get("Error", {}).get("Code", "")
            if status == 410 or code == "GoneException":
                self.gone.add(connection_id)
                connections.remove(connection_id)
                return False
            raise
        return True

    def send_events(self, connection_ids: Iterable[str], events: list[TaskEvent]) -> int:
        """Post the events to each connection; returns how many connections got them."""
        if not events:
            return 0
        payloads = frames(events)
        return sum(self.send_frames(connection_id, payloads) for connection_id in connection_ids)

    def send_frames(self, connection_id: str, payloads: Iterable[bytes]) -> bool:
        """Post frames to one connection, in order; False once it is gone."""
        return all(self.post(connection_id, data) for data in payloads)

    def send_json(self, connection_id: str, message: dict[str, object]) -> bool:
        return self.post(connection_id, json.dumps(message).encode())
