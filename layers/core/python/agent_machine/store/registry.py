"""Registry table: agents, skills and webhooks defined at run time, and an audit trail of changes.

Keys: PK kind ("agent" | "skill" | "webhook" | "audit"), SK name (for audit: "<iso time>#<kind>#<name>").
Listing a kind is one Query; reading one entry is one GetItem.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from botocore.exceptions import ClientError
from pydantic import BaseModel

from agent_machine import aws
from agent_machine.models import iso, utcnow
from agent_machine.settings import get_settings
from agent_machine.store._dynamo import from_item, model_to_item, query_pages, values

Kind = Literal["agent", "skill", "webhook"]
M = TypeVar("M", bound=BaseModel)


def table() -> str:
    return get_settings().registry_table


def get(kind: Kind, name: str, model: type[M]) -> M | None:
    resp = aws.dynamodb().get_item(
        TableName=table(), Key={"kind": {"S": kind}, "name": {"S": name}}, ConsistentRead=True
    )
    item = resp.get("Item")
    return model.model_validate(from_item(item)) if item else None


def list_kind(kind: Kind, model: type[M]) -> list[M]:
    pages = query_pages(
        TableName=table(),
        KeyConditionExpression="kind = :k",
        ExpressionAttributeValues=values(k=kind),
        ConsistentRead=True,
    )
    return [model.model_validate(from_item(i)) for page in pages for i in page.get("Items", [])]


def put(kind: Kind, entry: BaseModel, *, actor: str, create_only: bool = False) -> bool:
    """Write an entry and its audit record together. False if create_only and the name is taken."""
    name = str(getattr(entry, "name"))  # noqa: B009 - every registry model has a name
    put_item: Any = {"TableName": table(), "Item": model_to_item(entry, kind=kind)}
    if create_only:
        put_item["ConditionExpression"] = "attribute_not_exists(#n)"
        put_item["ExpressionAttributeNames"] = {"#n": "name"}
    try:
        aws.dynamodb().transact_write_items(TransactItems=[{"Put": put_item}, _audit(kind, name, "put", actor)])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "TransactionCanceledException":
            return False
        raise
    return True


def delete(kind: Kind, name: str, *, actor: str) -> bool:
    try:
        aws.dynamodb().transact_write_items(
            TransactItems=[
                {
                    "Delete": {
                        "TableName": table(),
                        "Key": {"kind": {"S": kind}, "name": {"S": name}},
                        "ConditionExpression": "attribute_exists(#n)",
                        "ExpressionAttributeNames": {"#n": "name"},
                    }
                },
                _audit(kind, name, "delete", actor),
            ]
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "TransactionCanceledException":
            return False
        raise
    return True


def _audit(kind: str, name: str, action: str, actor: str) -> Any:
    now = iso(utcnow())
    return {
        "Put": {
            "TableName": table(),
            "Item": {
                "kind": {"S": "audit"},
                "name": {"S": f"{now}#{kind}#{name}"},
                "entry_kind": {"S": kind},
                "entry_name": {"S": name},
                "action": {"S": action},
                "actor": {"S": actor},
                "at": {"S": now},
            },
        }
    }


def audit_log(limit: int = 100) -> list[dict[str, Any]]:
    resp = aws.dynamodb().query(
        TableName=table(),
        KeyConditionExpression="kind = :k",
        ExpressionAttributeValues=values(k="audit"),
        ScanIndexForward=False,
        Limit=limit,
    )
    return [from_item(i) for i in resp.get("Items", [])]
