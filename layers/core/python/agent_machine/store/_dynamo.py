"""What the stores share: item (de)serialisation, pagination (boto3's paginator; cursors checked here), and the
one place botocore's write errors are read and turned into the domain-named errors of `errors`."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from pydantic import BaseModel

from agent_machine import aws
from agent_machine.store.errors import BadCursor, Guard, Refused, WriteConflict

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, QueryOutputTypeDef, TransactWriteItemTypeDef

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()

Item = dict[str, "AttributeValueTypeDef"]


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | set | tuple):
        return [_plain(v) for v in value]
    return value


def to_attr(value: Any) -> AttributeValueTypeDef:
    return _serializer.serialize(json.loads(json.dumps(value, default=str), parse_float=Decimal))


def model_to_item(model: BaseModel, **extra: Any) -> Item:
    data = model.model_dump(mode="json")
    data.update(extra)
    return {k: to_attr(v) for k, v in data.items() if v is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(_deserializer.deserialize(v)) for k, v in item.items()}


def encode_cursor(key: dict[str, Any] | None) -> str | None:
    if not key:
        return None
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode()


def decode_cursor(cursor: str | None, required: dict[str, str | None]) -> dict[str, Any] | None:
    """The ExclusiveStartKey a cursor holds, checked before it reaches DynamoDB: exactly the key the listing
    produces (`required`: attribute name -> the value it must have, None: any string), string attributes only.
    Anything else is BadCursor, never a DynamoDB error (or its emulator's) choking on a forged key."""
    if not cursor:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError) as exc:
        raise BadCursor("cursor is not valid") from exc
    if not isinstance(key, dict) or set(key) != set(required):
        raise BadCursor("cursor is not valid for this listing")
    for name, expected in required.items():
        value = key[name]
        if not (isinstance(value, dict) and set(value) == {"S"} and isinstance(value["S"], str)):
            raise BadCursor("cursor is not valid for this listing")
        if expected is not None and value["S"] != expected:
            raise BadCursor("cursor belongs to another listing")
    return key


def query_pages(**kwargs: Any) -> Iterator[QueryOutputTypeDef]:
    """Every page of a Query, read as it is consumed (stopping early reads no further page)."""
    yield from aws.dynamodb().get_paginator("query").paginate(**kwargs)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def condition_failed(exc: ClientError) -> bool:
    """A single conditional write (PutItem, UpdateItem, DeleteItem) whose condition did not hold."""
    return _error_code(exc) == "ConditionalCheckFailedException"


def transact(
    parts: Sequence[TransactWriteItemTypeDef], guards: Sequence[Guard | None], *, conflicts: bool = True
) -> None:
    """One TransactWriteItems. `guards[i]` names what a failure of part i's condition means (None: it has none).
    Raises Refused with every guard that failed; WriteConflict when another transaction got in the way (with
    `conflicts=False`, botocore's error as it is: for callers that read it so)."""
    try:
        aws.dynamodb().transact_write_items(TransactItems=list(parts))
    except ClientError as exc:
        if _error_code(exc) != "TransactionCanceledException":
            raise
        reasons = exc.response.get("CancellationReasons", [])
        codes = [r.get("Code") for r in reasons]
        failed = [g for g, code in zip(guards, codes, strict=False) if g and code == "ConditionalCheckFailed"]
        if "ConditionalCheckFailed" in codes or not reasons:
            raise Refused(*failed) from exc
        if conflicts and "TransactionConflict" in codes:
            raise WriteConflict("another transaction wrote the same items") from exc
        raise


def values(**kwargs: Any) -> dict[str, AttributeValueTypeDef]:
    """ExpressionAttributeValues from keyword arguments: values(status="queued") -> {":status": {...}}."""
    return {f":{k}": to_attr(v) for k, v in kwargs.items()}
