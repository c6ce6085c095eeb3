"""Events table: every webhook delivery and what was decided, and the source events that made tasks.

Keys: PK delivery_key ("<sender>#<delivery id>"); GSI by_time (list_pk="event", received_at) for the
dashboard's recent deliveries; TTL expires_at. The conditional put of a delivery (attribute_not_exists) is the
redelivery guard, done in the same transaction that creates the task: one write both dedupes and records.

Source claims share the table under "dedupe#..." keys (domain.webhooks.dedupe): the second conditional item of a
task's transaction, so two deliveries of one event (different delivery ids) cannot both create a task. A claim
holds the first delivery's answer (a duplicate is answered from it with one GetItem), has no list_pk (it is not
a delivery: the dashboard's index never sees it) and expires with the delivery records; an expired claim that
TTL has not swept yet no longer guards (its condition says so).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field

from agent_machine import aws
from agent_machine.models import Timestamp, WebhookDelivery, utcnow
from agent_machine.settings import get_settings
from agent_machine.store._dynamo import condition_failed, decode_cursor, encode_cursor, from_item, model_to_item, values
from agent_machine.store.errors import DuplicateDelivery

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

LIST_PK = "event"
RETENTION_SECONDS = 7 * 86400  # longer than any sender retries


def table() -> str:
    return get_settings().events_table


def _delivery_item(delivery: WebhookDelivery) -> dict[str, Any]:
    if not delivery.expires_at:
        delivery = delivery.model_copy(update={"expires_at": int(time.time()) + RETENTION_SECONDS})
    return model_to_item(delivery, list_pk=LIST_PK)


def put_new_delivery_item(delivery: WebhookDelivery) -> TransactWriteItemTypeDef:
    """The redelivery guard as a transaction part: fails when the delivery was recorded before."""
    return {
        "Put": {
            "TableName": table(),
            "Item": _delivery_item(delivery),
            "ConditionExpression": "attribute_not_exists(delivery_key)",
        }
    }


def record_delivery(delivery: WebhookDelivery) -> None:
    """ONE conditional PutItem of a delivery's record. Raises DuplicateDelivery when it was recorded before (its
    record may be past its TTL but not yet swept: `get` tells)."""
    try:
        aws.dynamodb().put_item(
            TableName=table(), Item=_delivery_item(delivery), ConditionExpression="attribute_not_exists(delivery_key)"
        )
    except ClientError as exc:
        if condition_failed(exc):
            raise DuplicateDelivery() from exc
        raise


def replace_expired_delivery(delivery: WebhookDelivery) -> None:
    """Record a delivery over its own record that is past its TTL (not yet swept): a new delivery to us."""
    aws.dynamodb().put_item(TableName=table(), Item=_delivery_item(delivery))


class SourceClaim(BaseModel):
    """Which delivery made a task for a source event, and what it was answered."""

    model_config = ConfigDict(extra="ignore")

    source_key: str  # stored as the table's delivery_key ("dedupe#...")
    claimed_by: str  # the first delivery's delivery_key
    delivery_id: str
    task_id: str | None = None
    status_code: int = 202
    response: dict[str, Any] = Field(default_factory=dict)
    received_at: Timestamp = Field(default_factory=utcnow)
    expires_at: int = 0


def claim_source_item(claim: SourceClaim) -> TransactWriteItemTypeDef:
    """A conditional Put of the claim: fails while an unexpired claim of the same source key exists."""
    if not claim.expires_at:
        claim = claim.model_copy(update={"expires_at": int(time.time()) + RETENTION_SECONDS})
    item = model_to_item(claim, delivery_key=claim.source_key)
    item.pop("source_key", None)
    return {
        "Put": {
            "TableName": table(),
            "Item": item,
            "ConditionExpression": "attribute_not_exists(delivery_key) OR expires_at < :now",
            "ExpressionAttributeValues": values(now=int(time.time())),
        }
    }


def get_claim(source_key: str) -> SourceClaim | None:
    resp = aws.dynamodb().get_item(TableName=table(), Key={"delivery_key": {"S": source_key}}, ConsistentRead=True)
    item = resp.get("Item")
    if not item:
        return None
    data = from_item(item)
    claim = SourceClaim.model_validate({**data, "source_key": data.get("delivery_key")})
    return claim if claim.expires_at >= time.time() else None


def release_claim(source_key: str, delivery_key: str) -> None:
    """Take back a claim whose task was not enqueued, only while it is still that delivery's."""
    try:
        aws.dynamodb().delete_item(
            TableName=table(),
            Key={"delivery_key": {"S": source_key}},
            ConditionExpression="claimed_by = :mine",
            ExpressionAttributeValues=values(mine=delivery_key),
        )
    except ClientError as exc:
        if not condition_failed(exc):
            raise


def get(delivery_key: str) -> WebhookDelivery | None:
    resp = aws.dynamodb().get_item(TableName=table(), Key={"delivery_key": {"S": delivery_key}}, ConsistentRead=True)
    item = resp.get("Item")
    if not item:
        return None
    delivery = WebhookDelivery.model_validate(from_item(item))
    # DynamoDB TTL deletes lazily (and moto never does): an expired record no longer guards.
    return delivery if delivery.expires_at >= time.time() else None


def delete(delivery_key: str) -> None:
    aws.dynamodb().delete_item(TableName=table(), Key={"delivery_key": {"S": delivery_key}})


def recent(limit: int = 50, cursor: str | None = None) -> tuple[list[WebhookDelivery], str | None]:
    """Newest first. Raises BadCursor for a cursor this listing did not produce."""
    start = decode_cursor(cursor, {"delivery_key": None, "list_pk": LIST_PK, "received_at": None})
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
    items = [WebhookDelivery.model_validate(from_item(i)) for i in resp.get("Items", [])]
    return items, encode_cursor(resp.get("LastEvaluatedKey"))
