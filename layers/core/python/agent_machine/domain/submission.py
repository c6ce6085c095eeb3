"""Putting work on the machine: record the task (and session, and the delivery that caused it) in one
transaction, then enqueue it. Used by chat, webhooks and agents' delegation alike."""

from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from agent_machine import queue
from agent_machine.domain import publishing
from agent_machine.models import (
    EventType,
    Session,
    Task,
    TaskEvent,
    TaskSource,
    TaskStatus,
    WebhookDelivery,
)
from agent_machine.observability import get_logger
from agent_machine.store import output, tasks
from agent_machine.store.errors import Guard, Refused
from agent_machine.store.events import SourceClaim

TITLE_LENGTH = 80
CREATED_SEQ = 1  # task.created is always a task's first event


class NotSubmitted(Exception):
    """Nothing was recorded: `failed` names every guard of the transaction that failed (empty: DynamoDB did not
    say which)."""

    def __init__(self, message: str, failed: frozenset[Guard] = frozenset()) -> None:
        super().__init__(message)
        self.failed = failed


class UnknownSession(NotSubmitted, LookupError):
    """The session to add the task to does not exist."""


class AlreadyRecorded(NotSubmitted):
    """A guard of the transaction failed: the task id, the session to create, the delivery or its source event was
    recorded before (or a delegated child's slot on its parent was taken)."""


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
        # None unless the caller caps it: the runner then applies the agent's cap, then TASK_BUDGET_USD.
        max_budget_usd=max_budget_usd,
    )
    return task, session


def created_event(task: Task) -> TaskEvent:
    """The task's first event (seq 1), stored with the task itself so a replay always starts with it."""
    return TaskEvent(
        type=EventType.CREATED,
        task_id=task.task_id,
        session_id=task.session_id,
        seq=CREATED_SEQ,
        payload={
            "status": task.status.value,
            "agent": task.agent,
            "source": task.source.value,
            "source_name": task.source_name,
            "title": task.title,
            "parent_task_id": task.parent_task_id,
        },
    )


def submit(
    task: Task,
    session: Session | None,
    *,
    delivery: WebhookDelivery | None = None,
    source_claim: SourceClaim | None = None,
    child_slot: tasks.ChildSlot | None = None,
) -> Submitted:
    """Record and enqueue. Raises UnknownSession, AlreadyRecorded, store.errors.WriteConflict (another transaction
    got in the way: trying again may work) or EnqueueFailed (nothing half-done).

    One transaction records the task, its session (`session`: a new one; None: the task's existing one), the
    task.created event (no extra round trip on a webhook's ack path; pushed only by callers someone is watching,
    `announce_created`), and a webhook's `delivery` record and `source_claim` and a delegated child's `child_slot`
    on its parent, when given."""
    task.last_seq = CREATED_SEQ
    try:
        tasks.record_submission(
            task,
            [created_event(task)],
            new_session=session.model_copy(update={"task_count": 1}) if session is not None else None,
            delivery=delivery,
            source_claim=source_claim,
            child_slot=child_slot,
        )
    except Refused as exc:
        if Guard.SESSION_MISSING in exc.failed:
            raise UnknownSession(task.session_id, exc.failed) from exc
        raise AlreadyRecorded(task.task_id, exc.failed) from exc
    return enqueue(task, session)


def enqueue(task: Task, session: Session | None) -> Submitted:
    """Send a recorded task's message; on failure take the records back and raise EnqueueFailed. Also for a
    caller that finds its own transaction committed although the call failed (a retried write whose first
    attempt went through but whose answer was lost)."""
    try:
        queue.send(task.task_id)
    except (ClientError, BotoCoreError) as exc:  # BotoCoreError: EndpointConnectionError, timeouts...
        # Nobody will run the task: take back what the transaction wrote, so the sender's retry (same derived task
        # id, same delivery) starts over instead of meeting "already exists". Failing that, mark it failed.
        _unsubmit(task, session)
        raise EnqueueFailed(str(exc)) from exc
    return Submitted(task=task, session=session)


def _unsubmit(task: Task, session: Session | None) -> None:
    """Undo a submit whose enqueue failed: delete the task while it is still queued (a runner may have got the
    message after all, when only the response was lost), and the session it created or the count it added."""
    try:
        tasks.take_back_submission(task, CREATED_SEQ, new_session=session)
        return
    except (Refused, ClientError, BotoCoreError) as exc:
        get_logger().warning(
            "could not delete a task that was not enqueued", extra={"task_id": task.task_id, "error": str(exc)}
        )
    try:  # only while still queued: never overwrite a task a runner has started
        _mark_failed(task.task_id)
    except (ClientError, BotoCoreError) as exc:
        get_logger().warning("could not mark a task not enqueued", extra={"task_id": task.task_id, "error": str(exc)})


def _mark_failed(task_id: str) -> None:
    tasks.fail_unenqueued(task_id)


def announce_created(task: Task) -> None:
    """Push a submitted task's task.created event to its watchers and to dashboards watching all tasks (chat:
    someone is watching; webhooks skip it to keep their ack path short). Best effort."""
    publishing.publish(task, [created_event(task)])


def publish_stopped(task: Task) -> None:
    """The task.stopped event of a task stopped while still queued (no runner will ever emit it): stored after
    whatever is stored, booked as the task's last_seq, and pushed to its watchers and to dashboards watching all
    tasks. Best effort: a stop never fails on it."""
    try:
        stored = output.read_events(task.task_id, after_seq=task.last_seq)
        seq = max([task.last_seq, *(e.seq for e in stored)]) + 1
        event = TaskEvent(
            type=EventType.STOPPED,
            task_id=task.task_id,
            session_id=task.session_id,
            seq=seq,
            payload={
                "status": TaskStatus.STOPPED.value,
                "error": task.error,
                "error_kind": task.error_kind,
                "cost_usd": task.cost_usd,
            },
        )
        output.put_chunk(task.task_id, [event])
        tasks.set_fields(task.task_id, last_seq=seq)
    except Exception:
        get_logger().exception("could not publish task.stopped", extra={"task_id": task.task_id})
        return
    publishing.publish(task, [event])
