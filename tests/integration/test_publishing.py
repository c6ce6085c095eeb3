"""agent_machine.domain.publishing, the one publish/fan-out of task events (runner, submission, WebSocket replay):
watchers of the session or the task get every event, dashboards watching `all` the lifecycle events only and
once; frames go to a real management-API stand-in over HTTP, subscribers are read from the moto server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import pytest
from agent_machine.domain import publishing, submission
from agent_machine.models import EventType, Subscription, Task, TaskEvent, TaskStatus
from agent_machine.push import Pusher
from agent_machine.settings import get_settings
from agent_machine.store import connections, output, tasks
from local_runtime.provision import Provisioned

from tests.integration.runner_support import Receiver

BROKEN = "conn-broken"  # the stand-in answers 500 to posts to this connection


@pytest.fixture
def receiver(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    management = Receiver().start()
    monkeypatch.setenv("WEBSOCKET_MANAGEMENT_URL", management.url)
    get_settings.cache_clear()
    yield management
    management.stop()
    get_settings.cache_clear()


@pytest.fixture
def failing_for_one(stack: Provisioned) -> Iterator[tuple[str, dict[str, list[bytes]]]]:
    """A management API stand-in that answers 500 for BROKEN and records the others' frames."""
    received: dict[str, list[bytes]] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            connection_id = unquote(self.path.split("?", 1)[0].rsplit("/", 1)[-1])
            status, reply = (500, b'{"message":"Internal"}') if connection_id == BROKEN else (200, b"")
            if status == 200:
                with lock:
                    received.setdefault(connection_id, []).append(body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def watch(connection_id: str, *subs: Subscription) -> None:
    connections.add(connection_id)
    for sub in subs:
        assert connections.subscribe(connection_id, sub)


def event(task: Task, seq: int, type_: EventType) -> TaskEvent:
    payload: dict[str, Any] = {"kind": "text", "text": f"line {seq}"} if type_ is EventType.OUTPUT else {}
    return TaskEvent(type=type_, task_id=task.task_id, session_id=task.session_id, seq=seq, payload=payload)


def batch(task: Task) -> list[TaskEvent]:
    return [
        event(task, 2, EventType.STARTED),
        event(task, 3, EventType.OUTPUT),
        event(task, 4, EventType.OUTPUT),
        event(task, 5, EventType.COMPLETED),
    ]


def seqs(receiver: Receiver, connection_id: str) -> list[tuple[str, int]]:
    return [(e["type"], e["seq"]) for e in receiver.events(connection_id)]


def test_watchers_get_every_event_and_dashboards_the_lifecycle_events_once(receiver: Receiver) -> None:
    task = tasks.create(Task(session_id="s-pub", prompt="hello", status=TaskStatus.RUNNING))
    other = tasks.create(Task(session_id="s-other", prompt="hello", status=TaskStatus.RUNNING))
    watch("conn-session", Subscription(kind="session", id=task.session_id))
    watch("conn-task", Subscription(kind="task", id=task.task_id))
    watch("conn-dashboard", Subscription(kind="all"))
    watch("conn-both", Subscription(kind="all"), Subscription(kind="task", id=task.task_id))
    watch("conn-other", Subscription(kind="session", id=other.session_id))

    sent = publishing.publish(task, batch(task))

    everything = [("task.started", 2), ("task.output", 3), ("task.output", 4), ("task.completed", 5)]
    for watcher in ("conn-session", "conn-task", "conn-both"):
        assert seqs(receiver, watcher) == everything, watcher
    assert seqs(receiver, "conn-dashboard") == [("task.started", 2), ("task.completed", 5)]
    assert seqs(receiver, "conn-other") == []
    # One frame per connection (frames built once per audience): a watcher that is also a dashboard gets one.
    assert {c: len(f) for c, f in receiver.frames.items()} == {
        "conn-session": 1,
        "conn-task": 1,
        "conn-both": 1,
        "conn-dashboard": 1,
    }
    assert (sent.posts, sent.failures) == (4, 0)


def test_the_given_json_texts_are_what_watchers_receive(receiver: Receiver) -> None:
    task = tasks.create(Task(session_id="s-texts", prompt="hello", status=TaskStatus.RUNNING))
    watch("conn-texts", Subscription(kind="task", id=task.task_id))
    events = [event(task, 2, EventType.OUTPUT)]
    # The runner hands over each event's JSON as it encoded it once: that text goes out, not a re-encoding.
    text = events[0].model_dump_json().replace('"line 2"', '"as encoded by the caller"')

    publishing.publish(task, events, texts=[text])

    [received] = receiver.events("conn-texts")
    assert received["payload"]["text"] == "as encoded by the caller"


def test_no_lookup_without_a_websocket_api_and_no_dashboard_lookup_for_output_only(receiver: Receiver) -> None:
    task = tasks.create(Task(session_id="s-lookups", prompt="hello", status=TaskStatus.RUNNING))
    watch("conn-lookups", Subscription(kind="session", id=task.session_id))
    looked_up: list[list[str]] = []

    def lookup(topics: list[str]) -> set[str]:
        looked_up.append(topics)
        return connections.subscribers(topics)

    off = publishing.publish(task, batch(task), pusher=Pusher(endpoint_url=""), lookup=lookup)
    assert (looked_up, off.posts, off.failures) == ([], 0, 0)

    publishing.publish(task, [event(task, 3, EventType.OUTPUT)], lookup=lookup)
    assert looked_up == [[f"session#{task.session_id}", f"task#{task.task_id}"]]
    assert seqs(receiver, "conn-lookups") == [("task.output", 3)]


def test_a_failed_lookup_is_counted_not_raised(receiver: Receiver) -> None:
    task = tasks.create(Task(session_id="s-fails", prompt="hello", status=TaskStatus.RUNNING))
    watch("conn-fails", Subscription(kind="task", id=task.task_id))

    def lookup(topics: list[str]) -> set[str]:
        raise ConnectionError("the table is unreachable")

    sent = publishing.publish(task, batch(task), lookup=lookup)

    assert (sent.lookup_failed, sent.failures, sent.posts) == (True, 1, 0)
    assert receiver.calls == 0


def test_a_broken_connection_does_not_stop_the_others(
    stack: Provisioned, failing_for_one: tuple[str, dict[str, list[bytes]]]
) -> None:
    url, received = failing_for_one
    task = tasks.create(Task(session_id="s-broken", prompt="hello", status=TaskStatus.RUNNING))
    # Sorted by id, the broken connection comes first: the others are still sent to.
    for connection_id in (BROKEN, "conn-ok-1", "conn-ok-2"):
        watch(connection_id, Subscription(kind="task", id=task.task_id))

    sent = publishing.publish(task, batch(task), pusher=Pusher(endpoint_url=url))

    assert set(sent.errors) == {BROKEN} and sent.failures == 1
    assert sorted(received) == ["conn-ok-1", "conn-ok-2"]
    for bodies in received.values():
        [frame] = [json.loads(body) for body in bodies]
        assert [e["seq"] for e in frame["events"]] == [2, 3, 4, 5]
    assert sent.posts == 3  # the failed post is a call too (what the benchmarks count)


def test_a_gone_connection_is_dropped_and_not_a_failure(receiver: Receiver) -> None:
    task = tasks.create(Task(session_id="s-gone", prompt="hello", status=TaskStatus.RUNNING))
    watch("conn-gone", Subscription(kind="task", id=task.task_id))
    watch("conn-here", Subscription(kind="task", id=task.task_id))
    receiver.gone.add("conn-gone")

    sent = publishing.publish(task, batch(task))

    assert sent.failures == 0
    assert connections.subscribers([f"task#{task.task_id}"]) == {"conn-here"}
    assert len(receiver.events("conn-here")) == 4


def test_a_task_stopped_while_queued_is_published_to_watchers_and_dashboards(receiver: Receiver) -> None:
    task, session = submission.new_task("hello")
    submission.submit(task, session)
    watch("conn-stop-watcher", Subscription(kind="session", id=task.session_id))
    watch("conn-stop-dashboard", Subscription(kind="all"))
    stopped = tasks.get(task.task_id)
    assert stopped is not None

    submission.publish_stopped(stopped)

    assert [(e.type.value, e.seq) for e in output.read_events(task.task_id)] == [
        ("task.created", 1),
        ("task.stopped", 2),
    ]
    for connection_id in ("conn-stop-watcher", "conn-stop-dashboard"):
        assert seqs(receiver, connection_id) == [("task.stopped", 2)], connection_id
