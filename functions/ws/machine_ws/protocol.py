"""What a WebSocket client may send, and its validation (one JSON object per frame):

- `{"action": "subscribe", "session_id": S, "last_seq": {"<task_id>": N, ...}}`: live events of every task of
  session S, after a replay (subscriptions.py).
- `{"action": "subscribe", "task_id": T, "last_seq": N}`: live events of task T, after a replay.
- `{"action": "subscribe", "topic": "all"}`: lifecycle events (created/started/finished) of every task.
- `{"action": "unsubscribe", ...}`: the same shapes, without `last_seq`.
- `{"action": "ping"}` -> `{"type": "pong"}`.
- `{"action": "chat", "message": "...", "session_id": S?}` -> `{"type": "chat.accepted", "task_id", "session_id"}`.

A message may carry an `"id"` (string or number) that is echoed in its reply. A binary frame (base64 body,
`isBase64Encoded`) is read as UTF-8 text. Anything malformed is a `ClientError`, answered with an error frame.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Literal

from agent_machine.models import Subscription
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

MAX_BODY_CHARS = 256 * 1024
MAX_LAST_SEQ_ENTRIES = 200
MAX_REQUEST_ID_CHARS = 64
ACTIONS = "subscribe, unsubscribe, ping or chat"


class ClientError(ValueError):
    """A client's mistake: answered with an error frame, never raised out of the handler."""


Ident = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:#-]+$")


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SubscribeMessage(_Message):
    action: Literal["subscribe", "unsubscribe"]
    session_id: str | None = Ident
    task_id: str | None = Ident
    topic: Literal["all"] | None = None
    last_seq: StrictInt | dict[str, StrictInt] | None = None


class ChatMessage(_Message):
    action: Literal["chat"]
    message: str = Field(min_length=1, max_length=100_000)
    session_id: str | None = Ident


@dataclass(frozen=True)
class Request:
    """A frame read as a JSON object: its fields, the `id` to echo (when usable) and its `action`."""

    data: dict[str, Any]
    request_id: str | int | None
    action: object


def parse(body: str | None) -> Request:
    """The frame's JSON object; raises ClientError for an empty, oversized or non-object frame."""
    if not body:
        raise ClientError("empty message")
    if len(body) > MAX_BODY_CHARS:
        raise ClientError("message too large")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ClientError("message is not valid JSON") from exc
    if not isinstance(data, dict):
        raise ClientError("message must be a JSON object")
    raw_id = data.get("id")
    # bool is an int to Python, not an id to a client.
    usable = isinstance(raw_id, str | int) and not isinstance(raw_id, bool)
    request_id = raw_id if usable and len(str(raw_id)) <= MAX_REQUEST_ID_CHARS else None
    return Request(data=data, request_id=request_id, action=data.get("action"))


def decode_binary(body: str) -> str:
    """A binary frame (API Gateway passes it base64-encoded): UTF-8 JSON is taken as text, anything else refused."""
    try:
        return base64.b64decode(body, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return "<binary>"  # not UTF-8: answered with "message is not valid JSON"


def subscription(msg: SubscribeMessage) -> Subscription:
    given = [k for k in ("session_id", "task_id", "topic") if getattr(msg, k) is not None]
    if len(given) != 1:
        raise ClientError(f"{msg.action} needs exactly one of session_id, task_id or topic")
    if msg.session_id is not None:
        return Subscription(kind="session", id=msg.session_id)
    if msg.task_id is not None:
        return Subscription(kind="task", id=msg.task_id)
    return Subscription(kind="all")


def _seq(value: int) -> int:
    if value < 0:
        raise ClientError("last_seq must be >= 0")
    return value


def session_last_seq(msg: SubscribeMessage) -> dict[str, int]:
    if msg.last_seq is None:
        return {}
    if not isinstance(msg.last_seq, dict):
        raise ClientError("last_seq of a session subscribe is a map of task id to sequence number")
    if len(msg.last_seq) > MAX_LAST_SEQ_ENTRIES:
        raise ClientError(f"last_seq names more than {MAX_LAST_SEQ_ENTRIES} tasks")
    return {str(k): _seq(v) for k, v in msg.last_seq.items()}


def task_last_seq(msg: SubscribeMessage) -> int:
    if msg.last_seq is None:
        return 0
    if isinstance(msg.last_seq, dict):
        raise ClientError("last_seq of a task subscribe is a number")
    return _seq(msg.last_seq)


def validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "message"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)
