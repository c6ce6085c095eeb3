"""The local runtime's emulation of API Gateway routing, the SQS event source and persistence."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from local_runtime.gateway import Gateway, RouteTarget
from local_runtime.invoker import Invoker
from local_runtime.provision import Provisioned
from local_runtime.sqs_source import SqsEventSource, SqsMapping
from local_runtime.template import functions, load

from tests.integration import probe_handlers


def wait_for(predicate: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def template_gateway() -> Gateway:
    routes = [RouteTarget(r, s.logical_id, s.handler, s.timeout) for s in functions(load()) for r in s.http_routes]
    return Gateway(
        routes=routes, authorizer=None, websocket_handler=None, static_dir=Path("."), invoker=Invoker(1, "t")
    )


@pytest.mark.parametrize(
    ("method", "path", "function", "authorized"),
    [
        ("GET", "/api/health", "ApiFunction", False),
        ("GET", "/api/config", "ApiFunction", False),
        ("POST", "/api/health", "ApiFunction", True),  # only GET is open
        ("GET", "/api/tasks", "ApiFunction", True),
        ("POST", "/api/tasks/abc/stop", "ApiFunction", True),
        ("POST", "/webhooks/github", "ApiFunction", False),
    ],
)
def test_routes_come_from_the_template(method: str, path: str, function: str, authorized: bool) -> None:
    matched = template_gateway().match(method, path)
    assert matched is not None
    target, _ = matched
    assert target.function_name == function
    assert target.route.authorized is authorized


def test_unknown_paths_do_not_reach_a_function() -> None:
    assert template_gateway().match("GET", "/index.html") is None


@pytest.fixture
def probe_queue(stack: Provisioned) -> Iterator[tuple[SqsEventSource, str, str]]:
    sqs = boto3.client("sqs")
    dlq = sqs.create_queue(QueueName=f"{os.urandom(4).hex()}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(
        QueueName=f"{os.urandom(4).hex()}-q",
        Attributes={
            "VisibilityTimeout": "1",
            "RedrivePolicy": f'{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"2"}}',
        },
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    probe_handlers.reset()
    source = SqsEventSource(
        SqsMapping(
            "Probe",
            "tests.integration.probe_handlers.handler",
            60,
            url,
            arn,
            batch_size=1,
            concurrency=2,
            report_batch_item_failures=True,
        ),
        os.environ["AWS_ENDPOINT_URL"],
        "us-east-1",
    )
    source.start()
    yield source, url, dlq
    source.stop()


def test_sqs_events_have_the_aws_shape_and_successes_are_deleted(probe_queue: tuple[SqsEventSource, str, str]) -> None:
    source, url, _ = probe_queue
    boto3.client("sqs").send_message(QueueUrl=url, MessageBody="hello")
    wait_for(lambda: len(probe_handlers.seen) == 1)
    record = probe_handlers.seen[0]
    assert record["eventSource"] == "aws:sqs" and record["body"] == "hello"
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert record["eventSourceARN"] == source.mapping.queue_arn
    assert 0 < record["remaining_ms"] <= 60_000
    time.sleep(1.5)  # past the visibility timeout: a deleted message does not come back
    assert len(probe_handlers.seen) == 1


def test_reported_failures_retry_then_go_to_the_dead_letter_queue(probe_queue: tuple[SqsEventSource, str, str]) -> None:
    _, url, dlq = probe_queue
    sqs = boto3.client("sqs")
    sqs.send_message(QueueUrl=url, MessageBody="fail")
    wait_for(lambda: len(probe_handlers.seen) >= 2)
    counts = [r["attributes"]["ApproximateReceiveCount"] for r in probe_handlers.seen]
    assert counts[:2] == ["1", "2"]
    dead: list[str] = []

    def dead_lettered() -> bool:
        dead.extend(m["Body"] for m in sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1).get("Messages", []))
        return bool(dead)

    wait_for(dead_lettered)
    assert dead[0] == "fail"


def test_maximum_concurrency_bounds_parallel_invocations(probe_queue: tuple[SqsEventSource, str, str]) -> None:
    _, url, _ = probe_queue
    sqs = boto3.client("sqs")
    for _ in range(6):
        sqs.send_message(QueueUrl=url, MessageBody="sleep")
    wait_for(lambda: len(probe_handlers.seen) == 6)
    assert probe_handlers.max_running == 2
