"""The daily cap under concurrency, against the moto server: every task that starts holds its cap of the day's
budget in the transaction that claims it, so ten tasks handed to the runner's Lambda handler at the same moment,
on a day with room for three caps, run three and refuse seven; the holds are given back with the real cost when
the runs end (and when a dead runner's task is failed from the DLQ), and the next task runs."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any

import pytest
from agent_machine import aws
from agent_machine.domain import budgets, lifecycle
from agent_machine.models import Task, TaskStatus
from agent_machine.settings import get_settings
from agent_machine.store import costs, output, tasks
from local_runtime.events import LambdaContext, sqs_event
from local_runtime.provision import Provisioned
from runner import dlq_handler

from tests.integration.runner_support import invoke, receive, run_task, submit, wait_until

pytestmark = pytest.mark.timeout(240)

CAP = 0.5
ANSWER_COST = 0.01  # what each fake CLI run spends before it is stopped


@pytest.fixture
def three_caps_a_day(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DAILY_BUDGET_USD", str(3 * CAP))
    monkeypatch.setenv("MAX_CONCURRENT_TASKS", "10")  # the day's budget, not the run slots, is what limits here
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def stored(task_id: str) -> Task:
    task = tasks.get(task_id)
    assert task is not None
    return task


def receive_all(task_ids: list[str], *, timeout: float = 60.0) -> list[dict[str, Any]]:
    """The queue messages of these tasks, in their order, held in flight; other messages are made visible again."""
    url = get_settings().task_queue_url
    found: dict[str, dict[str, Any]] = {}
    end = time.monotonic() + timeout
    while len(found) < len(task_ids) and time.monotonic() < end:
        resp = aws.sqs().receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, AttributeNames=["All"], VisibilityTimeout=300
        )
        for msg in resp.get("Messages", []):
            task_id = json.loads(msg["Body"])["task_id"]
            if task_id in task_ids:
                found[task_id] = dict(msg)
            else:
                aws.sqs().change_message_visibility(
                    QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"], VisibilityTimeout=0
                )
    assert sorted(found) == sorted(task_ids)
    return [found[task_id] for task_id in task_ids]


def test_ten_tasks_started_at_once_run_only_as_many_as_the_day_can_hold(
    stack: Provisioned, three_caps_a_day: None
) -> None:
    day = costs.today()
    submitted = [submit(f"[[hang]] [[cost:{ANSWER_COST}]] task {i}", max_budget_usd=CAP) for i in range(10)]
    messages = receive_all([t.task_id for t in submitted])
    barrier = threading.Barrier(len(messages))

    def deliver(message: dict[str, Any]) -> dict[str, Any]:
        barrier.wait()  # all ten handlers check the day and claim at the same moment
        return invoke(stack, message, timeout_seconds=200)

    with ThreadPoolExecutor(max_workers=len(messages)) as pool:
        runs = [pool.submit(deliver, m) for m in messages]

        def decided() -> list[Task] | None:
            current = [stored(t.task_id) for t in submitted]
            return current if all(t.status != TaskStatus.QUEUED for t in current) else None

        decisions = wait_until(decided, timeout=120)
        running = [t for t in decisions if t.status == TaskStatus.RUNNING]
        refused = [t for t in decisions if t.status == TaskStatus.FAILED]
        assert len(running) == 3 and len(refused) == 7, [(t.status, t.error) for t in decisions]
        for task in refused:
            assert task.error_kind == "budget" and task.attempt == 0 and task.cost_usd == 0
            assert task.reserved_usd is None  # it never held anything
            assert "daily budget reached" in (task.error or "") and "does not fit" in (task.error or ""), task.error
            assert [e.type.value for e in output.read_events(task.task_id)] == ["task.created", "task.failed"]
        assert any("held by 3 running tasks" in (t.error or "") for t in refused)
        for task in running:
            assert task.reserved_usd == pytest.approx(CAP) and task.reserved_day == day
        held = costs.day_figures(day)
        assert held.spent_usd == 0 and held.reserved_usd == pytest.approx(3 * CAP) and held.reservations == 3
        # What each run's model proxy counts against the day besides its own spend: the other two runs' caps.
        assert budgets.committed_by_others(CAP, max_age_seconds=0) == pytest.approx(2 * CAP)

        for task in running:
            assert tasks.request_stop(task.task_id) is not None
        for run in runs:
            run.result(timeout=180)

    ended = [stored(t.task_id) for t in running]
    assert all(t.status == TaskStatus.STOPPED and t.cost_usd == pytest.approx(ANSWER_COST) for t in ended), ended
    after = costs.day_figures(day)
    assert after.spent_usd == pytest.approx(3 * ANSWER_COST)
    assert after.reserved_usd == pytest.approx(0) and after.reservations == 0

    # The caps are free again: the next task holds one and runs.
    nxt = run_task(stack, "[[text]] one more", max_budget_usd=CAP)
    assert nxt.status == TaskStatus.COMPLETED and nxt.reserved_usd == pytest.approx(CAP), nxt.error
    final = costs.day_figures(day)
    assert final.reservations == 0 and final.reserved_usd == pytest.approx(0)
    assert final.spent_usd == pytest.approx(3 * ANSWER_COST + nxt.cost_usd)


def test_a_claim_that_does_not_fit_holds_nothing_and_one_that_fits_holds_its_cap(
    stack: Provisioned, three_caps_a_day: None
) -> None:
    day = costs.today()
    # A cap above the whole day holds the whole day (the proxy stops that run at the day's cap): it runs alone.
    big = lifecycle.claim(submit("big", max_budget_usd=10.0), "lambda:big", "lambda", agent_cap_usd=None)
    assert isinstance(big, Task) and big.reserved_usd == pytest.approx(3 * CAP)
    assert isinstance(lifecycle.claim(submit("x"), "lambda:x", "lambda", agent_cap_usd=0.01), lifecycle.Refused)
    assert lifecycle.finish(big, TaskStatus.COMPLETED, runner_id="lambda:big", cost_usd=0.0)

    first = submit("a", max_budget_usd=2 * CAP)
    second = submit("b")
    claimed = lifecycle.claim(first, "lambda:a", "lambda", agent_cap_usd=None)
    assert isinstance(claimed, Task) and claimed.status == TaskStatus.RUNNING and claimed.attempt == 1
    assert claimed.reserved_usd == pytest.approx(2 * CAP) and claimed.reserved_day == day
    assert lifecycle.claim(first, "lambda:b", "lambda", agent_cap_usd=None) is None  # one runner only
    # No cap on the task: its agent's applies (then TASK_BUDGET_USD).
    refused = lifecycle.claim(second, "lambda:c", "lambda", agent_cap_usd=2 * CAP)
    assert isinstance(refused, lifecycle.Refused), refused
    assert "$1.00 held by 1 running task of $1.50" in refused.reason, refused.reason
    assert stored(second.task_id).status == TaskStatus.QUEUED  # nothing written: the transaction was cancelled

    assert lifecycle.finish(claimed, TaskStatus.COMPLETED, runner_id="lambda:a", cost_usd=0.25)
    again = lifecycle.claim(second, "lambda:c", "lambda", agent_cap_usd=2 * CAP)  # $0.25 spent: $1 fits now
    assert isinstance(again, Task) and again.reserved_usd == pytest.approx(2 * CAP)
    figures = costs.day_figures(day)
    assert figures.spent_usd == pytest.approx(0.25)
    assert figures.reserved_usd == pytest.approx(2 * CAP) and figures.reservations == 1
    assert figures.committed_usd == pytest.approx(0.25 + 2 * CAP)


def test_a_dead_runners_task_failed_from_the_dlq_gives_its_hold_back(
    stack: Provisioned, three_caps_a_day: None
) -> None:
    day = costs.today()
    task = submit("the runner of this one dies", max_budget_usd=CAP)
    claimed = lifecycle.claim(task, "lambda:dead", "lambda", agent_cap_usd=None)
    assert isinstance(claimed, Task)
    assert costs.day_figures(day).reserved_usd == pytest.approx(CAP)
    # A copy read before the claim may not fail it behind the runner's back (nor leave its hold behind).
    assert not lifecycle.finish(task, TaskStatus.FAILED, runner_id=None, error="stale copy", error_kind="x")
    assert stored(task.task_id).status == TaskStatus.RUNNING

    message = receive(task.task_id)
    event = sqs_event([message], stack.resolver.attrs["TaskDeadLetterQueue.Arn"])
    result = dlq_handler.handler(event, LambdaContext("DlqFunction"))
    assert result == {"batchItemFailures": []}
    failed = stored(task.task_id)
    assert failed.status == TaskStatus.FAILED and failed.error_kind == "dead_letter"
    figures = costs.day_figures(day)
    assert figures.reserved_usd == pytest.approx(0) and figures.reservations == 0


def test_a_run_across_midnight_gives_back_yesterdays_hold_and_books_today(
    stack: Provisioned, three_caps_a_day: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    started_on = costs.today()
    task = submit("a long one", max_budget_usd=CAP)
    claimed = lifecycle.claim(task, "lambda:r", "lambda", agent_cap_usd=None)
    assert isinstance(claimed, Task) and claimed.reserved_day == started_on
    next_day = (date.fromisoformat(started_on) + timedelta(days=1)).isoformat()
    monkeypatch.setattr(costs, "today", lambda: next_day)
    assert lifecycle.finish(claimed, TaskStatus.COMPLETED, runner_id="lambda:r", cost_usd=0.2)
    before, after = costs.day_figures(started_on), costs.day_figures(next_day)
    assert before.spent_usd == 0 and before.reserved_usd == pytest.approx(0) and before.reservations == 0
    assert after.spent_usd == pytest.approx(0.2) and after.reserved_usd == 0 and after.reservations == 0
    # Each day's committed figure is what its next claim is checked against: booked + held.
    assert costs.day_figures(next_day).committed_usd == pytest.approx(0.2)
