"""Sessions table. PK session_id; GSI by_time (list_pk="session", updated_at) lists recent sessions."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from agent_machine import aws
from agent_machine.models import Session, iso, utcnow
from agent_machine.settings import get_settings
from agent_machine.store._dynamo import (
    condition_failed,
    decode_cursor,
    encode_cursor,
    from_item,
    model_to_item,
    query_pages,
    values,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

LIST_PK = "session"


def table() -> str:
    return get_settings().sessions_table


def put_new_session_item(session: Session) -> TransactWriteItemTypeDef:
    return {
        "Put": {
            "TableName": table(),
            "Item": model_to_item(session, list_pk=LIST_PK),
            "ConditionExpression": "attribute_not_exists(session_id)",
        }
    }


def touch_session_item(session_id: str) -> TransactWriteItemTypeDef:
    """A new task in an existing session: count it, and fail the transaction if the session is unknown."""
    return {
        "Update": {
            "TableName": table(),
            "Key": {"session_id": {"S": session_id}},
            "UpdateExpression": "SET updated_at = :now ADD task_count :one",
            "ConditionExpression": "attribute_exists(session_id)",
            "ExpressionAttributeValues": values(now=iso(utcnow()), one=1),
        }
    }


def delete_new_session_item(session_id: str) -> TransactWriteItemTypeDef:
    """Take back a session a submission created, only while it counts that one task."""
    return {
        "Delete": {
            "TableName": table(),
            "Key": {"session_id": {"S": session_id}},
            "ConditionExpression": "task_count = :one",
            "ExpressionAttributeValues": {":one": {"N": "1"}},
        }
    }


def uncount_task_item(session_id: str) -> TransactWriteItemTypeDef:
    """Take back the count a submission added to an existing session."""
    return {
        "Update": {
            "TableName": table(),
            "Key": {"session_id": {"S": session_id}},
            "UpdateExpression": "ADD task_count :minus",
            "ConditionExpression": "attribute_exists(session_id) AND task_count > :zero",
            "ExpressionAttributeValues": {":minus": {"N": "-1"}, ":zero": {"N": "0"}},
        }
    }


def add_run_item(
    session_id: str,
    *,
    cost_usd: float,
    input_tokens: int,
    output_tokens: int,
    cli_session_id: str | None,
    cli_total_cost_usd: float | None,
) -> TransactWriteItemTypeDef:
    """Atomic totals for a finished run, plus the CLI session to resume next time."""
    sets = ["updated_at = :now"]
    vals: dict[str, Any] = {"now": iso(utcnow()), "cost": cost_usd, "inp": input_tokens, "out": output_tokens}
    if cli_session_id:
        sets.append("cli_session_id = :cli")
        vals["cli"] = cli_session_id
    if cli_total_cost_usd is not None:
        sets.append("cli_total_cost_usd = :clitotal")
        vals["clitotal"] = cli_total_cost_usd
    return {
        "Update": {
            "TableName": table(),
            "Key": {"session_id": {"S": session_id}},
            "UpdateExpression": "SET "
            + ", ".join(sets)
            + " ADD total_cost_usd :cost, total_input_tokens :inp, total_output_tokens :out",
            "ExpressionAttributeValues": values(**vals),
        }
    }


def get(session_id: str) -> Session | None:
    resp = aws.dynamodb().get_item(TableName=table(), Key={"session_id": {"S": session_id}}, ConsistentRead=True)
    item = resp.get("Item")
    return Session.model_validate(from_item(item)) if item else None


def list_sessions(limit: int = 50, cursor: str | None = None) -> tuple[list[Session], str | None]:
    """Most recently active first. Raises BadCursor for a cursor this listing did not produce."""
    start = decode_cursor(cursor, {"session_id": None, "list_pk": LIST_PK, "updated_at": None})
    kwargs: dict[str, Any] = {
        "TableName": table(),
        "IndexName": "by_time",
        "KeyConditionExpression": "list_pk = :k",
        "ExpressionAttributeValues": values(k=LIST_PK),
        "ScanIndexForward": False,
        "Limit": limit,
    }
    if start:
        kwargs["ExclusiveStartKey"] = start
    resp = aws.dynamodb().query(**kwargs)
    sessions = [Session.model_validate(from_item(i)) for i in resp.get("Items", [])]
    return sessions, encode_cursor(resp.get("LastEvaluatedKey"))


def count() -> int:
    pages = query_pages(
        TableName=table(),
        IndexName="by_time",
        KeyConditionExpression="list_pk = :k",
        ExpressionAttributeValues=values(k=LIST_PK),
        Select="COUNT",
    )
    return sum(page.get("Count", 0) for page in pages)


# The session's lease (issue 13): at most one running task per session, whatever started it. Three attributes on
# the session item: the task holding it, its runner, and when it expires (epoch seconds: a holder that died lets
# go by itself). Taken by the claim's transaction, renewed by the runner's heartbeat, released after booking.
LEASE_SECONDS = 15.0  # default expiry; the runner passes its own (a few heartbeat intervals)
_LEASE_FREE = "attribute_not_exists(lease_task_id) OR lease_task_id = :task OR lease_expires_at < :now"


def take_lease_item(session_id: str, task_id: str, runner_id: str, *, seconds: float) -> TransactWriteItemTypeDef:
    """Take the session's lease for `task_id` as a transaction part: fails while another task holds a live one."""
    now = time.time()
    return {
        "Update": {
            "TableName": table(),
            "Key": {"session_id": {"S": session_id}},
            "UpdateExpression": "SET lease_task_id = :task, lease_runner_id = :runner, lease_expires_at = :exp",
            "ConditionExpression": _LEASE_FREE,
            "ExpressionAttributeValues": values(task=task_id, runner=runner_id, now=now, exp=now + seconds),
        }
    }


def take_lease(session_id: str, task_id: str, runner_id: str, *, seconds: float) -> bool:
    """Take (or renew) the lease outside a transaction; False while another task holds a live one."""
    part = take_lease_item(session_id, task_id, runner_id, seconds=seconds)["Update"]
    try:
        aws.dynamodb().update_item(**part)
    except ClientError as exc:
        if condition_failed(exc):
            return False
        raise
    return True


def release_lease(session_id: str, task_id: str, runner_id: str | None = None) -> bool:
    """Give the lease back if `task_id` (and `runner_id`, when given) still holds it; False if it did not."""
    condition = "lease_task_id = :task"
    vals: dict[str, Any] = {"task": task_id}
    if runner_id is not None:
        condition += " AND lease_runner_id = :runner"
        vals["runner"] = runner_id
    try:
        aws.dynamodb().update_item(
            TableName=table(),
            Key={"session_id": {"S": session_id}},
            UpdateExpression="REMOVE lease_task_id, lease_runner_id, lease_expires_at",
            ConditionExpression=condition,
            ExpressionAttributeValues=values(**vals),
        )
    except ClientError as exc:
        if condition_failed(exc):
            return False
        raise
    return True


def lease_holder(session_id: str) -> tuple[str, float] | None:
    """(task id, expiry in epoch seconds) of the session's lease, or None when nobody holds one."""
    resp = aws.dynamodb().get_item(
        TableName=table(),
        Key={"session_id": {"S": session_id}},
        ConsistentRead=True,
        ProjectionExpression="lease_task_id, lease_expires_at",
    )
    item = resp.get("Item") or {}
    if "lease_task_id" not in item:
        return None
    return item["lease_task_id"]["S"], float(item["lease_expires_at"]["N"])
