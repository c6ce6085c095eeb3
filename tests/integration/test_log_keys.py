"""Log keys belong to one invocation: a WebSocket invocation's `connection_id` is on none of the lines of the next
invocation the same warm thread runs (the local runtime runs every function in one process, in reused threads),
nor on the lines of another thread at the same time."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from agent_machine.observability import get_logger
from local_runtime.events import LambdaContext, http_event, sqs_event, websocket_event
from local_runtime.invoker import Invoker
from local_runtime.provision import Provisioned

CONNECTION = "conn-keys-test"


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))

    def since(self, mark: int) -> list[dict[str, Any]]:
        return self.lines[mark:]


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    handler.setFormatter(get_logger().registered_formatter)
    logging.getLogger(get_logger().name).addHandler(handler)
    yield handler
    logging.getLogger(get_logger().name).removeHandler(handler)


@pytest.fixture
def warm() -> Iterator[Invoker]:
    """One warm 'container' thread: every invocation below runs on the same thread, one after the other."""
    invoker = Invoker(1, "keys")
    yield invoker
    invoker.shutdown()


def invoke(invoker: Invoker, handler: str, event: dict[str, Any], name: str) -> Any:
    return asyncio.run(invoker.invoke(handler, event, LambdaContext(name)))


def on_thread(invoker: Invoker, fn: Callable[[], None]) -> None:
    invoker.pool.submit(fn).result()


def probe() -> None:
    get_logger().info("probe")


def websocket_connect(invoker: Invoker) -> None:
    event = websocket_event("$connect", CONNECTION, query="token=not-the-token")
    assert invoke(invoker, "machine_ws.handler.handler", event, "WebSocketFunction")["statusCode"] == 403


def queue_event(stack: Provisioned, body: str) -> dict[str, Any]:
    message = {"MessageId": str(uuid.uuid4()), "ReceiptHandle": "r", "Body": body, "Attributes": {}}
    return sqs_event([message], stack.resolver.attrs["TaskQueue.Arn"])


def test_the_next_invocation_on_the_thread_has_no_connection_id(
    stack: Provisioned, lines: Lines, warm: Invoker
) -> None:
    mark = len(lines.lines)
    websocket_connect(warm)
    ws_lines = lines.since(mark)
    assert ws_lines and all(line.get("connection_id") == CONNECTION for line in ws_lines)
    # Left as it is, the thread still carries the WebSocket invocation's keys: what must not reach the next one.
    mark = len(lines.lines)
    on_thread(warm, probe)
    assert lines.since(mark)[0].get("connection_id") == CONNECTION

    mark = len(lines.lines)
    body = json.dumps({"task_id": str(uuid.uuid4())})
    invoke(warm, "runner.dlq_handler.handler", queue_event(stack, body), "DlqFunction")
    dlq_lines = lines.since(mark)
    assert [line["message"] for line in dlq_lines] == ["dead-lettered task had already finished"]
    assert "connection_id" not in dlq_lines[0] and dlq_lines[0]["function_name"] == "DlqFunction"

    websocket_connect(warm)
    mark = len(lines.lines)
    invoke(warm, "runner.lambda_handler.handler", queue_event(stack, "not json"), "RunnerFunction")
    runner_lines = lines.since(mark)
    assert [line["message"] for line in runner_lines] == ["not a task message: dropping it"]
    assert "connection_id" not in runner_lines[0] and runner_lines[0]["function_name"] == "RunnerFunction"

    websocket_connect(warm)
    event = http_event("GET", "/api/health")
    assert invoke(warm, "machine_api.handler.handler", event, "ApiFunction")["statusCode"] == 200
    mark = len(lines.lines)
    on_thread(warm, probe)  # what a line of the API invocation would have carried
    assert "connection_id" not in lines.since(mark)[0]


def test_another_thread_never_sees_the_connection_id(stack: Provisioned, lines: Lines, warm: Invoker) -> None:
    websocket_connect(warm)
    mark = len(lines.lines)
    probe()  # this thread, while the WebSocket invocation's thread still holds its keys
    assert "connection_id" not in lines.since(mark)[0]
