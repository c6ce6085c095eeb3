"""Output table: a task's events in batched chunks, for replay to late or reconnecting clients.

Keys: PK task_id, SK seq (the first sequence number in the chunk). TTL expires_at.
Writes are batched (one item per flush, not per CLI line); an item stays under DynamoDB's 400 KB.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from agent_machine import aws
from agent_machine.models import TaskEvent
from agent_machine.settings import get_settings
from agent_machine.store._dynamo import condition_failed, query_pages, values

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

MAX_CHUNK_BYTES = 300_000


def table() -> str:
    return get_settings().output_table


def encode(events: Sequence[TaskEvent]) -> list[str]:
    return [e.model_dump_json() for e in events]


Chunk = tuple[list[TaskEvent], list[str]]  # events and their JSON


def chunk_events(events: list[TaskEvent], texts: Sequence[str] | None = None) -> list[Chunk]:
    """Split a flush into chunks that each fit in one item, each with its events' JSON (`texts`, if already
    encoded)."""
    chunks: list[Chunk] = []
    current: Chunk = ([], [])
    size = 0
    for event, text in zip(events, texts if texts is not None else encode(events), strict=True):
        if current[0] and size + len(text) > MAX_CHUNK_BYTES:
            chunks.append(current)
            current, size = ([], []), 0
        current[0].append(event)
        current[1].append(text)
        size += len(text)
    if current[0]:
        chunks.append(current)
    return chunks


def chunk_item(task_id: str, events: Sequence[TaskEvent], texts: Sequence[str] | None = None) -> dict[str, Any]:
    """The item holding `events` (`texts`: their JSON, if already encoded)."""
    body = "[" + ",".join(texts if texts is not None else encode(events)) + "]"
    expires = int(time.time()) + get_settings().output_retention_days * 86400
    return {
        "task_id": {"S": task_id},
        "seq": {"N": str(events[0].seq)},
        "last_seq": {"N": str(events[-1].seq)},
        "events": {"S": body},
        "expires_at": {"N": str(expires)},
    }


def put_chunk(task_id: str, events: Sequence[TaskEvent], texts: Sequence[str] | None = None) -> bool:
    """Store a chunk under its first seq, never over one already stored: a runner that lost its task (its
    heartbeat went stale and the sweeper gave the task to another) cannot write into the new run's numbering.
    False when a chunk with that first seq exists (that runner's, or this write's own retry that had landed)."""
    if not events:
        return True
    try:
        aws.dynamodb().put_item(
            TableName=table(),
            Item=chunk_item(task_id, events, texts),
            ConditionExpression="attribute_not_exists(seq)",
        )
    except ClientError as exc:
        if condition_failed(exc):
            return False
        raise
    return True


def put_chunk_part(task_id: str, events: Sequence[TaskEvent]) -> TransactWriteItemTypeDef:
    """A transaction part storing `events` (with the records that create the task: its first events)."""
    return {"Put": {"TableName": table(), "Item": chunk_item(task_id, events)}}


def delete_chunk_part(task_id: str, seq: int) -> TransactWriteItemTypeDef:
    return {"Delete": {"TableName": table(), "Key": {"task_id": {"S": task_id}, "seq": {"N": str(seq)}}}}


def read_events(task_id: str, after_seq: int = 0) -> list[TaskEvent]:
    """Every stored event with seq > after_seq, in order."""
    return read_page(task_id, after_seq)[0]


def read_page(
    task_id: str, after_seq: int = 0, *, max_events: int | None = None, max_bytes: int | None = None
) -> tuple[list[TaskEvent], bool]:
    """Stored events with seq > after_seq, in order, up to the limits; and whether more remain."""
    events: list[TaskEvent] = []
    size = 0
    pages = query_pages(
        TableName=table(),
        KeyConditionExpression="task_id = :t",
        ExpressionAttributeValues=values(t=task_id),
        ConsistentRead=True,
    )
    for page in pages:  # (read lazily: a full page stops here, reading no further chunk)
        for item in page.get("Items", []):
            if int(item["last_seq"]["N"]) <= after_seq:
                continue
            for raw in json.loads(item["events"]["S"]):
                if raw["seq"] <= after_seq:
                    continue
                if max_bytes:
                    size += len(json.dumps(raw))
                if events and ((max_events and len(events) >= max_events) or (max_bytes and size > max_bytes)):
                    return events, True
                events.append(TaskEvent.model_validate(raw))
    return events, False
