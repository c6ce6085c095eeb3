"""A task's end: its status, result and cost booked in one transaction with the session's and the day's
totals, so a cost is counted exactly once even if a runner retries."""

from __future__ import annotations

import random
import time
from typing import Any

from botocore.exceptions import ClientError

from agent_machine import aws
from agent_machine.models import Task, TaskStatus, TokenUsage
from agent_machine.store import costs, sessions, tasks
from agent_machine.store.tasks import is_condition_failure

FINISH_ATTEMPTS = 5
CONFLICT_BACKOFF_SECONDS = 0.05


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
    """running (or queued, when runner_id is None) -> terminal. False if the task was not ours to finish."""
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
    parts = [tasks.finish_transaction_item(task.task_id, status, fields, runner_id=runner_id)]
    parts.append(
        sessions.add_run_item(
            task.session_id,
            cost_usd=cost_usd,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cli_session_id=cli_session_id,
            cli_total_cost_usd=cli_total_cost_usd,
        )
    )
    parts.extend(
        costs.add_cost_items(
            day=costs.today(),
            agent=task.agent,
            source=task.source.value,
            session_id=task.session_id,
            cost_usd=cost_usd,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
        )
    )
    for attempt in range(1, FINISH_ATTEMPTS + 1):
        try:
            aws.dynamodb().transact_write_items(TransactItems=parts)
        except ClientError as exc:
            if is_condition_failure(exc):
                return False
            if not is_transaction_conflict(exc) or attempt == FINISH_ATTEMPTS:
                raise
            # Another booking touched the same counters (two tasks ending at once add to one day's cost): the
            # transaction did nothing, so it can simply run again, a little later.
            time.sleep(random.uniform(0.5, 1.5) * CONFLICT_BACKOFF_SECONDS * 2 ** (attempt - 1))
            continue
        return True
    return False  # (not reached: the last attempt returns or raises)


def is_transaction_conflict(exc: ClientError) -> bool:
    if exc.response.get("Error", {}).get("Code", "") != "TransactionCanceledException":
        return False
    return any(r.get("Code") == "TransactionConflict" for r in exc.response.get("CancellationReasons", []))


def fail_unfinished(task_id: str, error: str, error_kind: str) -> bool:
    """Fail a task that is still queued or running, whoever holds it (dead-letter, lost runner)."""
    task = tasks.get(task_id)
    if task is None or task.status.terminal:
        return False
    return finish(task, TaskStatus.FAILED, runner_id=None, error=error, error_kind=error_kind)
