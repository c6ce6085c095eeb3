"""Events table: every webhook delivery and what was decided.

Keys: PK delivery_key ("<sender>#<delivery id>"); GSI by_time (list_pk="event", received_at) for the
dashboard's recent deliveries; TTL expires_at. The conditional put of a delivery (attribute_not_exists) is the
redelivery guard, done in the same transaction that creates the task: one write both dedupes and records.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from agent_machine import aws
from agent_machine.models import WebhookDelivery
from agent_machine.settings import get_settings
from agent_machine.store._dynamo import decode_cursor, encode_cursor, from_item, model_to_item, values

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

LIST_PK = "event"
RETENTION_SECONDS = 7 * 86400  # longer than any sender retries


def table() -> str:
    return get_settings().events_table


def put_new_delivery_item(delivery: WebhookDelivery) -> TransactWriteItemTypeDef:
    if not delivery.expires_at:
        delivery = delivery.model_copy(update={"expires_at": int(time.time()) + RETENTION_SECONDS})
    return {
        "Put": {
            "TableName": table(),
            "Item": model_to_item(delivery, list_pk=LIST_PK),
            "ConditionExpression": "attribute_not_exists(delivery_key)",
        }
    }


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
    kwargs: dict[str, Any] = {
        "TableName": table(),
        "IndexName": "by_time",
        "KeyConditionExpression": "list_pk = :k",
        "ExpressionAttributeValues": values(k=LIST_PK),
        "ScanIndexForward": False,
        "Limit": limit,
    }
    start = decode_cursor(cursor)
    if start:
        kwargs["ExclusiveStartKey"] = start
    resp = aws.dynamodb().query(**kwargs)
    items = [WebhookDelivery.model_validate(from_item(i)) for i in resp.get("Items", [])]
    return items, encode_cursor(resp.get("LastEvaluatedKey"))
