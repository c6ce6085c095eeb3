"""WebSocket push through the API Gateway management API (post_to_connection).

Frames: `{"type": "events", "events": [...]}` carries one or more task events (bursts are coalesced by the
caller). A single event too big for one frame is sent as `{"type": "event_part", "part": i, "parts": n,
"data": <slice of the event's JSON>}` frames for the client to join: every frame stays under 128 KB.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from botocore.exceptions import ClientError

from agent_machine import aws
from agent_machine.models import TaskEvent
from agent_machine.settings import get_settings
from agent_machine.store import connections

MAX_FRAME_BYTES = 120 * 1024  # API Gateway's limit is 128 KB per message; keep headroom


def frames(
    events: Sequence[TaskEvent], max_bytes: int = MAX_FRAME_BYTES, *, texts: Sequence[str] | None = None
) -> list[bytes]:
    """The frames carrying `events`; `texts` are their JSON when the caller has already encoded them (the
    runner encodes each event once, for storing and for every watcher)."""
    out: list[bytes] = []
    batch: list[str] = []
    size = 0
    overhead = len(b'{"type":"events","events":[]}')

    def flush() -> None:
        nonlocal batch, size
        if batch:
            out.append(('{"type":"events","events":[' + ",".join(batch) + "]}").encode())
            batch, size = [], 0

    for event, text in zip(events, texts if texts is not None else [e.model_dump_json() for e in events], strict=True):
        n = len(text.encode())
        if n + overhead > max_bytes:
            flush()
            out.extend(_split(event, text, max_bytes))
            continue
        if size + n + 1 + overhead > max_bytes:
            flush()
        batch.append(text)
        size += n + 1
    flush()
    return out


def _split(event: TaskEvent, text: str, max_bytes: int) -> list[bytes]:
    # Slice by characters with room for JSON escaping (worst case 6 bytes per char in \uXXXX form).
    step = max(1, (max_bytes - 512) // 6)
    pieces = [text[i : i + step] for i in range(0, len(text), step)]
    return [
        json.dumps(
            {
                "type": "event_part",
                "task_id": event.task_id,
                "session_id": event.session_id,
                "seq": event.seq,
                "part": i,
                "parts": len(pieces),
                "data": piece,
            }
        ).encode()
        for i, piece in enumerate(pieces)
    ]


@dataclass
class Pusher:
    """Posts frames to connections; forgets connections API Gateway says are gone (410)."""

    endpoint_url: str | None = None
    calls: int = 0
    gone: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.endpoint_url is None:
            self.endpoint_url = get_settings().websocket_management_url

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
