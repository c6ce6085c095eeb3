"""Spending caps: a per-task cap handed to the CLI, and a daily cap checked before a task starts."""

from __future__ import annotations

from dataclasses import dataclass

from agent_machine.settings import get_settings
from agent_machine.store import costs


@dataclass(frozen=True)
class BudgetCheck:
    allowed: bool
    spent_today: float
    daily_cap: float
    reason: str = ""


def check_daily() -> BudgetCheck:
    cap = get_settings().daily_budget_usd
    spent = costs.day_total(costs.today())
    if spent >= cap:
        return BudgetCheck(False, spent, cap, f"daily budget reached: ${spent:.2f} spent of ${cap:.2f} today")
    return BudgetCheck(True, spent, cap)
