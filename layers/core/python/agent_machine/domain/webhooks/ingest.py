"""Carrying out a decision, and answering redeliveries with the first answer.

AWS calls per delivery (the ack path):
- task created: ONE TransactWriteItems (task + new-or-touched session + delivery record, the record conditional on
  its delivery_key not existing, + the event's source claim when the sender names the event, see `dedupe`) then
  ONE SendMessage. Rare retries: a thread's session guessed wrong (new vs existing) costs one more transaction.
- ignored / answered: ONE conditional PutItem of the delivery record.
- redelivery: the write's condition fails, then ONE GetItem of the stored record, whose `response` is answered
  again; nothing else is created.
- duplicate (the same event under another delivery id: a repository's and its organisation's webhooks): the
  claim's condition fails, then ONE GetItem of the claim and ONE conditional PutItem of this delivery's record;
  answered with the first delivery's status code and task, status "duplicate". Two deliveries racing cannot both
  create a task: only one transaction can put the claim.
- "@claude stop": Query of the thread's queued and running tasks, an UpdateItem per task, then the record.
Plan lookups (an approval comment) add one Query of the thread's session. A thread's planning task that exists
already (a second label, a new alert about the same issue) costs one Query of the thread's planning tasks: when
every earlier attempt ended without completing, the next attempt is created (one more transaction).
A failed SendMessage takes the task (and its session writes) back in one transaction, forgets the delivery and
gives its claim back, then answers 503 (the sender's retry, or the other webhook's delivery, starts over).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from agent_machine.domain import submission
from agent_machine.domain.agents import PLANNING
from agent_machine.domain.webhooks import context
from agent_machine.domain.webhooks.decisions import (
    Answer,
    CreateTask,
    Decision,
    Delivery,
    Ignore,
    StopThread,
    planning_task_id,
    thread_session_id,
)
from agent_machine.models import DeliveryDecision, Session, Task, TaskStatus, WebhookDelivery
from agent_machine.store import events, tasks
from agent_machine.store.errors import DuplicateDelivery, Guard

DUPLICATE = "duplicate"


class IngestUnavailable(RuntimeError):
    """The task was recorded but could not be enqueued (it is marked failed; the delivery is forgotten so the
    sender's retry starts over). Answered 503."""


@dataclass(frozen=True)
class Outcome:
    status_code: int
    body: dict[str, Any]
    redelivery: bool = False


def _record(
    delivery: Delivery,
    decision: DeliveryDecision,
    reason: str,
    status_code: int,
    response: dict[str, Any],
    task_id: str | None = None,
) -> WebhookDelivery:
    return WebhookDelivery(
        delivery_key=delivery.key,
        sender=delivery.sender,
        delivery_id=delivery.delivery_id,
        event=delivery.event,
        action=delivery.action,
        decision=decision,
        reason=reason,
        task_id=task_id,
        status_code=status_code,
        response=response,
    )


def _body(delivery: Delivery, status: str, reason: str, **extra: Any) -> dict[str, Any]:
    return {"status": status, "reason": reason, "delivery_id": delivery.delivery_id, **extra}


def _stored(delivery: Delivery) -> Outcome | None:
    stored = events.get(delivery.key)
    if stored is None:
        return None
    return Outcome(stored.status_code, stored.response, redelivery=True)


def record_only(
    delivery: Delivery, decision: DeliveryDecision, reason: str, *, extra: dict[str, Any] | None = None
) -> Outcome:
    """ONE conditional PutItem; a redelivery gets the stored answer."""
    body = _body(delivery, decision.value, reason, **(extra or {}))
    return _put_record(delivery, _record(delivery, decision, reason, 200, body))


def _put_record(delivery: Delivery, mine: WebhookDelivery) -> Outcome:
    try:
        events.record_delivery(mine)
    except DuplicateDelivery:
        stored = _stored(delivery)
        if stored is not None:
            return stored
        # The record is past its TTL but not yet swept: this is a new delivery as far as we are concerned.
        events.replace_expired_delivery(mine)
    return Outcome(mine.status_code, mine.response)


def _duplicate(delivery: Delivery) -> Outcome | None:
    """The delivery's event made a task already, under another delivery id: answer as that delivery was answered
    (status "duplicate", pointing at it), and record this one as ignored so its own redeliveries get the same
    answer. None when the claim is gone (its task was taken back, or it expired): the caller tries again."""
    if delivery.source_key is None:
        return None
    claim = events.get_claim(delivery.source_key)
    if claim is None:
        return None
    reason = f"duplicate of delivery {claim.delivery_id}: the same event was delivered under two delivery ids"
    body = {
        **claim.response,
        "status": DUPLICATE,
        "reason": reason,
        "delivery_id": delivery.delivery_id,
        "duplicate_of": claim.delivery_id,
        "source_key": claim.source_key,
    }
    return _put_record(
        delivery, _record(delivery, DeliveryDecision.IGNORED, reason, claim.status_code, body, claim.task_id)
    )


def _forget(delivery: Delivery) -> None:
    """A task that was not enqueued: forget its delivery and give its claim back, so a retry starts over."""
    events.delete(delivery.key)
    if delivery.source_key is not None:
        events.release_claim(delivery.source_key, delivery.key)


def record(delivery: Delivery, decision: Decision) -> Outcome:
    if isinstance(decision, Ignore):
        return record_only(delivery, DeliveryDecision.IGNORED, decision.reason)
    if isinstance(decision, Answer):
        return record_only(delivery, DeliveryDecision.ANSWERED, decision.reason, extra=decision.extra)
    if isinstance(decision, StopThread):
        return _stop(delivery, decision)
    return _create(delivery, decision)


def _stop(delivery: Delivery, decision: StopThread) -> Outcome:
    stored = _stored(delivery)  # stopping twice is harmless, but answer a redelivery as the first time
    if stored is not None:
        return stored
    session_id = thread_session_id(decision.thread_key)
    stopped: list[str] = []
    for status in (TaskStatus.QUEUED, TaskStatus.RUNNING):
        for task in tasks.list_tasks(session_id=session_id, status=status, limit=100).items:
            done = tasks.request_stop(task.task_id)
            if done is not None:
                stopped.append(task.task_id)
                if done.status == TaskStatus.STOPPED:  # stopped while queued: no runner will say so
                    submission.publish_stopped(done)
    reason = (
        f"{decision.reason}: stop requested for {len(stopped)} task(s)"
        if stopped
        else f"{decision.reason}, but nothing is queued or running"
    )
    return record_only(delivery, DeliveryDecision.ANSWERED, reason, extra={"stopped_task_ids": stopped})


def _create(delivery: Delivery, decision: CreateTask) -> Outcome:
    session_id = thread_session_id(decision.thread_key) if decision.thread_key else None
    task, new_session = submission.new_task(
        decision.prompt,
        session_id=session_id,
        agent=decision.agent,
        source=delivery.source,
        source_name=delivery.sender,
        title=decision.title,
        parent=decision.parent,
    )
    repo, dropped = context.checked(decision.repo)
    if dropped:  # the reason is recorded with the delivery (and logged): the sender sent something odd
        decision = replace(decision, reason=f"{decision.reason} (dropped invalid context: {', '.join(dropped)})")
    updates: dict[str, Any] = {"repo": repo, "plan": decision.plan}
    if decision.task_id:
        updates["task_id"] = decision.task_id
    task = task.model_copy(update=updates)
    return _create_task(delivery, decision, task, new_session, session_id)


def _create_task(
    delivery: Delivery,
    decision: CreateTask,
    task: Task,
    new_session: Session | None,
    session_id: str | None,
    *,
    session_exists: bool = False,
) -> Outcome:
    body = _body(
        delivery,
        DeliveryDecision.TASK_CREATED.value,
        decision.reason,
        task_id=task.task_id,
        session_id=task.session_id,
        agent=task.agent,
    )
    mine = _record(delivery, DeliveryDecision.TASK_CREATED, decision.reason, 202, body, task.task_id)
    claim = None
    if delivery.source_key is not None:
        claim = events.SourceClaim(
            source_key=delivery.source_key,
            claimed_by=delivery.key,
            delivery_id=delivery.delivery_id,
            task_id=task.task_id,
            status_code=mine.status_code,
            response=body,
        )
    thread_session = None
    if session_id is not None:
        thread_session = Session(
            session_id=session_id,
            title=decision.thread_title or task.title or "Thread",
            agent=decision.agent,
            source=delivery.source,
        )
    # A thread's session: guess whether it exists (a thread's first planning task: no; anything else: yes), and
    # correct the guess if the transaction says otherwise. The first guess is tried again last: when two
    # deliveries race on a new thread, "touch" can fail before the other creates it and "create" after.
    first_try_new = decision.agent == PLANNING and decision.parent is None and not session_exists
    guesses = [thread_session if first_try_new else None, None if first_try_new else thread_session]
    attempts = [*guesses, guesses[0]] if thread_session is not None else [new_session]
    for session in attempts:
        outcome = _submit(delivery, decision, task, session, claim, body, mine)
        if outcome is not None:
            return outcome
    # Nothing was recorded: answer 503 so the sender retries the delivery, rather than a 2xx that loses it.
    raise IngestUnavailable("the thread's session changed while recording; retry the delivery")


def _stored_or_own(
    delivery: Delivery, mine: WebhookDelivery, task: Task, session: Session | None, body: dict[str, Any]
) -> Outcome | None:
    """The stored answer of a redelivery; or, when the stored record is this request's own (botocore retried a
    transaction whose first attempt committed but whose answer was lost: its retry then fails every guard), the
    task is ours and recorded but not yet enqueued: enqueue it and answer as a first delivery."""
    stored = events.get(delivery.key)
    if stored is None:
        return None
    if stored.received_at == mine.received_at and stored.task_id == task.task_id:
        try:
            submission.enqueue(task, session)
        except submission.EnqueueFailed as exc:
            _forget(delivery)
            raise IngestUnavailable("the task could not be enqueued; retry the delivery") from exc
        return Outcome(202, body)
    return Outcome(stored.status_code, stored.response, redelivery=True)


MAX_PLANNING_ATTEMPTS = 20


def _next_planning_attempt(decision: CreateTask, task: Task) -> Task | None:
    """A thread's planning task exists already (its derived id is taken). When every earlier attempt ended without
    completing (failed, stopped, timed out), the next attempt gets the next derived id; None when one is queued,
    running or completed (the delivery is then a duplicate). Costs one Query, only on this path."""
    key = decision.thread_key
    if decision.agent != PLANNING or decision.parent is not None or key is None:
        return None
    attempt_ids = [planning_task_id(key, n) for n in range(MAX_PLANNING_ATTEMPTS)]
    if task.task_id not in attempt_ids:
        return None
    earlier = {
        t.task_id: t
        for t in tasks.list_tasks(session_id=task.session_id, agent=PLANNING, limit=100).items
        if t.task_id in attempt_ids
    }
    if any(not t.status.terminal or t.status == TaskStatus.COMPLETED for t in earlier.values()):
        return None
    for task_id in attempt_ids:
        if task_id not in earlier:
            if task_id == task.task_id:
                return None  # our own id is free after all (the earlier attempt is gone): nothing to renumber
            return task.model_copy(update={"task_id": task_id})
    return None


def _submit(
    delivery: Delivery,
    decision: CreateTask,
    task: Task,
    session: Session | None,
    claim: events.SourceClaim | None,
    body: dict[str, Any],
    mine: WebhookDelivery,
) -> Outcome | None:
    """One attempt; None when the session guess was wrong and the other guess should be tried (or the claim that
    refused this delivery as a duplicate was taken back meanwhile: trying again may now create the task)."""
    try:
        submission.submit(task, session, delivery=mine, source_claim=claim)
    except submission.UnknownSession as exc:
        if Guard.DUPLICATE_DELIVERY in exc.failed:
            stored = _stored_or_own(delivery, mine, task, session, body)
            if stored is not None:
                return stored
        if Guard.SOURCE_CLAIMED in exc.failed:
            return _duplicate(delivery)
        return None
    except submission.AlreadyRecorded as exc:
        # (DynamoDB not saying which guard failed: maybe the delivery's, so look for its record first)
        if not exc.failed or Guard.DUPLICATE_DELIVERY in exc.failed:
            stored = _stored_or_own(delivery, mine, task, session, body)
            if stored is not None:
                return stored
        if Guard.SOURCE_CLAIMED in exc.failed:  # before the task id: the event is the better answer
            return _duplicate(delivery)
        if Guard.TASK_EXISTS in exc.failed:
            retry = _next_planning_attempt(decision, task)
            if retry is not None:
                return _create_task(delivery, decision, retry, None, task.session_id, session_exists=True)
            return record_only(
                delivery, DeliveryDecision.IGNORED, decision.duplicate_reason, extra={"existing_task_id": task.task_id}
            )
        if session is not None:
            return None  # the thread's session exists already: touch it instead
        return record_only(
            delivery, DeliveryDecision.IGNORED, decision.duplicate_reason, extra={"existing_task_id": task.task_id}
        )
    except submission.EnqueueFailed as exc:
        _forget(delivery)
        raise IngestUnavailable("the task could not be enqueued; retry the delivery") from exc
    return Outcome(202, body)
