"""The WebSocket Lambda against the emulated stack, with a local stand-in for the API Gateway management API."""

from __future__ import annotations

import json
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import machine_ws.handler
import pytest
from agent_machine.models import EventType, Task, TaskEvent, TaskStatus
from agent_machine.settings import get_settings
from agent_machine.store import connections, output, tasks
from local_runtime.events import LambdaContext, new_connection_id, websocket_event
from local_runtime.provision import Provisioned
from machine_ws.handler import handler

TOKEN = "test-api-token-01"  # tests/conftest.py TEST_SECRETS


@dataclass
class Management:
    """`POST /@connections/{id}`: records what was posted; answers 410 for connections marked gone."""

    url: str
    posts: list[tuple[str, bytes]] = field(default_factory=list)
    gone: set[str] = field(default_factory=set)

    def frames(self, connection_id: str) -> list[dict[str, Any]]:
        return [json.loads(body) for cid, body in self.posts if cid == connection_id]

    def clear(self) -> None:
        self.posts.clear()


@pytest.fixture
def mgmt(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> Iterator[Management]:
    lock = threading.Lock()
    state = Management(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            prefix = "/@connections/"
            path = self.path.split("?", 1)[0]
            if not path.startswith(prefix):
                self.send_response(404)
                self.end_headers()
                return
            connection_id = unquote(path[len(prefix) :])
            if connection_id in state.gone:
                payload = b'{"message":"Gone"}'
                self.send_response(410)
                self.send_header("Content-Type", "application/json")
                self.send_header("x-amzn-ErrorType", "GoneException")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            with lock:
                state.posts.append((connection_id, body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("WEBSOCKET_MANAGEMENT_URL", state.url)
    get_settings.cache_clear()
    yield state
    server.shutdown()
    server.server_close()
    get_settings.cache_clear()


def call(
    route: str, connection_id: str, *, body: str | None = None, query: str = "", headers: dict[str, str] | None = None
) -> dict[str, Any]:
    result: dict[str, Any] = handler(
        websocket_event(route, connection_id, body=body, query=query, headers=headers), LambdaContext("ws")
    )
    return result


def send(connection_id: str, message: dict[str, Any] | str) -> dict[str, Any]:
    body = message if isinstance(message, str) else json.dumps(message)
    return call("$default", connection_id, body=body)


def connected() -> str:
    connection_id = new_connection_id()
    assert call("$connect", connection_id, query=f"token={TOKEN}")["statusCode"] == 200
    return connection_id


def make_task(status: TaskStatus = TaskStatus.RUNNING, session_id: str = "s-1") -> Task:
    return tasks.create(Task(session_id=session_id, prompt="hello", status=status))


def store_output(task: Task, seqs: range, *, chunk: int = 3, text: str = "line") -> list[TaskEvent]:
    events = [
        TaskEvent(
            type=EventType.OUTPUT,
            task_id=task.task_id,
            session_id=task.session_id,
            seq=seq,
            payload={"kind": "text", "text": f"{text} {seq}"},
        )
        for seq in seqs
    ]
    for start in range(0, len(events), chunk):
        output.put_chunk(task.task_id, events[start : start + chunk])
    return events


def replayed(frames: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(task_id, seq) of every event in `events` frames and joined `event_part` frames, in arrival order."""
    out: list[tuple[str, int]] = []
    parts: dict[tuple[str, int], list[str]] = {}
    for frame in frames:
        if frame["type"] == "events":
            out.extend((e["task_id"], e["seq"]) for e in frame["events"])
        elif frame["type"] == "event_part":
            key = (frame["task_id"], frame["seq"])
            parts.setdefault(key, []).append(frame["data"])
            if len(parts[key]) == frame["parts"]:
                event = json.loads("".join(parts.pop(key)))
                out.append((event["task_id"], event["seq"]))
    return out


# ----------------------------------------------------------------------------------------------------------------
# $connect / $disconnect
# ----------------------------------------------------------------------------------------------------------------
def test_connect_refused_without_or_with_wrong_token(mgmt: Management) -> None:
    assert call("$connect", new_connection_id())["statusCode"] == 401
    assert call("$connect", new_connection_id(), query="token=")["statusCode"] == 401
    assert call("$connect", new_connection_id(), query="token=nope")["statusCode"] == 403
    assert call("$connect", new_connection_id(), query=f"token={TOKEN}x")["statusCode"] == 403
    assert connections.count() == 0


def test_connect_with_token_stores_the_connection_with_ttl(mgmt: Management) -> None:
    connection_id = connected()
    assert connections.count() == 1
    assert connections._meta_expiry(connection_id) is not None
    # A non-browser client may use the Authorization header instead.
    other = new_connection_id()
    assert call("$connect", other, headers={"Authorization": f"Bearer {TOKEN}"})["statusCode"] == 200
    assert connections.count() == 2


def test_disconnect_removes_the_connection_and_its_subscriptions(mgmt: Management) -> None:
    connection_id = connected()
    task = make_task()
    send(connection_id, {"action": "subscribe", "task_id": task.task_id})
    assert connections.subscribers([f"task#{task.task_id}"]) == {connection_id}
    assert call("$disconnect", connection_id)["statusCode"] == 200
    assert connections.count() == 0
    assert connections.subscribers([f"task#{task.task_id}"]) == set()


def test_missing_connection_id_is_a_bad_request(mgmt: Management) -> None:
    event = websocket_event("$default", "x", body="{}")
    del event["requestContext"]["connectionId"]
    assert handler(event, LambdaContext("ws"))["statusCode"] == 400


# ----------------------------------------------------------------------------------------------------------------
# subscribe and replay
# ----------------------------------------------------------------------------------------------------------------
def test_task_subscribe_replays_events_after_last_seq_then_confirms(mgmt: Management) -> None:
    connection_id = connected()
    task = make_task()
    store_output(task, range(1, 11))
    assert send(connection_id, {"action": "subscribe", "task_id": task.task_id, "last_seq": 4, "id": "r1"}) == {
        "statusCode": 200
    }
    frames = mgmt.frames(connection_id)
    assert replayed(frames) == [(task.task_id, seq) for seq in range(5, 11)]
    last = frames[-1]
    assert last == {
        "type": "subscribed",
        "task_id": task.task_id,
        "session_id": task.session_id,
        "status": "running",
        "replayed": 6,
        "last_seq": 10,
        "task_last_seq": 10,  # what the server knows of: a client behind it subscribes again
        "id": "r1",
    }
    assert connections.subscribers([f"task#{task.task_id}"]) == {connection_id}


def test_late_subscriber_gets_a_finished_tasks_whole_output(mgmt: Management) -> None:
    task = make_task(TaskStatus.COMPLETED)
    events = store_output(task, range(1, 26), chunk=4)
    late = connected()
    send(late, {"action": "subscribe", "task_id": task.task_id})
    frames = mgmt.frames(late)
    assert replayed(frames) == [(e.task_id, e.seq) for e in events]
    assert frames[-1]["type"] == "subscribed"
    assert frames[-1]["status"] == "completed"
    got = [e for f in frames if f["type"] == "events" for e in f["events"]]
    assert got[0]["payload"] == {"kind": "text", "text": "line 1"}


def test_replay_of_an_event_over_the_frame_limit_is_split_into_parts(mgmt: Management) -> None:
    task = make_task(TaskStatus.COMPLETED)
    store_output(task, range(1, 2), text="x" * 200_000)
    store_output(task, range(2, 3))
    connection_id = connected()
    send(connection_id, {"action": "subscribe", "task_id": task.task_id})
    frames = mgmt.frames(connection_id)
    assert {f["type"] for f in frames} == {"event_part", "events", "subscribed"}
    assert all(len(body) < 128 * 1024 for _, body in mgmt.posts)
    assert replayed(frames) == [(task.task_id, 1), (task.task_id, 2)]


def test_session_subscribe_replays_active_tasks_and_those_named_in_last_seq(mgmt: Management) -> None:
    session = "sess-42"
    done_named = make_task(TaskStatus.COMPLETED, session)
    done_unnamed = make_task(TaskStatus.COMPLETED, session)
    running = make_task(TaskStatus.RUNNING, session)
    queued = make_task(TaskStatus.QUEUED, session)
    elsewhere = make_task(TaskStatus.COMPLETED, "other-session")
    for task in (done_named, done_unnamed, running, queued, elsewhere):
        store_output(task, range(1, 6))
    connection_id = connected()
    send(
        connection_id,
        {
            "action": "subscribe",
            "session_id": session,
            "last_seq": {done_named.task_id: 3, running.task_id: 2, elsewhere.task_id: 0},
        },
    )
    frames = mgmt.frames(connection_id)
    got = replayed(frames)
    assert sorted(got) == sorted(
        [(done_named.task_id, s) for s in (4, 5)]
        + [(running.task_id, s) for s in (3, 4, 5)]
        + [(queued.task_id, s) for s in range(1, 6)]
    )
    # Each task's events arrive in order.
    for task in (done_named, running, queued):
        seqs = [s for t, s in got if t == task.task_id]
        assert seqs == sorted(seqs)
    last = frames[-1]
    assert last["type"] == "subscribed"
    assert last["session_id"] == session
    assert last["replayed"] == 10
    assert last["last_seq"] == {done_named.task_id: 5, running.task_id: 5, queued.task_id: 5}
    assert set(last["tasks"]) == {done_named.task_id, running.task_id, queued.task_id}
    assert connections.subscribers([f"session#{session}"]) == {connection_id}


def test_subscribe_with_last_seq_at_the_end_replays_nothing(mgmt: Management) -> None:
    task = make_task()
    store_output(task, range(1, 4))
    connection_id = connected()
    send(connection_id, {"action": "subscribe", "task_id": task.task_id, "last_seq": 3})
    frames = mgmt.frames(connection_id)
    assert [f["type"] for f in frames] == ["subscribed"]
    assert frames[0]["replayed"] == 0
    assert frames[0]["last_seq"] == 3


def test_subscribe_all_and_unsubscribe(mgmt: Management) -> None:
    connection_id = connected()
    send(connection_id, {"action": "subscribe", "topic": "all"})
    assert mgmt.frames(connection_id)[-1] == {"type": "subscribed", "topic": "all"}
    assert connections.subscribers(["all"]) == {connection_id}
    task = make_task()
    send(connection_id, {"action": "subscribe", "task_id": task.task_id})
    send(connection_id, {"action": "unsubscribe", "task_id": task.task_id})
    send(connection_id, {"action": "unsubscribe", "topic": "all"})
    assert mgmt.frames(connection_id)[-1] == {"type": "unsubscribed", "topic": "all"}
    assert connections.subscribers(["all", f"task#{task.task_id}"]) == set()


def test_subscribe_to_an_unknown_task_is_an_error_and_leaves_no_subscription(mgmt: Management) -> None:
    connection_id = connected()
    send(connection_id, {"action": "subscribe", "task_id": "no-such-task"})
    assert mgmt.frames(connection_id) == [
        {"type": "error", "message": "unknown task no-such-task", "action": "subscribe"}
    ]
    assert connections.subscribers(["task#no-such-task"]) == set()


def test_subscribe_on_an_unregistered_connection_asks_to_reconnect(mgmt: Management) -> None:
    stranger = new_connection_id()
    task = make_task()
    send(stranger, {"action": "subscribe", "task_id": task.task_id})
    frames = mgmt.frames(stranger)
    assert frames[0]["type"] == "error"
    assert "reconnect" in frames[0]["message"]
    assert connections.subscribers([f"task#{task.task_id}"]) == set()


# ----------------------------------------------------------------------------------------------------------------
# gone connections, ping, chat, bad input
# ----------------------------------------------------------------------------------------------------------------
def test_posting_to_a_gone_connection_removes_it(mgmt: Management) -> None:
    connection_id = connected()
    task = make_task()
    send(connection_id, {"action": "subscribe", "session_id": task.session_id})
    assert connections.count() == 1
    mgmt.gone.add(connection_id)
    assert send(connection_id, {"action": "ping"}) == {"statusCode": 200}
    assert connections.count() == 0
    assert connections.subscribers([f"session#{task.session_id}"]) == set()


def test_replay_stops_when_the_connection_goes_away(mgmt: Management) -> None:
    connection_id = connected()
    task = make_task()
    store_output(task, range(1, 4))
    mgmt.gone.add(connection_id)
    assert send(connection_id, {"action": "subscribe", "task_id": task.task_id})["statusCode"] == 200
    assert connections.count() == 0


def test_ping_pong_echoes_the_request_id(mgmt: Management) -> None:
    connection_id = connected()
    send(connection_id, {"action": "ping"})
    send(connection_id, {"action": "ping", "id": 7})
    assert mgmt.frames(connection_id) == [{"type": "pong"}, {"type": "pong", "id": 7}]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("{not json", "message is not valid JSON"),
        ("", "empty message"),
        ("[1, 2]", "message must be a JSON object"),
        ('"ping"', "message must be a JSON object"),
        ('{"action": "dance"}', "unknown action"),
        ("{}", "unknown action"),
        ('{"action": "subscribe"}', "exactly one of session_id, task_id or topic"),
        ('{"action": "subscribe", "task_id": "a", "session_id": "b"}', "exactly one of"),
        ('{"action": "subscribe", "task_id": "a", "last_seq": -1}', "last_seq must be >= 0"),
        ('{"action": "subscribe", "task_id": "a", "last_seq": {"a": 1}}', "last_seq of a task subscribe"),
        ('{"action": "subscribe", "session_id": "a", "last_seq": 3}', "last_seq of a session subscribe"),
        ('{"action": "subscribe", "task_id": "a", "last_seq": "3"}', "last_seq"),
        ('{"action": "subscribe", "task_id": "../../etc"}', "task_id"),
        ('{"action": "subscribe", "task_id": 5}', "task_id"),
        ('{"action": "subscribe", "topic": "everything"}', "topic"),
        ('{"action": "chat"}', "message"),
        ('{"action": "chat", "message": ""}', "message"),
        ("x" * 300_000, "message too large"),
    ],
)
def test_bad_messages_get_an_error_frame_never_an_exception(mgmt: Management, body: str, expected: str) -> None:
    connection_id = connected()
    assert send(connection_id, body) == {"statusCode": 200}
    frames = mgmt.frames(connection_id)
    assert len(frames) == 1
    assert frames[0]["type"] == "error"
    assert expected in frames[0]["message"]


@pytest.fixture
def fake_chat(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None]]:
    calls: list[tuple[str, str | None]] = []

    def start_chat(message: str, session_id: str | None) -> Any:
        calls.append((message, session_id))
        if session_id == "missing":
            raise LookupError(session_id)
        if message == "boom":
            raise RuntimeError("queue down")
        return types.SimpleNamespace(task_id="t-1", session_id=session_id or "s-new")

    monkeypatch.setattr(machine_ws.handler, "start_chat", start_chat)
    return calls


def test_chat_action_starts_a_chat(mgmt: Management, fake_chat: list[tuple[str, str | None]]) -> None:
    connection_id = connected()
    send(connection_id, {"action": "chat", "message": "hi there", "id": "c1"})
    send(connection_id, {"action": "chat", "message": "again", "session_id": "s-9"})
    assert fake_chat == [("hi there", None), ("again", "s-9")]
    assert mgmt.frames(connection_id) == [
        {"type": "chat.accepted", "task_id": "t-1", "session_id": "s-new", "id": "c1"},
        {"type": "chat.accepted", "task_id": "t-1", "session_id": "s-9"},
    ]


def test_chat_failures_are_error_frames(mgmt: Management, fake_chat: list[tuple[str, str | None]]) -> None:
    connection_id = connected()
    send(connection_id, {"action": "chat", "message": "hi", "session_id": "missing"})
    send(connection_id, {"action": "chat", "message": "boom"})
    assert mgmt.frames(connection_id) == [
        {"type": "error", "message": "unknown session missing", "action": "chat"},
        {"type": "error", "message": "the chat could not be started; try again", "action": "chat"},
    ]


def test_chat_refuses_control_characters_before_any_task(stack: Provisioned, mgmt: Management) -> None:
    """The same rule as POST /api/chat (the real start_chat): a NUL could only fail at exec; nothing is queued."""
    connection_id = connected()
    send(connection_id, {"action": "chat", "message": "before\x00after"})
    assert mgmt.frames(connection_id) == [
        {"type": "error", "message": "message: control character U+0000 at position 6", "action": "chat"}
    ]
    assert tasks.list_tasks(limit=10).items == []
