"""WebSocket API Lambda: `$connect` (token check), `$disconnect`, and `$default` JSON actions.

Messages from a client (one JSON object per frame):

- `{"action": "subscribe", "session_id": S, "last_seq": {"<task_id>": N, ...}}`: live events of every task of
  session S. First replays, from the stored output, the events after N of each task of S that is queued or
  running or named in `last_seq` (0 for tasks not named).
- `{"action": "subscribe", "task_id": T, "last_seq": N}`: live events of task T, after replaying its stored
  events with seq > N (a late subscriber to a finished task gets its whole output).
- `{"action": "subscribe", "topic": "all"}`: lifecycle events (created/started/finished) of every task.
- `{"action": "unsubscribe", ...}`: the same shapes, without `last_seq`.
- `{"action": "ping"}` -> `{"type": "pong"}`.
- `{"action": "chat", "message": "...", "session_id": S?}` -> `{"type": "chat.accepted", "task_id", "session_id"}`.

Replies go back through the management API (`agent_machine.push.Pusher`), never as the Lambda's return value.
A subscribe is answered with `{"type": "subscribed", ...}` after its replay frames; it carries `task_last_seq` (a
number, or a map for a session), the last seq the server knows of per task: a client holding less subscribes again
with its last seq (a subscriber arriving near a task's end can miss live pushes sent to a stale subscriber list).
An event the management API refuses (e.g. PayloadTooLargeException) is replayed as a truncated stand-in with the
same seq, after an error frame naming it; a failed push never fails the Lambda or drops the subscription. Each
message also extends the connection's record (`connections.touch`: API Gateway's 10-minute idle timeout), and a
binary frame (base64 body, `isBase64Encoded`) is read as UTF-8 text. A message may carry an
`"id"` (string or number) that is echoed in its reply. Anything malformed gets `{"type": "error", "message"}`:
the handler never raises for a client's mistake.

Import-light on purpose: no web framework (the chat domain is imported up front: it adds a few ms, no packages).
"""

from __future__ import annotations

import base64
import json
from typing import Any, Literal

from agent_machine.api_token import TokenCheck, bearer_token, check_token
from agent_machine.domain.chat import start_chat
from agent_machine.models import ALL_TASKS_TOPIC, Subscription, TaskEvent, TaskStatus
from agent_machine.observability import get_logger, quiet_noisy_loggers
from agent_machine.push import Pusher
from agent_machine.store import connections, output, tasks
from aws_lambda_powertools.utilities.data_classes import APIGatewayWebSocketEvent
from botocore.exceptions import BotoCoreError
from botocore.exceptions import ClientError as AwsError
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

MAX_BODY_CHARS = 256 * 1024
MAX_SESSION_TASKS = 500  # a session's tasks considered for replay (newest first)
MAX_LAST_SEQ_ENTRIES = 200

logger = get_logger()
quiet_noisy_loggers()

Response = dict[str, Any]
Reply = dict[str, object]


class ClientError(ValueError):
    """A client's mistake: answered with an error frame, never raised out of the handler."""


# ---------------------------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------------------------
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


def _subscription(msg: SubscribeMessage) -> Subscription:
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


def _session_last_seq(msg: SubscribeMessage) -> dict[str, int]:
    if msg.last_seq is None:
        return {}
    if not isinstance(msg.last_seq, dict):
        raise ClientError("last_seq of a session subscribe is a map of task id to sequence number")
    if len(msg.last_seq) > MAX_LAST_SEQ_ENTRIES:
        raise ClientError(f"last_seq names more than {MAX_LAST_SEQ_ENTRIES} tasks")
    return {str(k): _seq(v) for k, v in msg.last_seq.items()}


def _task_last_seq(msg: SubscribeMessage) -> int:
    if msg.last_seq is None:
        return 0
    if isinstance(msg.last_seq, dict):
        raise ClientError("last_seq of a task subscribe is a number")
    return _seq(msg.last_seq)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "message"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------------------------------------------
def _token_from(event: APIGatewayWebSocketEvent) -> str | None:
    # Browsers cannot set headers on a WebSocket: the dashboard sends `?token=`; other clients may use the header.
    token = event.query_string_parameters.get("token")
    if token:
        return str(token)
    return bearer_token(event.headers.get("authorization"))


def connect(event: APIGatewayWebSocketEvent, connection_id: str) -> Response:
    result = check_token(_token_from(event))
    if result is TokenCheck.MISSING:
        logger.info("websocket connect refused: no token", extra={"connection_id": connection_id})
        return {"statusCode": 401, "body": "token required"}
    if result is not TokenCheck.OK:
        logger.info("websocket connect refused: wrong token", extra={"connection_id": connection_id})
        return {"statusCode": 403, "body": "forbidden"}
    connections.add(connection_id)
    return {"statusCode": 200}


def disconnect(connection_id: str) -> Response:
    connections.remove(connection_id)
    return {"statusCode": 200}


class _Replies:
    """One $default message's replies to its connection."""

    def __init__(self, connection_id: str, request_id: object) -> None:
        self.connection_id = connection_id
        self.request_id = request_id
        self.pusher = Pusher()

    @property
    def gone(self) -> bool:
        return self.connection_id in self.pusher.gone

    def reply(self, message: Reply) -> bool:
        if self.request_id is not None:
            message = {**message, "id": self.request_id}
        return self.pusher.send_json(self.connection_id, message)

    def error(self, text: str, action: object = None) -> None:
        message: Reply = {"type": "error", "message": text}
        if isinstance(action, str):
            message["action"] = action[:32]
        self.reply(message)

    def replay(self, events: list[TaskEvent]) -> None:
        if not events or self.gone:
            return
        try:
            self.pusher.send_events([self.connection_id], events)
            return
        except (AwsError, BotoCoreError) as exc:
            logger.warning("replay could not be pushed whole; sending event by event", extra={"error": repr(exc)})
        # One event at a time (the client dedupes what the failed batch had already delivered): an event the
        # management API refuses (e.g. PayloadTooLargeException) is replaced by a truncated stand-in with the same
        # seq, so the client's stream has no hole, and the client is told.
        for event in events:
            if self.gone:
                return
            try:
                self.pusher.send_events([self.connection_id], [event])
            except (AwsError, BotoCoreError) as exc:
                self._stand_in(event, exc)

    def _stand_in(self, event: TaskEvent, exc: Exception) -> None:
        reason = _aws_error_code(exc)
        logger.warning(
            "event could not be pushed; sent truncated",
            extra={"task_id": event.task_id, "seq": event.seq, "error": reason},
        )
        with _quiet():
            self.reply(
                {
                    "type": "error",
                    "action": "subscribe",
                    "message": f"event {event.seq} of task {event.task_id} could not be sent ({reason}); "
                    "it is shown truncated",
                    "task_id": event.task_id,
                    "seq": event.seq,
                }
            )
        payload: dict[str, object] = {"truncated": True, "error": reason}
        if "kind" in event.payload:
            payload["kind"] = event.payload["kind"]
            payload["text"] = f"[this output could not be sent ({reason}); see the stored transcript]"
        for key in ("cost_usd", "duration_ms", "num_turns", "error", "error_kind", "status"):
            value = event.payload.get(key)
            if isinstance(value, int | float | bool) or (isinstance(value, str) and len(value) <= 2000):
                payload[key] = value
        with _quiet():
            self.pusher.send_events([self.connection_id], [event.model_copy(update={"payload": payload})])


class _quiet:
    """Swallows (and logs) AWS errors of a best-effort push."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, AwsError | BotoCoreError):
            logger.warning("best-effort push failed", extra={"error": repr(exc)})
            return True
        return False


def _aws_error_code(exc: Exception) -> str:
    if isinstance(exc, AwsError):
        return str(
            exc.response.get("Error", {}).get("Code")
            or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "error")
        )
    return type(exc).__name__


def _replay_task(ws: _Replies, task_id: str, after: int) -> tuple[int, int]:
    """Send the task's stored events after `after`; returns (how many, the last seq sent or `after`)."""
    events = output.read_events(task_id, after)
    ws.replay(events)
    return len(events), (events[-1].seq if events else after)


def subscribe(ws: _Replies, msg: SubscribeMessage) -> None:
    sub = _subscription(msg)
    # Register first, then read the stored output: an event written in between is both stored and pushed,
    # and the client dedupes by (task_id, seq). Nothing can fall between the replay and the live stream.
    if msg.session_id is not None:
        last_seq = _session_last_seq(msg)
        if _register(ws, sub):
            _subscribe_session(ws, msg.session_id, last_seq)
    elif msg.task_id is not None:
        after = _task_last_seq(msg)
        if _register(ws, sub):
            _subscribe_task(ws, msg.task_id, after)
    elif _register(ws, sub):
        ws.reply({"type": "subscribed", "topic": ALL_TASKS_TOPIC})


def _register(ws: _Replies, sub: Subscription) -> bool:
    if connections.subscribe(ws.connection_id, sub):
        return True
    ws.error("this connection is not registered (expired?): reconnect", "subscribe")
    return False


def _subscribe_task(ws: _Replies, task_id: str, after: int) -> None:
    task = tasks.get(task_id)
    if task is None:
        connections.unsubscribe(ws.connection_id, Subscription(kind="task", id=task_id))
        ws.error(f"unknown task {task_id}", "subscribe")
        return
    replayed, last = _replay_task(ws, task_id, after)
    if task.status.terminal and last < task.last_seq and not ws.gone:
        # Booked terminal before our read: its events are stored by now (the runner stores the terminal event
        # before booking). Read once more rather than leave the client behind.
        more, last = _replay_task(ws, task_id, last)
        replayed += more
    ws.reply(
        {
            "type": "subscribed",
            "task_id": task_id,
            "session_id": task.session_id,
            "status": task.status.value,
            "replayed": replayed,
            "last_seq": last,
            "task_last_seq": max(task.last_seq, last),
        }
    )


def _subscribe_session(ws: _Replies, session_id: str, last_seq: dict[str, int]) -> None:
    statuses: dict[str, str] = {}
    known_last: dict[str, int] = {}
    cursor: str | None = None
    while len(statuses) < MAX_SESSION_TASKS:
        page = tasks.list_tasks(session_id=session_id, limit=min(100, MAX_SESSION_TASKS - len(statuses)), cursor=cursor)
        for t in page.items:
            statuses[t.task_id] = t.status.value
            known_last[t.task_id] = t.last_seq
        cursor = page.cursor
        if not cursor:
            break
    for task_id in last_seq:
        if task_id not in statuses:  # older than the listing reaches, or not of this session at all
            known = tasks.get(task_id)
            if known is not None and known.session_id == session_id:
                statuses[task_id] = known.status.value
                known_last[task_id] = known.last_seq
    active = {TaskStatus.QUEUED.value, TaskStatus.RUNNING.value}
    wanted = [t for t, status in statuses.items() if status in active or t in last_seq]
    replayed = 0
    sent: dict[str, int] = {}
    for task_id in reversed(wanted):  # oldest first, as the conversation reads
        if ws.gone:
            return
        n, last = _replay_task(ws, task_id, last_seq.get(task_id, 0))
        if statuses[task_id] not in active and last < known_last.get(task_id, 0) and not ws.gone:
            more, last = _replay_task(ws, task_id, last)
            n += more
        replayed += n
        sent[task_id] = last
    ws.reply(
        {
            "type": "subscribed",
            "session_id": session_id,
            "replayed": replayed,
            "last_seq": sent,
            "tasks": {t: statuses[t] for t in wanted},
            "task_last_seq": {t: max(known_last.get(t, 0), sent.get(t, 0)) for t in wanted},
        }
    )


def unsubscribe(ws: _Replies, msg: SubscribeMessage) -> None:
    sub = _subscription(msg)
    connections.unsubscribe(ws.connection_id, sub)
    ws.reply(
        {
            "type": "unsubscribed",
            **{
                k: v
                for k, v in (("session_id", msg.session_id), ("task_id", msg.task_id), ("topic", msg.topic))
                if v is not None
            },
        }
    )


def chat(ws: _Replies, msg: ChatMessage) -> None:
    try:
        accepted = start_chat(msg.message, msg.session_id)
    except LookupError:
        ws.error(f"unknown session {msg.session_id}", "chat")
        return
    except ValueError as exc:
        ws.error(str(exc) or "invalid chat message", "chat")
        return
    except Exception:
        logger.exception("chat could not be started")
        ws.error("the chat could not be started; try again", "chat")
        return
    ws.reply({"type": "chat.accepted", "task_id": accepted.task_id, "session_id": accepted.session_id})


def message(connection_id: str, body: str | None) -> Response:
    request_id: object = None
    action: object = None
    try:
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
        if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) and len(str(raw_id)) <= 64:
            request_id = raw_id
        action = data.get("action")
    except ClientError as exc:
        _Replies(connection_id, request_id).error(str(exc))
        return {"statusCode": 200}

    ws = _Replies(connection_id, request_id)
    try:
        if action == "ping":
            ws.reply({"type": "pong"})
        elif action in ("subscribe", "unsubscribe"):
            msg = SubscribeMessage.model_validate(data)
            (subscribe if action == "subscribe" else unsubscribe)(ws, msg)
        elif action == "chat":
            chat(ws, ChatMessage.model_validate(data))
        else:
            raise ClientError("unknown action; expected subscribe, unsubscribe, ping or chat")
    except ValidationError as exc:
        ws.error(_validation_message(exc), action)
    except ClientError as exc:
        ws.error(str(exc), action)
    except (AwsError, BotoCoreError) as exc:
        # A push or table call failed: the client is told (best effort) and the Lambda still succeeds, so API
        # Gateway does not answer with its own opaque error. A subscription already registered stays.
        logger.exception("message could not be handled", extra={"action": str(action)[:32]})
        with _quiet():
            reason = _aws_error_code(exc)
            ws.error(f"the server could not complete this {str(action)[:32]} ({reason}); try again", action)
    return {"statusCode": 200}


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> Response:
    ws_event = APIGatewayWebSocketEvent(event)
    try:
        request = ws_event.request_context
        route, connection_id = request.route_key, request.connection_id
    except (KeyError, TypeError):  # not an API Gateway WebSocket event: there is no one to answer
        return {"statusCode": 400, "body": "no connection id"}
    if not isinstance(connection_id, str) or not connection_id:
        return {"statusCode": 400, "body": "no connection id"}
    logger.append_keys(connection_id=connection_id, route=route)
    if route == "$connect":
        return connect(ws_event, connection_id)
    if route == "$disconnect":
        return disconnect(connection_id)
    _touch(connection_id, request.connected_at)
    body = ws_event.body
    if ws_event.is_base64_encoded and isinstance(body, str):
        body = _decode_binary(body)
    return message(connection_id, body)


def _touch(connection_id: str, connected_at_ms: object) -> None:
    """Each message keeps the connection's record alive for API Gateway's idle timeout (one UpdateItem)."""
    connected = connected_at_ms / 1000 if isinstance(connected_at_ms, int | float) and connected_at_ms > 0 else None
    try:
        connections.touch(connection_id, connected)
    except (AwsError, BotoCoreError):
        logger.warning("could not record the connection's activity", exc_info=True)


def _decode_binary(body: str) -> str | None:
    """A binary frame (API Gateway passes it base64-encoded): UTF-8 JSON is taken as text, anything else refused."""
    try:
        return base64.b64decode(body, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return "<binary>"  # not UTF-8: answered with "message is not valid JSON"
