"""The local runtime behaves like AWS where it used to differ: batchItemFailures naming no message of the batch
fail the whole batch, and the saved state (which holds webhook secrets) is readable by its owner only."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from agent_machine import aws
from local_runtime.persistence import StateFile
from local_runtime.provision import Provisioned
from local_runtime.sqs_source import SqsEventSource, SqsMapping

_lock = threading.Lock()
received: list[str] = []


def bogus_failures(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Reports a failure with an empty itemIdentifier (a handler bug): Lambda then retries the whole batch."""
    with _lock:
        received.extend(r["body"] for r in event["Records"])
    return {"batchItemFailures": [{"itemIdentifier": ""}]}


@pytest.fixture
def bogus_queue(stack: Provisioned) -> Iterator[tuple[str, str]]:
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
    received.clear()
    source = SqsEventSource(
        SqsMapping(
            "Bogus",
            f"{__name__}.bogus_failures",
            60,
            url,
            arn,
            batch_size=1,
            concurrency=1,
            report_batch_item_failures=True,
        ),
        os.environ["AWS_ENDPOINT_URL"],
        "us-east-1",
    )
    source.start()
    yield url, dlq
    source.stop()


def test_an_empty_item_identifier_fails_the_whole_batch(bogus_queue: tuple[str, str]) -> None:
    url, dlq = bogus_queue
    sqs = boto3.client("sqs")
    sqs.send_message(QueueUrl=url, MessageBody="m1")
    deadline = time.monotonic() + 20
    dead: list[str] = []
    while time.monotonic() < deadline and not dead:
        dead.extend(m["Body"] for m in sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1).get("Messages", []))
    assert received.count("m1") == 2  # received again after the visibility timeout, not deleted as a success
    assert dead == ["m1"]


def test_the_state_file_is_owner_only(stack: Provisioned, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    state = StateFile(folder / "state.json.gz", stack, aws.s3().meta.endpoint_url, "us-east-1")
    old = os.umask(0o022)
    try:
        state.save()
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE((folder / "state.json.gz").stat().st_mode) == 0o600
        # A state file left world-readable by an older version is narrowed at the next save.
        os.chmod(folder / "state.json.gz", 0o644)
        os.chmod(folder, 0o755)  # noqa: S103 (the old, too-wide mode being narrowed)
        state.save(force=True)  # (nothing was written since: an unforced save is skipped)
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE((folder / "state.json.gz").stat().st_mode) == 0o600
    finally:
        os.umask(old)
    assert state.restore() >= 0
