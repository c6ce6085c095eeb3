"""The DLQ consumer's partial-batch answers: a booking that breaks names its message (it comes back), the others
are booked and deleted, a body that is no task message is dropped; a batch that fails whole is still an answer."""

from __future__ import annotations

import json
from typing import Any

import pytest
from agent_machine.domain import lifecycle
from agent_machine.models import Task, TaskStatus
from agent_machine.store import tasks
from local_runtime.events import LambdaContext, sqs_event
from local_runtime.provision import Provisioned
from runner import dlq_handler

from tests.integration.runner_support import submit

pytestmark = pytest.mark.timeout(90)


def dead_letters(stack: Provisioned, bodies: dict[str, str]) -> dict[str, Any]:
    """An event of the DLQ's mapping: message id -> body."""
    messages = [
        {"MessageId": mid, "ReceiptHandle": f"r-{mid}", "Body": body, "Attributes": {"ApproximateReceiveCount": "3"}}
        for mid, body in bodies.items()
    ]
    return sqs_event(messages, stack.resolver.attrs["TaskDeadLetterQueue.Arn"])


def body(task: Task) -> str:
    return json.dumps({"task_id": task.task_id})


def break_booking_of(monkeypatch: pytest.MonkeyPatch, *broken: Task) -> None:
    """DynamoDB fails the booking of these tasks only."""
    real = lifecycle.finish
    ids = {t.task_id for t in broken}

    def finish(task: Task, *args: Any, **kwargs: Any) -> bool:
        if task.task_id in ids:
            raise RuntimeError("DynamoDB is down")
        return real(task, *args, **kwargs)

    monkeypatch.setattr(lifecycle, "finish", finish)


def test_only_the_message_whose_booking_broke_comes_back(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> None:
    booked, broken = submit("[[text]] dead one"), submit("[[text]] dead two")
    break_booking_of(monkeypatch, broken)
    event = dead_letters(stack, {"m-booked": body(booked), "m-junk": "not json", "m-broken": body(broken)})

    answer = dlq_handler.handler(event, LambdaContext("DlqFunction", 60))

    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-broken"}]}
    done = tasks.get(booked.task_id)
    assert done is not None and done.status == TaskStatus.FAILED and done.error_kind == "dead_letter"
    left = tasks.get(broken.task_id)
    assert left is not None and left.status == TaskStatus.QUEUED


def test_a_batch_whose_every_booking_broke_names_every_message(
    stack: Provisioned, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = submit("[[text]] dead three"), submit("[[text]] dead four")
    break_booking_of(monkeypatch, first, second)
    event = dead_letters(stack, {"m-first": body(first), "m-second": body(second)})

    answer = dlq_handler.handler(event, LambdaContext("DlqFunction", 60))

    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-first"}, {"itemIdentifier": "m-second"}]}
    for task in (first, second):
        assert (left := tasks.get(task.task_id)) is not None and left.status == TaskStatus.QUEUED
