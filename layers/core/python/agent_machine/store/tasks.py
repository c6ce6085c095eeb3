"""Tasks table. Every status change is a conditional write: two runners can never both start a task.

Keys: PK task_id. GSIs: by_status (status, created_at), by_session (session_id, created_at),
by_time (list_pk="task", created_at) for newest-first listing, by_parent (parent_task_id, created_at).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from agent_machine import aws
from agent_machine.models import Task, TaskSource, TaskStatus, iso, utcnow
from agent_machine.settings import get_settings
from agent_machine.store._dynamo import (
    decode_cursor,
    encode_cursor,
    from_item,
    model_to_item,
    to_attr,
    values,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

LIST_PK = "task"


def is_condition_failure(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    if code == "ConditionalCheckFailedException":
        return True
    if code == "TransactionCanceledException":
        reasons = exc.response.get("CancellationReasons", [])
        return any(r.get("Code") == "ConditionalCheckFailed" for r in reasons) or not reasons
    return False


@dataclass(frozen=True)
class TaskPage:
    items: list[Task]
    cursor: str | None


def table() -> str:
    return get_settings().tasks_table


def task_item(task: Task) -> dict[str, Any]:
    return model_to_item(task, list_pk=LIST_PK)


def put_new_task_item(task: Task) -> TransactWriteItemTypeDef:
    """A transaction part that creates the task only if its id is new."""
    return {
        "Put": {
            "TableName": table(),
            "Item": task_item(task),
            "ConditionExpression": "attribute_not_exists(task_id)",
        }
    }


def create(task: Task) -> Task:
    aws.dynamodb().put_item(
        TableName=table(), Item=task_item(task), ConditionExpression="attribute_not_exists(task_id)"
    )
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
    try:
        resp = aws.dynamodb().update_item(
            TableName=table(),
            Key={"task_id": {"S": task_id}},
            UpdateExpression=expression,
            ConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=expr_values,
            ReturnValues="ALL_NEW",
        )
    except ClientError as exc:
        if is_condition_failure(exc):
            return None
        raise
    return Task.model_validate(from_item(resp["Attributes"]))


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


def start_item(
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
    The claim removes it (start_item)."""
    try:
        aws.dynamodb().update_item(
            TableName=table(),
            Key={"task_id": {"S": task_id}},
            UpdateExpression="SET dispatched_at = :now",
            ConditionExpression="#status = :queued",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=values(now=iso(utcnow()), queued="queued"),
        )
    except ClientError as exc:
        if is_condition_failure(exc):
            return False
        raise
    return True


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
    try:
        resp = aws.dynamodb().update_item(
            TableName=table(),
            Key={"task_id": {"S": task_id}},
            UpdateExpression="SET updated_at = :now REMOVE dispatched_at ADD attempt :one",
            ConditionExpression="#status = :queued AND dispatched_at = :when",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=values(now=iso(utcnow()), queued="queued", when=iso(when), one=1),
            ReturnValues="ALL_NEW",
        )
    except ClientError as exc:
        if is_condition_failure(exc):
            return None
        raise
    return Task.model_validate(from_item(resp["Attributes"]))


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


def finish_transaction_item(
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
    page answered may be short (even empty) yet carry a cursor to go on from."""
    if session_id:
        index, key_name, key_value = "by_session", "session_id", session_id
    elif parent_task_id:
        index, key_name, key_value = "by_parent", "parent_task_id", parent_task_id
    elif status:
        index, key_name, key_value = "by_status", "status", status.value
    else:
        index, key_name, key_value = "by_time", "list_pk", LIST_PK
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
    start_key = decode_cursor(cursor)
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


def count_by_status(status: TaskStatus) -> int:
    total = 0
    kwargs: dict[str, Any] = {
        "TableName": table(),
        "IndexName": "by_status",
        "KeyConditionExpression": "#s = :s",
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": values(s=status.value),
        "Select": "COUNT",
    }
    while True:
        resp = aws.dynamodb().query(**kwargs)
        total += resp.get("Count", 0)
        if "LastEvaluatedKey" not in resp:
            return total
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


def ids_with_status(status: TaskStatus) -> Sequence[str]:
    ids: list[str] = []
    kwargs: dict[str, Any] = {
        "TableName": table(),
        "IndexName": "by_status",
        "KeyConditionExpression": "#s = :s",
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": values(s=status.value),
        "ProjectionExpression": "task_id",
    }
    while True:
        resp = aws.dynamodb().query(**kwargs)
        ids.extend(item["task_id"]["S"] for item in resp.get("Items", []))
        if "LastEvaluatedKey" not in resp:
            return ids
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


def stale_running(stale_before: datetime) -> list[Task]:
    """Running tasks whose heartbeat is older than `stale_before` (or missing), read consistently (the index's
    copy may lag a heartbeat or a finish; what the index says is only a candidate)."""
    ids: list[str] = []
    kwargs: dict[str, Any] = {
        "TableName": table(),
        "IndexName": "by_status",
        "KeyConditionExpression": "#s = :s",
        "FilterExpression": "attribute_not_exists(heartbeat_at) OR heartbeat_at < :stale",
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": values(s="running", stale=iso(stale_before)),
        "ProjectionExpression": "task_id",
    }
    while True:
        resp = aws.dynamodb().query(**kwargs)
        ids.extend(item["task_id"]["S"] for item in resp.get("Items", []))
        if "LastEvaluatedKey" not in resp:
            break
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
    found: list[Task] = []
    for start in range(0, len(ids), 100):
        found.extend(get_many(ids[start : start + 100]))
    return [
        t for t in found if t.status == TaskStatus.RUNNING and (t.heartbeat_at is None or t.heartbeat_at < stale_before)
    ]


def requeue_item(task_id: str, runner_id: str | None, stale_before: datetime) -> TransactWriteItemTypeDef:
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
