"""GET /api/costs: today, this month, by day for the last N days, and by agent / source / session over them."""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Query, Security
from pydantic import BaseModel

from machine_api.deps import bearer_scheme
from machine_api.status import Budgets, budgets

if TYPE_CHECKING:
    from agent_machine.models import CostRecord

router = APIRouter(prefix="/api", tags=["costs"], dependencies=[Security(bearer_scheme)])


class CostBucket(BaseModel):
    key: str
    cost_usd: float = 0.0
    tasks: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


class DayCost(CostBucket):
    pass


class Costs(BaseModel):
    today: DayCost
    month: CostBucket
    days: int
    by_day: list[DayCost]  # oldest first, one entry per day (zeros included)
    by_agent: list[CostBucket]
    by_source: list[CostBucket]
    by_session: list[CostBucket]  # the top sessions by cost
    budgets: Budgets


def _add(bucket: CostBucket, record: CostRecord) -> None:
    bucket.cost_usd = round(bucket.cost_usd + record.cost_usd, 6)
    bucket.tasks += record.tasks
    bucket.input_tokens += record.input_tokens
    bucket.output_tokens += record.output_tokens


def _ranked(buckets: dict[str, CostBucket], limit: int = 100) -> list[CostBucket]:
    return sorted(buckets.values(), key=lambda b: (-b.cost_usd, b.key))[:limit]


@router.get("/costs", response_model=Costs, summary="Spending by day, agent, source and session")
def costs_summary(
    days: Annotated[int, Query(ge=1, le=366)] = 30, sessions: Annotated[int, Query(ge=1, le=500)] = 50
) -> Costs:
    from agent_machine.store import costs  # lazy: keeps boto3 off the API cold start

    today = costs.today()
    month_prefix = today[:7]
    span = max(days, int(today[8:10]))  # enough days to cover this month too
    day_list = costs.days_back(span)
    with ThreadPoolExecutor(max_workers=8) as pool:  # one Query per day, in parallel
        per_day = dict(zip(day_list, pool.map(costs.day_records, day_list), strict=True))
    window = set(day_list[:days])
    by_day: list[DayCost] = []
    month = CostBucket(key=month_prefix)
    groups: dict[str, dict[str, CostBucket]] = {"AGENT": {}, "SOURCE": {}, "SESSION": {}}
    totals: dict[str, DayCost] = defaultdict(lambda: DayCost(key=""))
    for day in day_list:
        total = DayCost(key=day)
        for record in per_day[day]:
            if record.key == "TOTAL":
                _add(total, record)
                continue
            kind, _, name = record.key.partition("#")
            if day in window and kind in groups:
                bucket = groups[kind].setdefault(name, CostBucket(key=name))
                _add(bucket, record)
        totals[day] = total
        if day.startswith(month_prefix):
            for record in per_day[day]:
                if record.key == "TOTAL":
                    _add(month, record)
        if day in window:
            by_day.append(total)
    by_day.reverse()
    return Costs(
        today=totals[today],
        month=month,
        days=days,
        by_day=by_day,
        by_agent=_ranked(groups["AGENT"]),
        by_source=_ranked(groups["SOURCE"]),
        by_session=_ranked(groups["SESSION"], sessions),
        budgets=budgets(totals[today].cost_usd),
    )
