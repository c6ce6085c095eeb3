"""Item (de)serialisation and pagination cursors shared by the stores."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from pydantic import BaseModel

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

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


class BadCursor(ValueError):
    pass


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError) as exc:
        raise BadCursor("cursor is not valid") from exc
    if not isinstance(key, dict):
        raise BadCursor("cursor is not valid")
    return key


def values(**kwargs: Any) -> dict[str, AttributeValueTypeDef]:
    """ExpressionAttributeValues from keyword arguments: values(status="queued") -> {":status": {...}}."""
    return {f":{k}": to_attr(v) for k, v in kwargs.items()}
