"""Local data survives a restart: state saved from one emulator loads into a fresh one, and unfinished
tasks are handed back to the queue."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from agent_machine import aws
from agent_machine.domain import submission
from agent_machine.models import TaskStatus
from agent_machine.store import tasks
from local_runtime.emulator import start_moto
from local_runtime.persistence import STALE_HEARTBEAT, StateFile, requeue_unfinished
from local_runtime.provision import Provisioned, provision

from tests.conftest import reset_caches


def test_state_survives_a_fresh_emulator(stack: Provisioned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    done, session = submission.new_task("finished work")
    submission.submit(done, session)
    waiting = submission.submit(*submission.new_task("waiting", session_id=done.session_id)).task
    running = submission.submit(*submission.new_task("running", session_id=done.session_id)).task
    assert tasks.start(running.task_id, "old-runner", "lambda")
    aws.s3().put_object(Bucket=stack.buckets["ArtifactsBucket"], Key="sessions/s/t.jsonl", Body=b"{}\n")
    prefix = stack.tables["TasksTable"].rsplit("-", 1)[0]

    state = StateFile(tmp_path / "state.json.gz", stack, aws.s3().meta.endpoint_url, "us-east-1")
    state.save()

    fresh = start_moto()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", fresh.endpoint)
        reset_caches()
        again = provision(endpoint=fresh.endpoint, prefix=prefix)
        assert tasks.get(done.task_id) is None  # nothing there before the restore
        restored = StateFile(tmp_path / "state.json.gz", again, fresh.endpoint, "us-east-1").restore()
        assert restored >= 3
        assert {t.task_id for t in tasks.list_tasks(limit=10).items} == {done.task_id, waiting.task_id, running.task_id}
        body = aws.s3().get_object(Bucket=again.buckets["ArtifactsBucket"], Key="sessions/s/t.jsonl")["Body"]
        assert body.read() == b"{}\n"

        assert requeue_unfinished() == 3
        stale = tasks.get(running.task_id)
        assert stale is not None and stale.status is TaskStatus.RUNNING
        assert stale.heartbeat_at is not None and stale.heartbeat_at.year == int(STALE_HEARTBEAT[:4])
        sqs = boto3.client("sqs", endpoint_url=fresh.endpoint)
        bodies: list[str] = []
        while len(bodies) < 3:  # the queue long-polls: stop as soon as all three are in
            for msg in sqs.receive_message(
                QueueUrl=again.queues["TaskQueue"], MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", []):
                bodies.append(json.loads(msg["Body"])["task_id"])
        assert sorted(bodies) == sorted([done.task_id, waiting.task_id, running.task_id])
    finally:
        fresh.stop()
