"""Costs table: atomic ADD counters per day, and per agent / source / session within a day.

Keys: PK pk = "DAY#YYYY-MM-DD", SK sk = "TOTAL" | "AGENT#<name>" | "SOURCE#<source>" | "SESSION#<id>".
One Query on a day's pk gives that day's total and every breakdown; a month is ~30 such queries.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from agent_machine import aws
from agent_machine.models import CostRecord, utcnow
from agent_machine.settings import get_settings
from agent_machine.store._dynamo import from_item, values

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef


def table() -> str:
    return get_settings().costs_table


def today() -> str:
    return utcnow().date().isoformat()


def add_cost_items(
    *, day: str, agent: str, source: str, session_id: str, cost_usd: float, input_tokens: int, output_tokens: int
) -> list[TransactWriteItemTypeDef]:
    parts: list[TransactWriteItemTypeDef] = []
    for sk in ("TOTAL", f"AGENT#{agent}", f"SOURCE#{source}", f"SESSION#{session_id}"):
        parts.append(
            {
                "Update": {
                    "TableName": table(),
                    "Key": {"pk": {"S": f"DAY#{day}"}, "sk": {"S": sk}},
                    "UpdateExpression": "ADD cost_usd :c, tasks :one, input_tokens :i, output_tokens :o",
                    "ExpressionAttributeValues": values(c=cost_usd, one=1, i=input_tokens, o=output_tokens),
                }
            }
        )
    return parts


def day_records(day: str) -> list[CostRecord]:
    records: list[CostRecord] = []
    kwargs: dict[str, Any] = {
        "TableName": table(),
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": values(pk=f"DAY#{day}"),
    }
    while True:
        resp = aws.dynamodb().query(**kwargs)
        for raw in resp.get("Items", []):
            item = from_item(raw)
            records.append(
                CostRecord(
                    day=day,
                    key=item["sk"],
                    **{k: item.get(k, 0) for k in ("cost_usd", "tasks", "input_tokens", "output_tokens")},
                )
            )
        if "LastEvaluatedKey" not in resp:
            return records
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


def day_total(day: str) -> float:
    resp = aws.dynamodb().get_item(
        TableName=table(), Key={"pk": {"S": f"DAY#{day}"}, "sk": {"S": "TOTAL"}}, ConsistentRead=True
    )
    item = resp.get("Item")
    return float(from_item(item).get("cost_usd", 0.0)) if item else 0.0


def days_back(n: int, end: date | None = None) -> list[str]:
    last = end or utcnow().date()
    return [(last - timedelta(days=i)).isoformat() for i in range(n)]
