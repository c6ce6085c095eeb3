"""Connections table: WebSocket clients and what they subscribe to.

Keys: PK connection_id, SK sk = "META" (the connection) | "SUB#<topic>" (one per subscription, topic
"session#<id>" or "task#<id>"). GSI by_topic (topic, connection_id) finds a topic's subscribers in one Query.
Every item carries expires_at (TTL): API Gateway drops connections after 2 h, so records never outlive that.
"""

from __future__ import annotations

import time
from typing import Any

from agent_machine import aws
from agent_machine.models import Subscription
from agent_machine.settings import get_settings
from agent_machine.store._dynamo import values

CONNECTION_TTL_SECONDS = 2 * 3600


def table() -> str:
    return get_settings().connections_table


def add(connection_id: str, *, now: float | None = None) -> int:
    expires = int((now or time.time()) + CONNECTION_TTL_SECONDS)
    aws.dynamodb().put_item(
        TableName=table(),
        Item={
            "connection_id": {"S": connection_id},
            "sk": {"S": "META"},
            "connected_at": {"N": str(int(now or time.time()))},
            "expires_at": {"N": str(expires)},
        },
    )
    return expires


def _meta_expiry(connection_id: str) -> int | None:
    resp = aws.dynamodb().get_item(
        TableName=table(), Key={"connection_id": {"S": connection_id}, "sk": {"S": "META"}}, ConsistentRead=True
    )
    item = resp.get("Item")
    return int(item["expires_at"]["N"]) if item else None


def subscribe(connection_id: str, sub: Subscription) -> bool:
    """False when the connection is unknown (gone, or never connected)."""
    expires = _meta_expiry(connection_id)
    if expires is None or expires < time.time():
        return False
    aws.dynamodb().put_item(
        TableName=table(),
        Item={
            "connection_id": {"S": connection_id},
            "sk": {"S": f"SUB#{sub.topic}"},
            "topic": {"S": sub.topic},
            "expires_at": {"N": str(expires)},
        },
    )
    return True


def unsubscribe(connection_id: str, sub: Subscription) -> None:
    aws.dynamodb().delete_item(
        TableName=table(), Key={"connection_id": {"S": connection_id}, "sk": {"S": f"SUB#{sub.topic}"}}
    )


def remove(connection_id: str) -> None:
    """Delete the connection and all its subscriptions."""
    client = aws.dynamodb()
    kwargs: dict[str, Any] = {
        "TableName": table(),
        "KeyConditionExpression": "connection_id = :c",
        "ExpressionAttributeValues": values(c=connection_id),
        "ProjectionExpression": "connection_id, sk",
    }
    while True:
        resp = client.query(**kwargs)
        keys = [{"connection_id": i["connection_id"], "sk": i["sk"]} for i in resp.get("Items", [])]
        for start in range(0, len(keys), 25):
            client.batch_write_item(
                RequestItems={table(): [{"DeleteRequest": {"Key": k}} for k in keys[start : start + 25]]}
            )
        if "LastEvaluatedKey" not in resp:
            return
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


def subscribers(topics: list[str]) -> set[str]:
    """Live connection ids subscribed to any of the topics (expired records are skipped: TTL lags)."""
    now = int(time.time())
    found: set[str] = set()
    for topic in topics:
        kwargs: dict[str, Any] = {
            "TableName": table(),
            "IndexName": "by_topic",
            "KeyConditionExpression": "topic = :t",
            "ExpressionAttributeValues": values(t=topic),
        }
        while True:
            resp = aws.dynamodb().query(**kwargs)
            for item in resp.get("Items", []):
                if int(item.get("expires_at", {"N": "0"})["N"]) >= now:
                    found.add(item["connection_id"]["S"])
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
    return found


def count() -> int:
    resp = aws.dynamodb().scan(
        TableName=table(),
        Select="COUNT",
        FilterExpression="sk = :m AND expires_at >= :now",
        ExpressionAttributeValues=values(m="META", now=int(time.time())),
    )
    return int(resp.get("Count", 0))
