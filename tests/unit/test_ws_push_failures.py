"""The WebSocket Lambda when the management API refuses a push (e.g. PayloadTooLargeException): the Lambda still
succeeds, the subscription stays, the refused event arrives as a truncated stand-in, and the client is told."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest
from agent_machine.models import TaskStatus
from agent_machine.settings import get_settings
from agent_machine.store import connections
from local_runtime.provision import Provisioned

from tests.unit.test_ws_handler import connected, make_task, replayed, send, store_output

POISON = "POISON-TOO-BIG"


@pytest.fixture
def refusing_mgmt(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, bytes]]]:
    """A management API stand-in that answers 413 PayloadTooLargeException to any frame carrying POISON."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    posts: list[tuple[str, bytes]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if POISON.encode() in body:
                payload = b'{"message":"Message too long"}'
                self.send_response(413)
                self.send_header("x-amzn-ErrorType", "PayloadTooLargeException")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            with lock:
                posts.append((unquote(self.path.split("?")[0].rsplit("/", 1)[-1]), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("WEBSOCKET_MANAGEMENT_URL", f"http://127.0.0.1:{server.server_address[1]}")
    get_settings.cache_clear()
    yield posts
    server.shutdown()
    server.server_close()
    get_settings.cache_clear()


def test_a_refused_event_is_replaced_and_the_subscribe_completes(refusing_mgmt: list[tuple[str, bytes]]) -> None:
    connection_id = connected()
    task = make_task(TaskStatus.COMPLETED)
    store_output(task, range(1, 4))
    store_output(task, range(4, 5), text=POISON)
    store_output(task, range(5, 8))
    result = send(connection_id, {"action": "subscribe", "task_id": task.task_id, "id": "s1"})
    assert result == {"statusCode": 200}
    frames = [json.loads(body) for cid, body in refusing_mgmt if cid == connection_id]
    seqs = [seq for _, seq in replayed(frames)]
    assert sorted(set(seqs)) == list(range(1, 8))  # no hole: seq 4 came as a stand-in
    stand_in = next(e for f in frames if f["type"] == "events" for e in f["events"] if e["seq"] == 4)
    assert stand_in["payload"]["truncated"] is True
    assert POISON not in json.dumps(stand_in)
    errors = [f for f in frames if f["type"] == "error"]
    assert errors and errors[0]["seq"] == 4 and "PayloadTooLarge" in errors[0]["message"]
    assert frames[-1]["type"] == "subscribed" and frames[-1]["id"] == "s1"
    assert connections.subscribers([f"task#{task.task_id}"]) == {connection_id}


def test_a_refused_reply_does_not_fail_the_lambda(refusing_mgmt: list[tuple[str, bytes]]) -> None:
    connection_id = connected()
    # The pong carries the request id: a poisoned id makes the reply itself refused.
    assert send(connection_id, {"action": "ping", "id": POISON}) == {"statusCode": 200}


def test_a_45000_emoji_event_is_replayed_in_frames_under_128_kb(refusing_mgmt: list[tuple[str, bytes]]) -> None:
    connection_id = connected()
    task = make_task(TaskStatus.COMPLETED)
    text = "😀" * 45_000
    stored = store_output(task, range(1, 2), text=text) + store_output(task, range(2, 4), text="a" * 300_000, chunk=1)
    assert send(connection_id, {"action": "subscribe", "task_id": task.task_id, "id": "s1"}) == {"statusCode": 200}
    bodies = [body for cid, body in refusing_mgmt if cid == connection_id]
    assert max(len(b) for b in bodies) <= 128 * 1024
    frames = [json.loads(b.decode("utf-8")) for b in bodies]
    assert not [f for f in frames if f["type"] == "error"]
    rebuilt: dict[int, dict[str, Any]] = {}
    parts: dict[int, dict[int, str]] = {}
    for f in frames:
        if f["type"] == "event_part":
            parts.setdefault(f["seq"], {})[f["part"]] = f["data"]
            if len(parts[f["seq"]]) == f["parts"]:
                rebuilt[f["seq"]] = json.loads("".join(parts[f["seq"]][i] for i in range(f["parts"])))
    assert rebuilt == {e.seq: json.loads(e.model_dump_json()) for e in stored}
    # ASCII uses the frames fully: 300 KB in 3 frames, not 15 of 20 KB
    assert len([f for f in frames if f["type"] == "event_part" and f["seq"] == 2]) == 3
