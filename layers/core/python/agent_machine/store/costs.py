"""Costs table: atomic ADD counters per day, and per agent / source / session within a day.

Keys: PK pk = "DAY#YYYY-MM-DD", SK sk = "TOTAL" | "AGENT#<name>" | "SOURCE#<source>" | "SESSION#<id>".
One Query on a day's pk gives that day's total and every breakdown; a month is ~30 such queries.

The day's TOTAL item also holds the caps of the tasks running now (`reserved_usd`, `reservations`) and
`committed_usd` = booked cost + reserved: the one figure a task's start is checked against, so the check is a
single condition (DynamoDB compares an attribute with a value; it cannot add two attributes in a condition).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from agent_machine import aws
from agent_machine.models import CostRecord, utcnow
from agent_machine.settings import get_settings
from agent_machine.store._dynamo import from_item, query_pages, values

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, TransactWriteItemTypeDef


def table() -> str:
    return get_settings().costs_table


def today() -> str:
    return utcnow().date().isoformat()


def _n(value: float | Decimal) -> AttributeValueTypeDef:
    """A DynamoDB number written exactly as the decimal the float prints as (0.1 stays 0.1, never 0.1000…01)."""
    return {"N": str(value if isinstance(value, Decimal) else Decimal(repr(value)))}


def _total_key(day: str) -> dict[str, Any]:
    return {"pk": {"S": f"DAY#{day}"}, "sk": {"S": "TOTAL"}}


@dataclass(frozen=True)
class Held:
    """A running task's hold on a day's budget, as recorded on the task (`reserved_usd`, `reserved_day`)."""

    usd: float
    day: str


def add_cost_items(
    *,
    day: str,
    agent: str,
    source: str,
    session_id: str,
    cost_usd: float,
    input_tokens: int,
    output_tokens: int,
    release: Held | None = None,
) -> list[TransactWriteItemTypeDef]:
    """Book a task's cost on `day`, and give back what it held (`release`), in the same transaction."""
    parts: list[TransactWriteItemTypeDef] = []
    committed = Decimal(repr(cost_usd))
    total_expression = "ADD cost_usd :c, tasks :one, input_tokens :i, output_tokens :o, committed_usd :k"
    total_values = values(c=cost_usd, one=1, i=input_tokens, o=output_tokens)
    if release is not None and release.day == day:
        # One item, one update: the hold goes and the cost comes in the same ADD.
        committed -= Decimal(repr(release.usd))
        total_expression += ", reserved_usd :r, reservations :minus"
        total_values.update({":r": _n(-Decimal(repr(release.usd))), ":minus": {"N": "-1"}})
    elif release is not None:
        parts.append(release_item(release))  # held on an earlier day (a run across midnight)
    total_values[":k"] = _n(committed)
    parts.append(
        {
            "Update": {
                "TableName": table(),
                "Key": _total_key(day),
                "UpdateExpression": total_expression,
                "ExpressionAttributeValues": total_values,
            }
        }
    )
    for sk in (f"AGENT#{agent}", f"SOURCE#{source}", f"SESSION#{session_id}"):
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


def reserve_item(day: str, usd: float, daily_cap_usd: float) -> TransactWriteItemTypeDef:
    """Hold `usd` of `day`'s budget for a task that starts, only if what is booked and held already leaves room
    for it (committed + usd <= daily cap). Part of the transaction that marks the task running."""
    room = Decimal(repr(daily_cap_usd)) - Decimal(repr(usd))
    return {
        "Update": {
            "TableName": table(),
            "Key": _total_key(day),
            "UpdateExpression": "ADD committed_usd :u, reserved_usd :u, reservations :one",
            "ConditionExpression": "attribute_not_exists(committed_usd) OR committed_usd <= :room",
            "ExpressionAttributeValues": {":u": _n(usd), ":one": {"N": "1"}, ":room": _n(room)},
        }
    }


def release_item(held: Held) -> TransactWriteItemTypeDef:
    """Give back a hold without booking anything (a task that goes back to the queue, or ends on another day)."""
    minus = _n(-Decimal(repr(held.usd)))
    return {
        "Update": {
            "TableName": table(),
            "Key": _total_key(held.day),
            "UpdateExpression": "ADD committed_usd :r, reserved_usd :r, reservations :minus",
            "ExpressionAttributeValues": {":r": minus, ":minus": {"N": "-1"}},
        }
    }


@dataclass(frozen=True)
class DayTotal:
    """A day's booked cost and what running tasks hold of it."""

    spent_usd: float = 0.0
    reserved_usd: float = 0.0
    reservations: int = 0

    @property
    def committed_usd(self) -> float:
        return self.spent_usd + self.reserved_usd


def day_records(day: str) -> list[CostRecord]:
    records: list[CostRecord] = []
    pages = query_pages(
        TableName=table(), KeyConditionExpression="pk = :pk", ExpressionAttributeValues=values(pk=f"DAY#{day}")
    )
    for page in pages:
        for raw in page.get("Items", []):
            item = from_item(raw)
            records.append(
                CostRecord(
                    day=day,
                    key=item["sk"],
                    **{k: item.get(k, 0) for k in ("cost_usd", "tasks", "input_tokens", "output_tokens")},
                )
            )
    return records


def day_total(day: str) -> float:
    return day_figures(day).spent_usd


def day_figures(day: str) -> DayTotal:
    resp = aws.dynamodb().get_item(TableName=table(), Key=_total_key(day), ConsistentRead=True)
    item = from_item(resp["Item"]) if resp.get("Item") else {}
    return DayTotal(
        spent_usd=float(item.get("cost_usd", 0.0)),
        # (never below zero: a hold released on a day whose item was written before holds existed)
        reserved_usd=max(0.0, float(item.get("reserved_usd", 0.0))),
        reservations=max(0, int(item.get("reservations", 0))),
    )


def days_back(n: int, end: date | None = None) -> list[str]:
    last = end or utcnow().date()
    return [(last - timedelta(days=i)).isoformat() for i in range(n)]
