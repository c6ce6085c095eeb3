"""Putting work on the machine: record the task (and session, and the delivery that caused it) in one
transaction, then enqueue it. Used by chat, webhooks and agents' delegation alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from agent_machine import aws, queue
from agent_machine.models import Session, Task, TaskSource, TaskStatus
from agent_machine.settings import get_settings
from agent_machine.store import sessions, tasks
from agent_machine.store.tasks import is_condition_failure

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

TITLE_LENGTH = 80


class UnknownSession(LookupError):
    pass


class AlreadyRecorded(Exception):
    """The transaction's guard failed: the delivery (or task id) was recorded before."""


class EnqueueFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Submitted:
    task: Task
    session: Session | None  # set when a new session was created


def title_for(prompt: str) -> str:
    line = " ".join(prompt.split())
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1] + "…"


def new_task(
    prompt: str,
    *,
    session_id: str | None = None,
    agent: str = "brain",
    source: TaskSource = TaskSource.CHAT,
    source_name: str | None = None,
    title: str | None = None,
    parent: Task | None = None,
    max_budget_usd: float | None = None,
) -> tuple[Task, Session | None]:
    """A task ready to submit, and a new session when none was given."""
    session = None
    if session_id is None:
        session = Session(title=title or title_for(prompt), agent=agent, source=source)
        session_id = session.session_id
    task = Task(
        session_id=session_id,
        prompt=prompt,
        agent=agent,
        source=source,
        source_name=source_name,
        title=title or title_for(prompt),
        parent_task_id=parent.task_id if parent else None,
        depth=parent.depth + 1 if parent else 0,
        max_budget_usd=max_budget_usd or get_settings().task_budget_usd,
    )
    return task, session


def submit(task: Task, session: Session | None, extra: list[TransactWriteItemTypeDef] | None = None) -> Submitted:
    """Record and enqueue. Raises UnknownSession, AlreadyRecorded or EnqueueFailed (nothing half-done)."""
    parts: list[TransactWriteItemTypeDef] = [tasks.put_new_task_item(task)]
    if session is not None:
        parts.append(sessions.put_new_session_item(session.model_copy(update={"task_count": 1})))
    else:
        parts.append(sessions.touch_session_item(task.session_id))
    parts.extend(extra or [])
    try:
        aws.dynamodb().transact_write_items(TransactItems=parts)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "TransactionCanceledException":
            reasons = exc.response.get("CancellationReasons", [])
            if session is None and len(reasons) > 1 and reasons[1].get("Code") == "ConditionalCheckFailed":
                raise UnknownSession(task.session_id) from exc
            if is_condition_failure(exc):
                raise AlreadyRecorded(task.task_id) from exc
        raise
    try:
        queue.send(task.task_id)
    except ClientError as exc:
        # The task is recorded but nobody will run it: say so on the task, and let the caller answer 503.
        tasks.set_fields(
            task.task_id,
            status=TaskStatus.FAILED.value,
            error="could not enqueue the task",
            error_kind="enqueue_failed",
        )
        raise EnqueueFailed(str(exc)) from exc
    return Submitted(task=task, session=session)
