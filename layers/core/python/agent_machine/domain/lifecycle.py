"""A task's start and end, each one DynamoDB transaction.

- claim: queued -> running (one runner only), holding the task's cap of today's budget (domain/budgets.py): a
  task whose cap does not fit what is left of the day is not started (`Refused`).
- finish: its status, result and cost booked with the session's and the day's totals, and its hold given back,
  so a cost is counted exactly once and a hold is given back exactly once, even if a runner retries.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from agent_machine.domain import budgets
from agent_machine.models import Task, TaskStatus, TokenUsage, utcnow
from agent_machine.observability import get_logger
from agent_machine.settings import get_settings
from agent_machine.store import costs, errors, sessions, tasks

FINISH_ATTEMPTS = 5
CLAIM_ATTEMPTS = 8  # tasks started together all add to one day's item: more conflicts than at the end
CONFLICT_BACKOFF_SECONDS = 0.05


@dataclass(frozen=True)
class Refused:
    """The task's cap does not fit in what is left of today's budget (booked + held by running tasks)."""

    reason: str


@dataclass(frozen=True)
class SessionBusy:
    """Another task of the session holds its lease (it is running): this one waits its turn."""

    holder: str | None = None


def held(task: Task) -> costs.Held | None:
    """What the task holds of a day's budget, as recorded by its claim."""
    if task.reserved_usd is None or task.reserved_day is None:
        return None
    return costs.Held(usd=task.reserved_usd, day=task.reserved_day)


def claim(
    task: Task,
    runner_id: str,
    run_mode: str,
    *,
    agent_cap_usd: float | None,
    lease_seconds: float = sessions.LEASE_SECONDS,
) -> Task | Refused | SessionBusy | None:
    """queued -> running, holding the task's cap of today's budget and its session's lease in the same
    transaction. None when the task is not queued any more (another runner claimed it, it was stopped);
    SessionBusy when another task of the session holds the lease; Refused when the cap does not fit."""
    since = time.monotonic()
    hold = budgets.hold_for(budgets.task_cap(task.max_budget_usd, agent_cap_usd))
    day = costs.today()
    for attempt in range(1, CLAIM_ATTEMPTS + 1):
        try:
            tasks.claim(
                task,
                runner_id,
                run_mode,
                hold=costs.Held(usd=hold, day=day),
                daily_cap_usd=get_settings().daily_budget_usd,
                lease_seconds=lease_seconds,
            )
        except errors.Refused as exc:
            if errors.Guard.TASK_MOVED in exc.failed:
                return None
            # The lease before the budget: once the session is free, the cap may fit.
            if errors.Guard.SESSION_LEASED in exc.failed:
                return SessionBusy()
            if errors.Guard.OVER_BUDGET in exc.failed:
                return Refused(budgets.refusal(day, hold))
            raise
        except errors.WriteConflict:
            if attempt == CLAIM_ATTEMPTS:
                raise
            backoff(attempt)
            continue
        budgets.note_held(day, hold, since=since)
        now = utcnow()
        return task.model_copy(
            update={
                "status": TaskStatus.RUNNING,
                "runner_id": runner_id,
                "run_mode": run_mode,
                "started_at": now,
                "heartbeat_at": now,
                "updated_at": now,
                "attempt": task.attempt + 1,
                "reserved_usd": hold,
                "reserved_day": day,
            }
        )
    return None  # (not reached: the last attempt returns or raises)


def backoff(attempt: int) -> None:
    """Wait before trying a transaction again that another one got in the way of (it did nothing)."""
    time.sleep(random.uniform(0.5, 1.5) * CONFLICT_BACKOFF_SECONDS * 2 ** (attempt - 1))


def finish(
    task: Task,
    status: TaskStatus,
    *,
    runner_id: str | None,
    result: str | None = None,
    error: str | None = None,
    error_kind: str | None = None,
    cost_usd: float = 0.0,
    usage: TokenUsage | None = None,
    extra: dict[str, Any] | None = None,
    cli_session_id: str | None = None,
    cli_total_cost_usd: float | None = None,
) -> bool:
    """running (or queued, when runner_id is None) -> terminal, giving back what `task` holds of the day's budget
    (read from this copy: the runner's claimed copy, or a fresh read). False if the task was not ours to finish."""
    assert status.terminal
    usage = usage or TokenUsage()
    fields: dict[str, Any] = {"cost_usd": cost_usd, "usage": usage.model_dump(), **(extra or {})}
    if result is not None:
        fields["result"] = result
    if error is not None:
        fields["error"] = error
        fields["error_kind"] = error_kind or status.value
    if cli_session_id:
        fields["cli_session_id"] = cli_session_id
    holding = held(task)
    day = costs.today()
    for attempt in range(1, FINISH_ATTEMPTS + 1):
        try:
            tasks.book_finish(
                task,
                status,
                fields,
                runner_id=runner_id,
                day=day,
                cost_usd=cost_usd,
                usage=usage,
                cli_session_id=cli_session_id,
                cli_total_cost_usd=cli_total_cost_usd,
                held=holding,
            )
        except errors.Refused:
            return False
        except errors.WriteConflict:
            if attempt == FINISH_ATTEMPTS:
                raise
            # Another booking touched the same counters (two tasks ending at once add to one day's cost): the
            # transaction did nothing, so it can simply run again, a little later.
            backoff(attempt)
            continue
        release_session_lease(task)
        return True
    return False  # (not reached: the last attempt returns or raises)


def release_session_lease(task: Task) -> None:
    """Let the session's next task run once this one is booked (or requeued). Not part of the booking: the lease
    may have passed to another task (it expired), whose lease must stay; a release lost here expires by itself."""
    try:
        sessions.release_lease(task.session_id, task.task_id)
    except ClientError:
        get_logger().exception("could not release the session's lease; it expires by itself")


def fail_unfinished(task_id: str, error: str, error_kind: str) -> bool:
    """Fail a task that is still queued or running, whoever holds it (dead-letter, lost runner)."""
    task = tasks.get(task_id)
    if task is None or task.status.terminal:
        return False
    return finish(task, TaskStatus.FAILED, runner_id=None, error=error, error_kind=error_kind)
