"""Spending caps: a per-task cap handed to the CLI, and a daily cap that holds however many tasks start at once.

- Every task that starts *holds* its cap (at most the daily cap) of today's budget: its claim (queued -> running,
  domain/lifecycle.claim) and the hold are one DynamoDB transaction, and the hold is taken only if what is booked
  today plus what running tasks hold leaves room for it (store/costs.reserve_item). Ten tasks started at once on a
  day with room for three caps: three run, seven are refused (failed, error_kind "budget", with the figures).
- The hold is given back when the task ends, in the transaction that books its real cost (lifecycle.finish), so
  what it did not spend is free again at once. A task failed by someone else (dead-letter, lost runner) gives it
  back the same way. A hold is on the UTC day the task started: a new day starts with nothing held.
- `check_daily` is the cheap check before a start (and before a child is delegated): refused once what finished
  tasks booked reaches the cap.
- At the wire, the task's model proxy refuses a request once this task's spend plus what other tasks booked or
  hold reaches the daily cap (`committed_by_others`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from agent_machine.settings import get_settings
from agent_machine.store import costs

# The last read of today's figures in this process: ((costs table, day), monotonic time, figures).
_last_read: tuple[tuple[str, str], float, costs.DayTotal] | None = None


@dataclass(frozen=True)
class BudgetCheck:
    allowed: bool
    spent_today: float
    daily_cap: float
    reason: str = ""
    reserved_today: float = 0.0  # held by running tasks


def task_cap(task_cap_usd: float | None, agent_cap_usd: float | None) -> float:
    """The cap a run applies (--max-budget-usd and the model proxy): the task's, else its agent's, else
    TASK_BUDGET_USD."""
    return task_cap_usd or agent_cap_usd or get_settings().task_budget_usd


def hold_for(cap_usd: float) -> float:
    """What a task with this cap holds of the day: its cap, but never more than the whole day (a task whose cap
    is above DAILY_BUDGET_USD may still run, alone, and the proxy stops it at the day's cap)."""
    return min(cap_usd, get_settings().daily_budget_usd)


def _read_today() -> costs.DayTotal:
    global _last_read
    day = costs.today()
    figures = costs.day_figures(day)
    _last_read = ((costs.table(), day), time.monotonic(), figures)
    return figures


def _today(max_age_seconds: float) -> costs.DayTotal:
    last = _last_read
    if last is not None and last[0] == (costs.table(), costs.today()) and time.monotonic() - last[1] < max_age_seconds:
        return last[2]
    return _read_today()


def check_daily() -> BudgetCheck:
    cap = get_settings().daily_budget_usd
    figures = _read_today()
    spent = figures.spent_usd
    if spent >= cap:
        return BudgetCheck(
            False,
            spent,
            cap,
            f"daily budget reached: ${spent:.2f} spent of ${cap:.2f} today",
            reserved_today=figures.reserved_usd,
        )
    return BudgetCheck(True, spent, cap, reserved_today=figures.reserved_usd)


def spent_today(max_age_seconds: float) -> float:
    """What finished tasks booked today. A read this process made under `max_age_seconds` ago is reused: the
    runner checks the day just before it starts a task, and the task's model proxy wants that same figure."""
    return _today(max_age_seconds).spent_usd


def committed_by_others(own_cap_usd: float, max_age_seconds: float) -> float:
    """What counts against today's cap besides a running task's own spend: what tasks booked plus what running
    tasks hold, less this task's own hold (`hold_for(own_cap_usd)`, taken when it was claimed). Reused like
    `spent_today`."""
    figures = _today(max_age_seconds)
    return max(figures.spent_usd, figures.committed_usd - hold_for(own_cap_usd))


def note_held(day: str, usd: float, *, since: float) -> None:
    """This process's claim, begun at monotonic time `since`, took a hold: cached figures read before it (by the
    start check) are brought up to date, so the task's model proxy does not count its own hold as another's."""
    global _last_read
    last = _last_read
    if last is not None and last[0] == (costs.table(), day) and last[1] < since:
        figures = last[2]
        held = costs.DayTotal(figures.spent_usd, figures.reserved_usd + usd, figures.reservations + 1)
        _last_read = (last[0], last[1], held)


def usd(value: float) -> str:
    """Dollars to the cent, or to the micro-dollar when cents would round (a $0.505 cap is not "$0.51")."""
    cents = f"{value:.2f}"
    return cents if abs(float(cents) - value) < 1e-9 else f"{value:.6f}".rstrip("0")


def refusal(day: str, hold_usd: float) -> str:
    """Why a task's hold did not fit today, with the figures (read again: they are what refused it)."""
    cap = get_settings().daily_budget_usd
    figures = _read_today() if day == costs.today() else costs.day_figures(day)
    running = f"{figures.reservations} running task{'s' if figures.reservations != 1 else ''}"
    return (
        f"daily budget reached: ${usd(figures.spent_usd)} spent and ${usd(figures.reserved_usd)} held by {running} "
        f"of ${usd(cap)} today (DAILY_BUDGET_USD); this task's cap of ${usd(hold_usd)} does not fit. Each running "
        "task holds its cap until it ends, and gives back what it did not spend"
    )
