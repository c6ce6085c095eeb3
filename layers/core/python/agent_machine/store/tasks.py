"""Tasks table. Every status change is a conditional write: two runners can never both start a task.

Keys: PK task_id. GSIs: by_status (status, created_at), by_session (session_id, created_at),
by_time (list_pk="task", created_at) for newest-first listing, by_parent (parent_task_id, created_at).

The task's transactions live here too (they also write the session, the day's costs, the first output chunk, the
webhook delivery): the domain says what to write, these write it and raise `errors.Refused` naming the guards that
failed (or WriteConflict, when another transaction got in the way and trying again may work).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from agent_machine import aws
from agent_machine.models import (
    Session,
    Task,
    TaskEvent,
    TaskSource,
    TaskStatus,
    TokenUsage,
    WebhookDelivery,
    iso,
    utcnow,
)
from agent_machine.settings import get_settings
from agent_machine.store import costs, events, output, sessions
from agent_machine.store._dynamo import (
    condition_failed,
    decode_cursor,
    encode_cursor,
    from_item,
    model_to_item,
    query_pages,
    to_attr,
    transact,
    values,
)
from agent_machine.store.errors import Guard, TaskExists

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import (
        AttributeValueTypeDef,
        QueryOutputTypeDef,
        TransactWriteItemTypeDef,
        UpdateItemInputTypeDef,
    )

LIST_PK = "task"


@dataclass(frozen=True)
class ChildSlot:
    """One child's share of a parent task's cap: taken only while the parent has fewer than `max_children`
    children and has reserved exactly `seen_reserved_usd` (what the caller read) for them."""

    parent_task_id: str
    cap_usd: float
    seen_reserved_usd: Decimal
    max_children: int


@dataclass(frozen=True)
class TaskPage:
    items: list[Task]
    cursor: str | None


def table() -> str:
    return get_settings().tasks_table


def task_item(task: Task) -> dict[str, Any]:
    return model_to_item(task, list_pk=LIST_PK)


def _put_new_task_item(task: Task) -> TransactWriteItemTypeDef:
    """A transaction part that creates the task only if its id is new."""
    return {
        "Put": {
            "TableName": table(),
            "Item": task_item(task),
            "ConditionExpression": "attribute_not_exists(task_id)",
        }
    }


def create(task: Task) -> Task:
    """The task alone (no session, no first event: see `record_submission`). Raises TaskExists."""
    try:
        aws.dynamodb().put_item(
            TableName=table(), Item=task_item(task), ConditionExpression="attribute_not_exists(task_id)"
        )
    except ClientError as exc:
        if condition_failed(exc):
            raise TaskExists() from exc
        raise
    return task


def get(task_id: str, *, consistent: bool = True) -> Task | None:
    resp = aws.dynamodb().get_item(TableName=table(), Key={"task_id": {"S": task_id}}, ConsistentRead=consistent)
    item = resp.get("Item")
    return Task.model_validate(from_item(item)) if item else None


def get_many(task_ids: Sequence[str]) -> list[Task]:
    """Tasks by id, read consistently (an index's copy may lag a status change), in no particular order; ids
    that do not exist are left out. At most 100 ids (one BatchGetItem)."""
    keys: list[dict[str, Any]] = [{"task_id": {"S": task_id}} for task_id in dict.fromkeys(task_ids)]
    found: list[Task] = []
    while keys:
        resp = aws.dynamodb().batch_get_item(RequestItems={table(): {"Keys": keys, "ConsistentRead": True}})
        found.extend(Task.model_validate(from_item(raw)) for raw in resp.get("Responses", {}).get(table(), []))
        pending = (resp.get("UnprocessedKeys") or {}).get(table())
        keys = list(pending["Keys"]) if pending else []
    return found


def _conditional_update(request: UpdateItemInputTypeDef) -> Task | None:
    """One conditional UpdateItem of a task (`request` asks for ALL_NEW), answering its new state; None when the
    condition does not hold (someone else moved the task)."""
    try:
        resp = aws.dynamodb().update_item(**request)
    except ClientError as exc:
        if condition_failed(exc):
            return None
        raise
    return Task.model_validate(from_item(resp["Attributes"]))


def _update(
    task_id: str, set_fields: dict[str, Any], condition: str, cond_values: dict[str, Any], *, add: str = ""
) -> Task | None:
    """SET the fields if the condition holds; None when it does not (someone else moved the task)."""
    names = {f"#{k}": k for k in set_fields}
    if "#status" in condition:
        names["#status"] = "status"
    expr_values = {f":v_{k}": to_attr(v) for k, v in set_fields.items()}
    expr_values.update(values(**cond_values))
    expression = "SET " + ", ".join(f"#{k} = :v_{k}" for k in set_fields)
    if add:
        expression += f" ADD {add}"
    return _conditional_update(
        {
            "TableName": table(),
            "Key": {"task_id": {"S": task_id}},
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": expr_values,
            "ReturnValues": "ALL_NEW",
        }
    )


def start(task_id: str, runner_id: str, run_mode: str) -> Task | None:
    """queued -> running, counting the attempt. None if the task is not queued (redelivery, stopped, gone)."""
    now = iso(utcnow())
    return _update(
        task_id,
        {
            "status": "running",
            "runner_id": runner_id,
            "run_mode": run_mode,
            "started_at": now,
            "heartbeat_at": now,
            "updated_at": now,
        },
        "#status = :queued",
        {"queued": "queued", "one": 1},
        add="attempt :one",
    )


def _start_item(
    task_id: str, runner_id: str, run_mode: str, *, reserved_usd: float, day: str
) -> TransactWriteItemTypeDef:
    """queued -> running as a transaction part (the claim that also holds the task's cap of `day`'s budget: the
    hold is recorded on the task, so whoever finishes it gives back exactly that)."""
    now = iso(utcnow())
    fields: dict[str, Any] = {
        "status": "running",
        "runner_id": runner_id,
        "run_mode": run_mode,
        "started_at": now,
        "heartbeat_at": now,
        "updated_at": now,
        "reserved_usd": reserved_usd,
        "reserved_day": day,
    }
    expr_values = {f":v_{k}": to_attr(v) for k, v in fields.items()}
    expr_values.update(values(queued="queued", one=1))
    return {
        "Update": {
            "TableName": table(),
            "Key": {"task_id": {"S": task_id}},
            # dispatched_at: a Fargate hand-over that did claim it (not a lost attempt).
            "UpdateExpression": "SET "
            + ", ".join(f"#{k} = :v_{k}" for k in fields)
            + " REMOVE dispatched_at ADD attempt :one",
            "ConditionExpression": "#status = :queued",
            "ExpressionAttributeNames": {f"#{k}": k for k in fields},
            "ExpressionAttributeValues": expr_values,
        }
    }


def mark_dispatched(task_id: str) -> bool:
    """A queued task handed to a Fargate run: when (`dispatched_at`), so a run that never claims it is noticed.
    The claim removes it (`claim`)."""
    return (
        _conditional_update(
            {
                "TableName": table(),
                "Key": {"task_id": {"S": task_id}},
                "UpdateExpression": "SET dispatched_at = :now",
                "ConditionExpression": "#status = :queued",
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": values(now=iso(utcnow()), queued="queued"),
                "ReturnValues": "ALL_NEW",
            }
        )
        is not None
    )


def dispatched_at(task_id: str) -> datetime | None:
    """When the queued task was last handed to a Fargate run that has not claimed it (None: not handed over)."""
    resp = aws.dynamodb().get_item(
        TableName=table(), Key={"task_id": {"S": task_id}}, ConsistentRead=True, ProjectionExpression="dispatched_at"
    )
    raw = (resp.get("Item") or {}).get("dispatched_at")
    return datetime.fromisoformat(raw["S"]) if raw and "S" in raw else None


def count_unclaimed_dispatch(task_id: str, when: datetime) -> Task | None:
    """The Fargate run handed the task at `when` never claimed it: count that as an attempt (once: the condition
    names that hand-over). None if the task moved meanwhile (claimed, stopped, counted by another delivery)."""
    return _conditional_update(
        {
            "TableName": table(),
            "Key": {"task_id": {"S": task_id}},
            "UpdateExpression": "SET updated_at = :now REMOVE dispatched_at ADD attempt :one",
            "ConditionExpression": "#status = :queued AND dispatched_at = :when",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": values(now=iso(utcnow()), queued="queued", when=iso(when), one=1),
            "ReturnValues": "ALL_NEW",
        }
    )


def clear_dispatched(task_id: str) -> None:
    """The Fargate run gave the task back unclaimed on purpose (its session was busy): not a lost attempt."""
    aws.dynamodb().update_item(
        TableName=table(), Key={"task_id": {"S": task_id}}, UpdateExpression="REMOVE dispatched_at"
    )


def take_over_stale(task_id: str, runner_id: str, run_mode: str, stale_before: datetime) -> Task | None:
    """A run whose runner stopped heart-beating (it died): the next attempt takes it over."""
    now = iso(utcnow())
    return _update(
        task_id,
        {"runner_id": runner_id, "run_mode": run_mode, "heartbeat_at": now, "updated_at": now},
        "#status = :running AND heartbeat_at < :stale",
        {"running": "running", "stale": iso(stale_before), "one": 1},
        add="attempt :one",
    )


def heartbeat(task_id: str, runner_id: str, last_seq: int) -> Task | None:
    """Proves the runner is alive and reads stop requests in the same call. None if we lost the task."""
    now = iso(utcnow())
    return _update(
        task_id,
        {"heartbeat_at": now, "last_seq": last_seq},
        "#status = :running AND runner_id = :runner",
        {"running": "running", "runner": runner_id},
    )


def set_fields(task_id: str, **fields: Any) -> Task | None:
    """Non-status bookkeeping (report-back state, plan, cli session) on a task that exists."""
    fields["updated_at"] = iso(utcnow())
    return _update(task_id, fields, "attribute_exists(task_id)", {})


def request_stop(task_id: str) -> Task | None:
    """Stop: a queued task is stopped at once; a running one is flagged for its runner. None if finished."""
    now = iso(utcnow())
    stopped = _update(
        task_id,
        {
            "status": "stopped",
            "stop_requested": True,
            "finished_at": now,
            "updated_at": now,
            "error": "stopped before it started",
            "error_kind": "stopped",
        },
        "#status = :queued",
        {"queued": "queued"},
    )
    if stopped:
        return stopped
    return _update(task_id, {"stop_requested": True, "updated_at": now}, "#status = :running", {"running": "running"})


def _finish_item(
    task_id: str, status: TaskStatus, fields: dict[str, Any], *, runner_id: str | None, reserved_day: str | None = None
) -> TransactWriteItemTypeDef:
    """running -> terminal, as one part of the transaction that also books the cost (never twice).

    Without a runner (whoever holds it), only while the task holds the reservation the caller read
    (`reserved_day`, None: none): a copy read before a runner claimed it must not finish it and leave its hold."""
    fields = {**fields, "status": status.value, "finished_at": iso(utcnow()), "updated_at": iso(utcnow())}
    names = {f"#{k}": k for k in fields}
    expr_values = {f":v_{k}": to_attr(v) for k, v in fields.items()}
    if runner_id is None:
        condition = "#status IN (:queued, :running)"
        expr_values.update(values(queued="queued", running="running"))
        names["#reserved_day"] = "reserved_day"
        if reserved_day is None:
            condition += " AND attribute_not_exists(#reserved_day)"
        else:
            condition += " AND #reserved_day = :held_day"
            expr_values.update(values(held_day=reserved_day))
    else:
        condition = "#status = :running AND runner_id = :runner"
        expr_values.update(values(running="running", runner=runner_id))
    return {
        "Update": {
            "TableName": table(),
            "Key": {"task_id": {"S": task_id}},
            "UpdateExpression": "SET " + ", ".join(f"#{k} = :v_{k}" for k in fields),
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": expr_values,
        }
    }


def list_tasks(
    *,
    status: TaskStatus | None = None,
    session_id: str | None = None,
    agent: str | None = None,
    source: TaskSource | None = None,
    parent_task_id: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    max_pages: int | None = None,
) -> TaskPage:
    """Newest first, through the narrowest index; agent/source narrow further with a filter.

    A filter can match few items of an index: with `max_pages`, at most that many index pages are read, and the
    page answered may be short (even empty) yet carry a cursor to go on from. Raises BadCursor for a cursor this
    listing (these filters) did not produce."""
    if session_id:
        index, key_name, key_value = "by_session", "session_id", session_id
    elif parent_task_id:
        index, key_name, key_value = "by_parent", "parent_task_id", parent_task_id
    elif status:
        index, key_name, key_value = "by_status", "status", status.value
    else:
        index, key_name, key_value = "by_time", "list_pk", LIST_PK
    # The index's key and the table's: what a page's LastEvaluatedKey holds, so what a cursor must hold.
    start_key = decode_cursor(cursor, {"task_id": None, "created_at": None, key_name: key_value})
    filters: list[str] = []
    names = {"#k": key_name}
    expr_values = values(k=key_value)
    for attr, wanted in (
        ("status", status.value if status else None),
        ("agent", agent),
        ("source", source.value if source else None),
    ):
        if wanted is not None and attr != key_name:
            names[f"#{attr}"] = attr
            expr_values[f":f_{attr}"] = to_attr(wanted)
            filters.append(f"#{attr} = :f_{attr}")
    items: list[Task] = []
    last_key: dict[str, Any] | None = None
    # A filter can leave a page short: keep reading until the page is full, the index ends or max_pages are read.
    pages = 0
    while len(items) < limit:
        if max_pages is not None and pages == max_pages:
            return TaskPage(items=items, cursor=encode_cursor(start_key) if start_key else None)
        pages += 1
        kwargs: dict[str, Any] = {
            "TableName": table(),
            "IndexName": index,
            "KeyConditionExpression": "#k = :k",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": expr_values,
            "ScanIndexForward": False,
            "Limit": limit - len(items) if not filters else max(limit, 50),
        }
        if filters:
            kwargs["FilterExpression"] = " AND ".join(filters)
        if start_key:
            kwargs["ExclusiveStartKey"] = start_key
        resp = aws.dynamodb().query(**kwargs)
        for raw in resp.get("Items", []):
            if len(items) == limit:
                break
            items.append(Task.model_validate(from_item(raw)))
            last_key = {k: raw[k] for k in ("task_id", key_name, "created_at") if k in raw}
        start_key = resp.get("LastEvaluatedKey")
        if not start_key:
            last_key = None if len(items) < limit else last_key
            break
        if len(items) == limit:
            break
    next_cursor = encode_cursor(last_key) if len(items) == limit and last_key else None
    return TaskPage(items=items, cursor=next_cursor)


def _by_status(
    status: str, extra_values: dict[str, AttributeValueTypeDef] | None = None, **kwargs: Any
) -> Iterator[QueryOutputTypeDef]:
    return query_pages(
        TableName=table(),
        IndexName="by_status",
        KeyConditionExpression="#s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={**values(s=status), **(extra_values or {})},
        **kwargs,
    )


def count_by_status(status: TaskStatus) -> int:
    return sum(page.get("Count", 0) for page in _by_status(status.value, Select="COUNT"))


def ids_with_status(status: TaskStatus) -> Sequence[str]:
    return [
        item["task_id"]["S"]
        for page in _by_status(status.value, ProjectionExpression="task_id")
        for item in page.get("Items", [])
    ]


def stale_running(stale_before: datetime) -> list[Task]:
    """Running tasks whose heartbeat is older than `stale_before` (or missing), read consistently (the index's
    copy may lag a heartbeat or a finish; what the index says is only a candidate)."""
    pages = _by_status(
        "running",
        FilterExpression="attribute_not_exists(heartbeat_at) OR heartbeat_at < :stale",
        extra_values=values(stale=iso(stale_before)),
        ProjectionExpression="task_id",
    )
    ids = [item["task_id"]["S"] for page in pages for item in page.get("Items", [])]
    found: list[Task] = []
    for start in range(0, len(ids), 100):
        found.extend(get_many(ids[start : start + 100]))
    return [
        t for t in found if t.status == TaskStatus.RUNNING and (t.heartbeat_at is None or t.heartbeat_at < stale_before)
    ]


def _requeue_item(task_id: str, runner_id: str | None, stale_before: datetime) -> TransactWriteItemTypeDef:
    """running -> queued for a run whose runner died, as one part of the transaction that gives back its hold:
    only while the same runner still holds it and its heartbeat is still older than `stale_before` (a runner that
    came back, a takeover or a second sweeper makes the condition fail). The attempt was counted by its claim."""
    names = {"#status": "status", "#updated_at": "updated_at", "#runner_id": "runner_id", "#hb": "heartbeat_at"}
    condition = "#status = :running AND (attribute_not_exists(#hb) OR #hb < :stale) AND "
    expr_values = values(running="running", queued="queued", stale=iso(stale_before), now=iso(utcnow()))
    if runner_id is None:
        condition += "attribute_not_exists(#runner_id)"
    else:
        condition += "#runner_id = :runner"
        expr_values.update(values(runner=runner_id))
    return {
        "Update": {
            "TableName": table(),
            "Key": {"task_id": {"S": task_id}},
            # The next claim records its own runner, heartbeat and hold.
            "UpdateExpression": "SET #status = :queued, #updated_at = :now "
            "REMOVE #runner_id, #hb, reserved_usd, reserved_day",
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": expr_values,
        }
    }


# --- the task's transactions ----------------------------------------------------------------------------------


def record_submission(
    task: Task,
    first_events: Sequence[TaskEvent],
    *,
    new_session: Session | None,
    delivery: WebhookDelivery | None = None,
    source_claim: events.SourceClaim | None = None,
    child_slot: ChildSlot | None = None,
) -> None:
    """ONE transaction: the task (its id new), its first events, its session (`new_session` created, or else the
    task's session counted in: it must exist), the webhook delivery's record (new) and its source event's claim
    (unclaimed) when given, and the parent's `child_slot` when given. Raises Refused naming each guard that failed
    (TASK_EXISTS, SESSION_EXISTS / SESSION_MISSING, DUPLICATE_DELIVERY, SOURCE_CLAIMED, CHILD_SLOT_TAKEN) or
    WriteConflict (another transaction got in the way)."""
    parts = [_put_new_task_item(task), output.put_chunk_part(task.task_id, first_events)]
    guards: list[Guard | None] = [Guard.TASK_EXISTS, None]
    if new_session is not None:
        parts.append(sessions.put_new_session_item(new_session))
        guards.append(Guard.SESSION_EXISTS)
    else:
        parts.append(sessions.touch_session_item(task.session_id))
        guards.append(Guard.SESSION_MISSING)
    if delivery is not None:
        parts.append(events.put_new_delivery_item(delivery))
        guards.append(Guard.DUPLICATE_DELIVERY)
    if source_claim is not None:
        parts.append(events.claim_source_item(source_claim))
        guards.append(Guard.SOURCE_CLAIMED)
    if child_slot is not None:
        parts.append(_take_child_slot_item(child_slot))
        guards.append(Guard.CHILD_SLOT_TAKEN)
    transact(parts, guards)


def take_back_submission(task: Task, first_seq: int, *, new_session: Session | None) -> None:
    """Undo `record_submission` (its message was never sent), in one transaction: the task while it is still
    queued (a runner may have got the message after all), its first chunk, and the session it created (while that
    counts only this task) or the count it added. Raises Refused (the task moved) or botocore's error."""
    parts: list[TransactWriteItemTypeDef] = [
        {
            "Delete": {
                "TableName": table(),
                "Key": {"task_id": {"S": task.task_id}},
                "ConditionExpression": "#status = :queued",
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": {":queued": {"S": TaskStatus.QUEUED.value}},
            }
        },
        output.delete_chunk_part(task.task_id, first_seq),
    ]
    if new_session is not None:
        parts.append(sessions.delete_new_session_item(new_session.session_id))
    else:
        parts.append(sessions.uncount_task_item(task.session_id))
    transact(parts, [Guard.TASK_MOVED, None, None], conflicts=False)


def fail_unenqueued(task_id: str) -> bool:
    """Mark a task failed whose message could not be sent, only while it is still queued (never overwrite a task a
    runner has started). False when it is not queued."""
    now = iso(utcnow())
    try:
        aws.dynamodb().update_item(
            TableName=table(),
            Key={"task_id": {"S": task_id}},
            UpdateExpression="SET #status = :failed, #error = :error, error_kind = :kind, updated_at = :now, "
            "finished_at = :now",
            ConditionExpression="#status = :queued",
            ExpressionAttributeNames={"#status": "status", "#error": "error"},
            ExpressionAttributeValues={
                ":failed": {"S": TaskStatus.FAILED.value},
                ":queued": {"S": TaskStatus.QUEUED.value},
                ":error": {"S": "could not enqueue the task"},
                ":kind": {"S": "enqueue_failed"},
                ":now": {"S": now},
            },
        )
    except ClientError as exc:
        if condition_failed(exc):
            return False
        raise
    return True


def claim(
    task: Task, runner_id: str, run_mode: str, *, hold: costs.Held, daily_cap_usd: float, lease_seconds: float
) -> None:
    """ONE transaction: queued -> running for `runner_id`, holding `hold` of its day's budget (only if booked +
    held leaves room under `daily_cap_usd`) and taking the session's lease. Raises Refused (TASK_MOVED,
    OVER_BUDGET, SESSION_LEASED) or WriteConflict."""
    transact(
        [
            _start_item(task.task_id, runner_id, run_mode, reserved_usd=hold.usd, day=hold.day),
            costs.reserve_item(hold.day, hold.usd, daily_cap_usd),
            sessions.take_lease_item(task.session_id, task.task_id, runner_id, seconds=lease_seconds),
        ],
        [Guard.TASK_MOVED, Guard.OVER_BUDGET, Guard.SESSION_LEASED],
    )


def book_finish(
    task: Task,
    status: TaskStatus,
    fields: dict[str, Any],
    *,
    runner_id: str | None,
    day: str,
    cost_usd: float,
    usage: TokenUsage,
    cli_session_id: str | None,
    cli_total_cost_usd: float | None,
    held: costs.Held | None,
) -> None:
    """ONE transaction: the task to `status` with `fields` (see `_finish_item` for whose it must be), the run's
    totals on its session, its cost booked on `day` and what it `held` given back. Raises Refused (TASK_MOVED:
    not ours to finish) or WriteConflict."""
    parts = [
        _finish_item(task.task_id, status, fields, runner_id=runner_id, reserved_day=held.day if held else None),
        sessions.add_run_item(
            task.session_id,
            cost_usd=cost_usd,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cli_session_id=cli_session_id,
            cli_total_cost_usd=cli_total_cost_usd,
        ),
        *costs.add_cost_items(
            day=day,
            agent=task.agent,
            source=task.source.value,
            session_id=task.session_id,
            cost_usd=cost_usd,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            release=held,
        ),
    ]
    transact(parts, [Guard.TASK_MOVED])


def requeue(task: Task, stale_before: datetime, held: costs.Held | None) -> None:
    """ONE transaction: running -> queued (see `_requeue_item`), giving back what it `held` of a day's budget.
    Raises Refused (TASK_MOVED) or WriteConflict."""
    parts = [_requeue_item(task.task_id, task.runner_id, stale_before)]
    if held is not None:
        parts.append(costs.release_item(held))
    transact(parts, [Guard.TASK_MOVED])


# --- a parent task's children: how many, and how much of its cap they hold --------------------------------------


def children_reserved(task_id: str) -> tuple[int, Decimal]:
    """What a task has reserved for its children: how many, and how much of its cap (read consistently)."""
    resp = aws.dynamodb().get_item(
        TableName=table(),
        Key={"task_id": {"S": task_id}},
        ConsistentRead=True,
        ProjectionExpression="children_count, children_budget_usd",
    )
    item = resp.get("Item") or {}
    count = int(item.get("children_count", {}).get("N", "0"))
    reserved = Decimal(item.get("children_budget_usd", {}).get("N", "0"))
    return count, reserved


def _take_child_slot_item(slot: ChildSlot) -> TransactWriteItemTypeDef:
    """One child slot and its cap on the parent's item, as a part of the child's `record_submission`."""
    return {
        "Update": {
            "TableName": table(),
            "Key": {"task_id": {"S": slot.parent_task_id}},
            "UpdateExpression": "ADD children_count :one, children_budget_usd :cap",
            "ConditionExpression": "attribute_exists(task_id)"
            " AND (attribute_not_exists(children_count) OR children_count < :max)"
            " AND (attribute_not_exists(children_budget_usd) OR children_budget_usd = :seen)",
            "ExpressionAttributeValues": {
                ":one": {"N": "1"},
                ":cap": {"N": f"{slot.cap_usd:.6f}"},
                ":max": {"N": str(slot.max_children)},
                ":seen": {"N": str(slot.seen_reserved_usd)},
            },
        }
    }


def release_child_slot(parent_task_id: str, cap_usd: float) -> bool:
    """Give back one child slot and its cap (a child whose creation was undone). False when the parent has no
    child to give back."""
    try:
        aws.dynamodb().update_item(
            TableName=table(),
            Key={"task_id": {"S": parent_task_id}},
            UpdateExpression="ADD children_count :minus, children_budget_usd :cap",
            ConditionExpression="children_count > :zero",
            ExpressionAttributeValues={":minus": {"N": "-1"}, ":cap": {"N": f"{-cap_usd:.6f}"}, ":zero": {"N": "0"}},
        )
    except ClientError as exc:
        if condition_failed(exc):
            return False
        raise
    return True
