"""GET /api/status: the machine at a glance (queue depth, running and queued tasks, sessions, today's cost)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from agent_machine import queue
from agent_machine.models import TaskStatus
from agent_machine.settings import get_settings
from fastapi import APIRouter, Security
from pydantic import BaseModel

from machine_api import __version__
from machine_api.deps import bearer_scheme

router = APIRouter(prefix="/api", tags=["status"], dependencies=[Security(bearer_scheme)])


class QueueDepth(BaseModel):
    waiting: int | None
    in_flight: int | None


class Budgets(BaseModel):
    daily_usd: float
    task_usd: float
    spent_today_usd: float
    remaining_today_usd: float


class Status(BaseModel):
    machine_id: str
    version: str
    queue: QueueDepth
    queued_tasks: int
    running_tasks: int
    sessions: int
    cost_today_usd: float
    max_concurrent_tasks: int
    budgets: Budgets


def budgets(spent_today: float) -> Budgets:
    settings = get_settings()
    return Budgets(
        daily_usd=settings.daily_budget_usd,
        task_usd=settings.task_budget_usd,
        spent_today_usd=round(spent_today, 6),
        remaining_today_usd=round(max(0.0, settings.daily_budget_usd - spent_today), 6),
    )


def _depth() -> QueueDepth:
    from botocore.exceptions import BotoCoreError, ClientError  # lazy: keeps botocore off the API cold start

    try:
        depth = queue.depth()
    except (ClientError, BotoCoreError, ValueError):  # the dashboard still shows the rest
        return QueueDepth(waiting=None, in_flight=None)
    return QueueDepth(waiting=depth["waiting"], in_flight=depth["in_flight"])


@router.get("/status", response_model=Status, summary="Machine status")
def status() -> Status:
    from agent_machine.store import costs, sessions, tasks  # lazy: keeps boto3 off the API cold start

    settings = get_settings()
    with ThreadPoolExecutor(max_workers=5) as pool:  # five independent reads: wait for the slowest, not the sum
        depth = pool.submit(_depth)
        queued = pool.submit(tasks.count_by_status, TaskStatus.QUEUED)
        running = pool.submit(tasks.count_by_status, TaskStatus.RUNNING)
        session_count = pool.submit(sessions.count)
        spent = pool.submit(costs.day_total, costs.today())
    return Status(
        machine_id=settings.machine_id,
        version=__version__,
        queue=depth.result(),
        queued_tasks=queued.result(),
        running_tasks=running.result(),
        sessions=session_count.result(),
        cost_today_usd=round(spent.result(), 6),
        max_concurrent_tasks=settings.max_concurrent_tasks,
        budgets=budgets(spent.result()),
    )
