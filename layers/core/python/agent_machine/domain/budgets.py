"""Spending caps: a per-task cap handed to the CLI, and a daily cap checked before a task starts (and, at the
wire, by the runner's model proxy for every model request)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from agent_machine.settings import get_settings
from agent_machine.store import costs

# The last read of today's total in this process: ((costs table, day), monotonic time, spent).
_last_read: tuple[tuple[str, str], float, float] | None = None


@dataclass(frozen=True)
class BudgetCheck:
    allowed: bool
    spent_today: float
    daily_cap: float
    reason: str = ""


def _read_today() -> float:
    global _last_read
    day = costs.today()
    spent = costs.day_total(day)
    _last_read = ((costs.table(), day), time.monotonic(), spent)
    return spent


def check_daily() -> BudgetCheck:
    cap = get_settings().daily_budget_usd
    spent = _read_today()
    if spent >= cap:
        return BudgetCheck(False, spent, cap, f"daily budget reached: ${spent:.2f} spent of ${cap:.2f} today")
    return BudgetCheck(True, spent, cap)


def spent_today(max_age_seconds: float) -> float:
    """What finished tasks booked today. A read this process made under `max_age_seconds` ago is reused: the
    runner checks the day just before it starts a task, and the task's model proxy wants that same figure."""
    last = _last_read
    if last is not None and last[0] == (costs.table(), costs.today()) and time.monotonic() - last[1] < max_age_seconds:
        return last[2]
    return _read_today()
