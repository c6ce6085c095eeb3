"""The sweeper against the moto server: a running task whose heartbeat went stale goes back to the queue with its
hold on the day's budget given back (and the runner then runs it again, numbering its output on); past
MAX_TASK_ATTEMPTS it fails `runner_lost`; a fresh heartbeat is left alone; two sweepers at once requeue it once."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from agent_machine import aws
from agent_machine.domain import lifecycle, sweeper
from agent_machine.models import EventType, Task, TaskEvent, TaskStatus, iso, utcnow
from agent_machine.settings import get_settings
from agent_machine.store import costs, output, tasks
from local_runtime.provision import Provisioned

from tests.integration.runner_support import invoke, receive, submit

pytestmark = pytest.mark.timeout(240)

DEAD_RUNNER = "lambda:dead-runner"


@pytest.fixture
def three_attempts(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MAX_TASK_ATTEMPTS", "3")
    monkeypatch.setenv("STALE_AFTER_SECONDS", "30")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def stored(task_id: str) -> Task:
    task = tasks.get(task_id)
    assert task is not None
    return task


def day_item() -> dict[str, Any]:
    """The day's TOTAL item as stored (day_figures clamps at zero: a hold given back twice would hide there)."""
    resp = aws.dynamodb().get_item(
        TableName=get_settings().costs_table,
        Key={"pk": {"S": f"DAY#{costs.today()}"}, "sk": {"S": "TOTAL"}},
        ConsistentRead=True,
    )
    return {k: float(v["N"]) for k, v in resp.get("Item", {}).items() if "N" in v}


def queued_messages() -> Counter[str]:
    """The queue's messages now, per task id (each is received and deleted)."""
    url = get_settings().task_queue_url
    counts: Counter[str] = Counter()
    while True:
        resp = aws.sqs().receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        messages = resp.get("Messages", [])
        if not messages:
            return counts
        for msg in messages:
            counts[json.loads(msg["Body"])["task_id"]] += 1
            aws.sqs().delete_message(QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"])


def lost_run(prompt: str, *, attempt: int = 1, heartbeat_age: float = 120.0, events: int = 3) -> Task:
    """A task claimed by a runner that then died: running, holding its cap, `events` output events stored after
    the submission's, its heartbeat `heartbeat_age` seconds old, its queue message consumed."""
    task = submit(prompt)
    url = get_settings().task_queue_url
    aws.sqs().delete_message(QueueUrl=url, ReceiptHandle=receive(task.task_id)["ReceiptHandle"])
    claimed = lifecycle.claim(task, DEAD_RUNNER, "lambda", agent_cap_usd=None)
    assert isinstance(claimed, Task)
    first = max([claimed.last_seq, *(e.seq for e in output.read_events(task.task_id))]) + 1
    output.put_chunk(
        task.task_id,
        [
            TaskEvent(type=EventType.OUTPUT, task_id=task.task_id, session_id=task.session_id, seq=seq, payload={})
            for seq in range(first, first + events)
        ],
    )
    beat = iso(utcnow() - timedelta(seconds=heartbeat_age))
    # (the dead runner's last heartbeat recorded only the first of its events: the rest were stored after it)
    assert tasks.set_fields(task.task_id, heartbeat_at=beat, attempt=attempt, last_seq=first)
    return stored(task.task_id)


def test_stale_run_is_requeued_then_run_again_with_one_sequence(stack: Provisioned, three_attempts: None) -> None:
    lost = lost_run("[[text:second time lucky]]")
    assert day_item()["reservations"] == 1
    before = [e.seq for e in output.read_events(lost.task_id)]

    report = sweeper.sweep()

    assert report.requeued == [lost.task_id]
    queued = stored(lost.task_id)
    assert queued.status == TaskStatus.QUEUED
    assert (queued.runner_id, queued.heartbeat_at, queued.reserved_usd, queued.reserved_day) == (None,) * 4
    assert queued.attempt == 1  # counted by the claim of the run that died; the next claim counts its own
    total = day_item()
    assert total["reservations"] == 0 and total["reserved_usd"] == 0 and total["committed_usd"] == 0
    # The runner takes the requeued task like any queued one: a second attempt, output numbered on.
    invoke(stack, receive(lost.task_id))
    done = stored(lost.task_id)
    assert done.status == TaskStatus.COMPLETED, done.error
    assert done.attempt == 2
    assert done.result == "second time lucky"
    seqs = [e.seq for e in output.read_events(lost.task_id)]
    assert seqs[: len(before)] == before
    assert seqs == sorted(set(seqs)) and len(seqs) > len(before)
    assert seqs[-1] == done.last_seq
    assert day_item()["reservations"] == 0


def test_past_max_attempts_the_task_fails_runner_lost(stack: Provisioned, three_attempts: None) -> None:
    lost = lost_run("[[text]]", attempt=3)
    stored_seq = max(e.seq for e in output.read_events(lost.task_id))

    report = sweeper.sweep()

    assert report.failed == [lost.task_id] and report.requeued == []
    failed = stored(lost.task_id)
    assert failed.status == TaskStatus.FAILED
    assert failed.error_kind == "runner_lost"
    assert failed.error and "lost 3 times" in failed.error
    events = output.read_events(lost.task_id)
    assert events[-1].type == EventType.FAILED and events[-1].seq == stored_seq + 1 == failed.last_seq
    assert events[-1].payload["error_kind"] == "runner_lost"
    assert day_item()["reservations"] == 0
    assert queued_messages()[lost.task_id] == 0


def test_a_stop_requested_before_the_runner_died_stops_the_task(stack: Provisioned, three_attempts: None) -> None:
    lost = lost_run("[[text]]")
    assert tasks.request_stop(lost.task_id)

    report = sweeper.sweep()

    assert report.stopped == [lost.task_id]
    assert stored(lost.task_id).status == TaskStatus.STOPPED
    assert day_item()["reservations"] == 0
    assert queued_messages()[lost.task_id] == 0


def test_a_fresh_heartbeat_is_left_alone(stack: Provisioned, three_attempts: None) -> None:
    alive = lost_run("[[text]]", heartbeat_age=5.0)  # within STALE_AFTER_SECONDS: its runner is alive
    lost = lost_run("[[text]]")

    report = sweeper.sweep()

    assert report.requeued == [lost.task_id]
    still = stored(alive.task_id)
    assert still.status == TaskStatus.RUNNING and still.runner_id == DEAD_RUNNER
    assert still.reserved_usd == alive.reserved_usd
    assert day_item()["reservations"] == 1  # the live run's hold only
    assert queued_messages()[alive.task_id] == 0


def test_a_runner_that_beats_again_keeps_its_task(stack: Provisioned, three_attempts: None) -> None:
    lost = lost_run("[[text]]")
    assert tasks.heartbeat(lost.task_id, DEAD_RUNNER, lost.last_seq)  # it was only slow

    assert not sweeper.requeue(lost, sweeper.stale_before())  # (a sweep that read the stale copy before the beat)
    assert stored(lost.task_id).status == TaskStatus.RUNNING
    assert day_item()["reservations"] == 1


def test_two_sweepers_racing_requeue_once(stack: Provisioned, three_attempts: None) -> None:
    lost = [lost_run("[[text]]") for _ in range(3)]
    start = threading.Barrier(4)

    def sweep() -> sweeper.SweepReport:
        start.wait()
        return sweeper.sweep()

    with ThreadPoolExecutor(4) as pool:
        reports = list(pool.map(lambda _: sweep(), range(4)))

    requeued = sorted(task_id for r in reports for task_id in r.requeued)
    assert requeued == sorted(t.task_id for t in lost)
    messages = queued_messages()
    for task in lost:
        assert stored(task.task_id).status == TaskStatus.QUEUED
        assert messages[task.task_id] == 1
    total = day_item()
    assert total["reservations"] == 0 and total["reserved_usd"] == 0  # each hold given back once, not four times
