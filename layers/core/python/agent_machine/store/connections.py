"""Connections table: WebSocket clients and what they subscribe to.

Keys: PK connection_id, SK sk = "META" (the connection) | "SUB#<topic>" (one per subscription, topic
"session#<id>" or "task#<id>"). GSI by_topic (topic, connection_id) finds a topic's subscribers in one Query.
Every item carries expires_at (TTL). API Gateway drops a connection after 10 minutes without a message and after
2 h in any case: the META item expires at min(connected_at + 2 h, last message + 10 min) (`touch` on each message),
its subscriptions at connected_at + 2 h (a live connection's subscriptions never lapse between its messages; pushing
to one that has gone away answers 410 and removes it).
"""

from __future__ import annotations

import time
from typing import Any

from agent_machine import aws
from agent_machine.models import Subscription
from agent_machine.settings import get_settings
from agent_machine.store._dynamo import query_pages, values

CONNECTION_TTL_SECONDS = 2 * 3600
IDLE_TTL_SECONDS = 10 * 60


def table() -> str:
    return get_settings().connections_table


def add(connection_id: str, *, now: float | None = None) -> int:
    at = now or time.time()
    expires = int(at + min(CONNECTION_TTL_SECONDS, IDLE_TTL_SECONDS))
    aws.dynamodb().put_item(
        TableName=table(),
        Item={
            "connection_id": {"S": connection_id},
            "sk": {"S": "META"},
            "connected_at": {"N": str(int(at))},
            "last_active": {"N": str(int(at))},
            "expires_at": {"N": str(expires)},
        },
    )
    return expires


def touch(connection_id: str, connected_at: float | None, *, now: float | None = None) -> bool:
    """A message arrived: the connection lives on until min(connected_at + 2 h, now + 10 min). One UpdateItem; False
    when the connection is not registered (nothing is created)."""
    at = now or time.time()
    expires = at + IDLE_TTL_SECONDS
    if connected_at is not None:
        expires = min(expires, connected_at + CONNECTION_TTL_SECONDS)
    try:
        aws.dynamodb().update_item(
            TableName=table(),
            Key={"connection_id": {"S": connection_id}, "sk": {"S": "META"}},
            UpdateExpression="SET expires_at = :e, last_active = :now",
            ConditionExpression="attribute_exists(connection_id)",
            ExpressionAttributeValues=values(e=int(expires), now=int(at)),
        )
    except aws.dynamodb().exceptions.ConditionalCheckFailedException:
        return False
    return True


def _meta(connection_id: str) -> dict[str, Any] | None:
    resp = aws.dynamodb().get_item(
        TableName=table(), Key={"connection_id": {"S": connection_id}, "sk": {"S": "META"}}, ConsistentRead=True
    )
    item: dict[str, Any] | None = resp.get("Item")
    return item


def _meta_expiry(connection_id: str) -> int | None:
    item = _meta(connection_id)
    return int(item["expires_at"]["N"]) if item else None


def subscribe(connection_id: str, sub: Subscription) -> bool:
    """False when the connection is unknown (gone, or never connected)."""
    item = _meta(connection_id)
    if item is None or int(item["expires_at"]["N"]) < time.time():
        return False
    connected = int(item.get("connected_at", {"N": str(int(time.time()))})["N"])
    expires = max(int(item["expires_at"]["N"]), connected + CONNECTION_TTL_SECONDS)
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
    pages = query_pages(
        TableName=table(),
        KeyConditionExpression="connection_id = :c",
        ExpressionAttributeValues=values(c=connection_id),
        ProjectionExpression="connection_id, sk",
    )
    for page in pages:
        keys = [{"connection_id": i["connection_id"], "sk": i["sk"]} for i in page.get("Items", [])]
        for start in range(0, len(keys), 25):
            client.batch_write_item(
                RequestItems={table(): [{"DeleteRequest": {"Key": k}} for k in keys[start : start + 25]]}
            )


def subscribers(topics: list[str]) -> set[str]:
    """Live connection ids subscribed to any of the topics (expired records are skipped: TTL lags)."""
    now = int(time.time())
    found: set[str] = set()
    for topic in topics:
        pages = query_pages(
            TableName=table(),
            IndexName="by_topic",
            KeyConditionExpression="topic = :t",
            ExpressionAttributeValues=values(t=topic),
        )
        for page in pages:
            for item in page.get("Items", []):
                if int(item.get("expires_at", {"N": "0"})["N"]) >= now:
                    found.add(item["connection_id"]["S"])
    return found


def count() -> int:
    resp = aws.dynamodb().scan(
        TableName=table(),
        Select="COUNT",
        FilterExpression="sk = :m AND expires_at >= :now",
        ExpressionAttributeValues=values(m="META", now=int(time.time())),
    )
    return int(resp.get("Count", 0))
