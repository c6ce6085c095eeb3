"""The stores' errors in the domain's words, against the moto server: a refused transaction names every guard that
failed (never part indices), single conditional writes raise their own error, and cursors are checked by the store
that made them before any request reaches DynamoDB."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any

import pytest
from agent_machine import aws
from agent_machine.domain import submission
from agent_machine.models import DeliveryDecision, Task, WebhookDelivery
from agent_machine.settings import get_settings
from agent_machine.store import costs, events, sessions, tasks
from agent_machine.store.errors import BadCursor, DuplicateDelivery, Guard, Refused, TaskExists
from local_runtime.provision import Provisioned


def delivery(delivery_id: str) -> WebhookDelivery:
    return WebhookDelivery(
        delivery_key=f"github#{delivery_id}",
        sender="github",
        delivery_id=delivery_id,
        event="issues",
        decision=DeliveryDecision.TASK_CREATED,
        reason="test",
        status_code=202,
    )


def claim(source_key: str, delivery_id: str) -> events.SourceClaim:
    return events.SourceClaim(source_key=source_key, claimed_by=f"github#{delivery_id}", delivery_id=delivery_id)


def test_a_refused_submission_names_every_guard_that_failed(stack: Provisioned) -> None:
    task, session = submission.new_task("first")
    assert session is not None
    first = delivery("d-1")
    tasks.record_submission(
        task,
        [submission.created_event(task)],
        new_session=session,
        delivery=first,
        source_claim=claim("dedupe#evt-1", "d-1"),
    )
    # The same task id, delivery and source event again, into a session that does not exist: four guards fail.
    again = task.model_copy(update={"session_id": "no-such-session"})
    with pytest.raises(Refused) as refused:
        tasks.record_submission(
            again,
            [submission.created_event(again)],
            new_session=None,
            delivery=first,
            source_claim=claim("dedupe#evt-1", "d-2"),
        )
    assert refused.value.failed == {
        Guard.TASK_EXISTS,
        Guard.SESSION_MISSING,
        Guard.DUPLICATE_DELIVERY,
        Guard.SOURCE_CLAIMED,
    }
    # Creating a session that exists, for a new task and a new delivery: only that guard.
    other, _ = submission.new_task("second")
    with pytest.raises(Refused) as refused:
        tasks.record_submission(other, [submission.created_event(other)], new_session=session, delivery=delivery("d-3"))
    assert refused.value.failed == {Guard.SESSION_EXISTS}
    assert tasks.get(other.task_id) is None and events.get("github#d-3") is None  # nothing of it was written


def test_the_domain_reads_guards_not_part_indices(stack: Provisioned) -> None:
    task, session = submission.new_task("hello")
    submission.submit(task, session)
    lost = Task(session_id="no-such-session", prompt="orphan")
    with pytest.raises(submission.UnknownSession) as unknown:
        submission.submit(lost, None)
    assert unknown.value.failed == {Guard.SESSION_MISSING}
    with pytest.raises(submission.AlreadyRecorded) as recorded:
        submission.submit(task.model_copy(update={"session_id": task.session_id}), None)
    assert recorded.value.failed == {Guard.TASK_EXISTS}


def test_a_refused_claim_says_why(stack: Provisioned) -> None:
    day = costs.today()
    cap = get_settings().daily_budget_usd

    def hold(usd: float) -> costs.Held:
        return costs.Held(usd=usd, day=day)

    first, session = submission.new_task("one")
    submission.submit(first, session)
    second, _ = submission.new_task("two", session_id=first.session_id)
    submission.submit(second, None)
    elsewhere, own = submission.new_task("three")
    submission.submit(elsewhere, own)

    tasks.claim(first, "r1", "lambda", hold=hold(0.01), daily_cap_usd=cap, lease_seconds=30)
    with pytest.raises(Refused) as refused:  # the whole cap on top of what the first one holds
        tasks.claim(elsewhere, "r2", "lambda", hold=hold(cap), daily_cap_usd=cap, lease_seconds=30)
    assert refused.value.failed == {Guard.OVER_BUDGET}
    with pytest.raises(Refused) as refused:  # the session's lease is held by the first task
        tasks.claim(second, "r2", "lambda", hold=hold(0.01), daily_cap_usd=cap, lease_seconds=30)
    assert refused.value.failed == {Guard.SESSION_LEASED}
    with pytest.raises(Refused) as refused:  # running already (its own lease is no obstacle)
        tasks.claim(first, "r3", "lambda", hold=hold(0.01), daily_cap_usd=cap, lease_seconds=30)
    assert refused.value.failed == {Guard.TASK_MOVED}
    holder = sessions.lease_holder(first.session_id)
    assert holder is not None and holder[0] == first.task_id
    assert costs.day_figures(day).reservations == 1  # nothing of the refused claims was written


def test_single_conditional_writes_raise_their_own_error(stack: Provisioned) -> None:
    task = tasks.create(Task(session_id="s-single", prompt="p"))
    with pytest.raises(TaskExists):
        tasks.create(task)
    record = delivery("single")
    events.record_delivery(record)
    with pytest.raises(DuplicateDelivery):
        events.record_delivery(record)


def cursor_of(key: dict[str, str]) -> str:
    raw = {name: {"S": value} for name, value in key.items()}
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode()


def test_cursors_are_checked_by_the_store_before_any_request(
    stack: Provisioned, monkeypatch: pytest.MonkeyPatch
) -> None:
    task, session = submission.new_task("listed")
    submission.submit(task, session)
    other, _ = submission.new_task("listed too", session_id=task.session_id)
    submission.submit(other, None)
    page = tasks.list_tasks(session_id=task.session_id, limit=1)
    assert page.cursor is not None
    assert [t.task_id for t in tasks.list_tasks(session_id=task.session_id, limit=1, cursor=page.cursor).items] == [
        task.task_id
    ]

    client = aws.dynamodb()
    queries: list[object] = []
    real_query = client.query

    def counted(**kwargs: Any) -> Any:
        queries.append(kwargs)
        return real_query(**kwargs)

    monkeypatch.setattr(client, "query", counted)
    by_session = {"task_id": "t", "created_at": "2026-01-01", "session_id": task.session_id}
    with pytest.raises(BadCursor, match="another listing"):
        tasks.list_tasks(session_id="another-session", cursor=cursor_of(by_session))
    with pytest.raises(BadCursor, match="not valid for this listing"):  # a session listing's cursor for all tasks
        tasks.list_tasks(cursor=cursor_of(by_session))
    with pytest.raises(BadCursor, match="not valid for this listing"):
        sessions.list_sessions(cursor=page.cursor)
    with pytest.raises(BadCursor, match="not valid"):
        events.recent(cursor="%%not-base64%%")
    assert queries == []  # refused before DynamoDB saw it
    # The store's own cursor for an index still goes through (and reaches DynamoDB).
    tasks.list_tasks(session_id=task.session_id, limit=1, cursor=page.cursor)
    assert len(queries) == 1


def test_taking_a_submission_back_never_touches_a_started_task(stack: Provisioned) -> None:
    """Taking a submission back removes what it wrote (its task, the session it created) while nobody runs it."""
    task, session = submission.new_task("taken back")
    assert session is not None
    submission.submit(task, session)
    tasks.take_back_submission(task, submission.CREATED_SEQ, new_session=session)
    assert tasks.get(task.task_id) is None
    assert sessions.get(session.session_id) is None
    started, new = submission.new_task("running")
    submission.submit(started, new)
    assert tasks.start(started.task_id, "r", "lambda") is not None
    with pytest.raises(Refused) as refused:  # a runner has it: never taken back
        tasks.take_back_submission(started, submission.CREATED_SEQ, new_session=new)
    assert Guard.TASK_MOVED in refused.value.failed
    assert tasks.get(started.task_id) is not None and sessions.get(started.session_id) is not None


def test_a_child_slot_is_taken_with_the_child_and_only_as_read(stack: Provisioned) -> None:
    parent, session = submission.new_task("parent")
    submission.submit(parent, session)
    assert tasks.children_reserved(parent.task_id) == (0, Decimal(0))

    def child(prompt: str, seen: Decimal, max_children: int = 2) -> submission.Submitted:
        task, new = submission.new_task(prompt, parent=parent, max_budget_usd=0.5)
        slot = tasks.ChildSlot(
            parent_task_id=parent.task_id, cap_usd=0.5, seen_reserved_usd=seen, max_children=max_children
        )
        return submission.submit(task, new, child_slot=slot)

    child("one", Decimal(0))
    assert tasks.children_reserved(parent.task_id) == (1, Decimal("0.5"))
    with pytest.raises(submission.AlreadyRecorded) as stale:  # read before the first child took its slot
        child("two", Decimal(0))
    assert stale.value.failed == {Guard.CHILD_SLOT_TAKEN}
    with pytest.raises(submission.AlreadyRecorded) as full:
        child("two", Decimal("0.5"), max_children=1)
    assert full.value.failed == {Guard.CHILD_SLOT_TAKEN}
    assert tasks.children_reserved(parent.task_id) == (1, Decimal("0.5"))  # the refused children took nothing
    assert tasks.release_child_slot(parent.task_id, 0.5)
    assert tasks.children_reserved(parent.task_id) == (0, Decimal(0))
    assert not tasks.release_child_slot(parent.task_id, 0.5)  # none left to give back
