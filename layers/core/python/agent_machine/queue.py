"""The task queue: a message carries only the task id; the task itself lives in DynamoDB."""

from __future__ import annotations

import json

from agent_machine import aws
from agent_machine.settings import get_settings


def send(task_id: str, *, delay_seconds: int = 0) -> str:
    resp = aws.sqs().send_message(
        QueueUrl=get_settings().task_queue_url,
        MessageBody=json.dumps({"task_id": task_id}),
        DelaySeconds=delay_seconds,
    )
    return resp["MessageId"]


def parse_body(body: str) -> str:
    """The task id from a queue message body; ValueError when the body is not ours."""
    data = json.loads(body)
    task_id = data.get("task_id") if isinstance(data, dict) else None
    if not isinstance(task_id, str) or not task_id:
        raise ValueError("queue message has no task_id")
    return task_id


def depth() -> dict[str, int]:
    attrs = aws.sqs().get_queue_attributes(
        QueueUrl=get_settings().task_queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return {
        "waiting": int(attrs.get("ApproximateNumberOfMessages", 0)),
        "in_flight": int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
    }
