"""task.created: stored with the task in submit's transaction (seq 1, so every replay starts with it), pushed to
a chat's watchers, and taken back with the task when the enqueue fails."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from agent_machine.models import Subscription
from agent_machine.settings import get_settings
from local_runtime.provision import Provisioned

from tests.integration.runner_support import Receiver
from tests.integration.test_ingress_github import TOKEN, all_tasks, call

JSON = {**TOKEN, "content-type": "application/json"}


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    management = Receiver().start()
    monkeypatch.setenv("WEBSOCKET_MANAGEMENT_URL", management.url)
    get_settings.cache_clear()
    yield management
    management.stop()
    get_settings.cache_clear()


def test_a_chat_task_starts_with_its_created_event_and_its_watchers_get_it(
    stack: Provisioned, receiver: Receiver
) -> None:
    from agent_machine.store import connections, output, tasks

    status, first = call("POST", "/api/chat", json.dumps({"message": "hello"}).encode(), JSON)
    assert status == 202 and isinstance(first, dict)
    connections.add("watcher")
    connections.subscribe("watcher", Subscription(kind="session", id=first["session_id"]))
    connections.add("dashboard")
    connections.subscribe("dashboard", Subscription(kind="all"))

    status, second = call(
        "POST", "/api/chat", json.dumps({"message": "more", "session_id": first["session_id"]}).encode(), JSON
    )
    assert status == 202 and isinstance(second, dict)
    for answer in (first, second):
        [created] = output.read_events(answer["task_id"])
        assert (created.type.value, created.seq) == ("task.created", 1)
        assert created.payload["agent"] == "brain" and created.payload["source"] == "chat"
        stored = tasks.get(answer["task_id"])
        assert stored is not None and stored.last_seq == 1  # the runner numbers on from 2
    for connection in ("watcher", "dashboard"):
        [frame] = [json.loads(body) for body in receiver.frames[connection]]
        [event] = frame["events"]
        assert (event["type"], event["task_id"], event["seq"]) == ("task.created", second["task_id"], 1)


def test_a_failed_enqueue_takes_the_created_event_back_too(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_machine import aws
    from agent_machine.store import output

    good = stack.queues["TaskQueue"]
    monkeypatch.setenv("TASK_QUEUE_URL", good.rsplit("/", 1)[0] + "/no-such-queue")
    get_settings.cache_clear()
    aws.reset_clients()
    status, answer = call("POST", "/api/chat", json.dumps({"message": "hello"}).encode(), JSON)
    assert status == 503, answer
    assert all_tasks(stack) == []
    items = aws.dynamodb().scan(TableName=output.table())["Items"]
    assert items == []
