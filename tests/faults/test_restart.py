"""Restart the local stack mid-run (SIGTERM, then start again on the same data directory): no task, output or
cost record is lost or duplicated.

Six chat tasks in three sessions (two messages each, so the second of each session waits for the first),
MAX_CONCURRENT_TASKS=2: at the SIGTERM some are finished, some streaming, some queued. Running CLIs are
interrupted and their tasks booked as stopped; queued tasks run after the restart. Checked through the API:
every task is there once, finished ones are unchanged by the restart, every task's output is numbered 1..n
without gaps or repeats and ends with exactly one terminal event, each session's totals are the sum of its
tasks, and the cost counters are the sum of every task's cost.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import RunningMachine, start_machine
from tests.faults import TERMINAL, TERMINAL_EVENTS, as_dict, chat, get_task, paged, seqs, wait_finished, wait_for

pytestmark = pytest.mark.e2e


def snapshot(machine: RunningMachine, task_ids: list[str]) -> dict[str, dict[str, Any]]:
    return {task_id: get_task(machine, task_id) for task_id in task_ids}


def check_output(task_id: str, detail: dict[str, Any]) -> None:
    events = detail["output"]
    numbers = seqs(events)
    assert numbers == list(range(1, len(numbers) + 1)), (task_id, numbers)
    kinds = [e["type"] for e in events]
    if detail["task"]["status"] in TERMINAL:
        assert sum(k in TERMINAL_EVENTS for k in kinds) == 1 and kinds[-1] in TERMINAL_EVENTS, (
            task_id,
            detail["task"]["status"],
            detail["task"].get("error"),
            kinds,
        )
        assert detail["task"]["last_seq"] == numbers[-1], (task_id, detail["task"]["last_seq"], numbers[-1])


def test_sigterm_mid_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    machine = start_machine(tmp_path, extra_env={"MAX_CONCURRENT_TASKS": "2"})
    created: list[dict[str, Any]] = []
    try:
        for n in range(3):
            first = chat(machine, f"[[lines:40:50]] session {n} first")
            created.append(first)
            created.append(chat(machine, f"[[slow:1]] [[text]] session {n} second", session_id=first["session_id"]))
        task_ids = [c["task_id"] for c in created]

        def streaming() -> bool:
            details = snapshot(machine, task_ids)
            statuses = [d["task"]["status"] for d in details.values()]
            running = [d for d in details.values() if d["task"]["status"] == "running" and len(d["output"]) > 3]
            return bool(running) and "queued" in statuses

        wait_for(streaming, timeout=60, what="a task streaming while another is queued")
        before = snapshot(machine, task_ids)
    finally:
        assert machine.stop(signal.SIGTERM) == 0, machine.logs()[-3000:]
    assert "saved state" in machine.logs()
    finished_before = {
        t: d
        for t, d in before.items()
        if d["task"]["status"] in TERMINAL and d["output"] and d["output"][-1]["type"] in TERMINAL_EVENTS
    }

    again = start_machine(tmp_path, port=machine.port)
    try:
        restored = snapshot(again, task_ids)  # every task survived the restart
        for task_id, detail in finished_before.items():
            assert restored[task_id]["task"] == detail["task"], task_id
            assert restored[task_id]["output"] == detail["output"], task_id
        final = {t: wait_finished(again, t, timeout=120) for t in task_ids}

        listed = paged(again, "/api/tasks", limit=500)
        assert sorted(t["task_id"] for t in listed) == sorted(task_ids)  # nothing lost, nothing extra
        for task_id, detail in final.items():
            check_output(task_id, detail)
        for task_id, detail in finished_before.items():  # not run again, not booked again
            assert final[task_id]["task"] == detail["task"], task_id
            assert final[task_id]["output"] == detail["output"], task_id
        statuses = {t: d["task"]["status"] for t, d in final.items()}
        assert set(statuses.values()) <= {"completed", "stopped"}, statuses
        assert "stopped" in statuses.values() or len(finished_before) == len(task_ids), statuses

        # Costs: each session's totals are the sum of its tasks; the day counters the sum of all tasks.
        costs = {t: float(d["task"]["cost_usd"]) for t, d in final.items()}
        for session_id in {c["session_id"] for c in created}:
            status, body = again.api("GET", f"/api/sessions/{session_id}")
            assert status == 200
            session = as_dict(body)["session"]
            mine = [t for t, d in final.items() if d["task"]["session_id"] == session_id]
            assert session["task_count"] == len(mine) == 2, session
            assert session["total_cost_usd"] == pytest.approx(sum(costs[t] for t in mine)), session
        status, body = again.api("GET", "/api/costs?days=2")
        assert status == 200
        by_day = as_dict(body)["by_day"]
        assert sum(day["cost_usd"] for day in by_day) == pytest.approx(sum(costs.values()))
        assert sum(day["tasks"] for day in by_day) == len(task_ids)  # each task booked exactly once
        assert sum(costs.values()) > 0
    finally:
        again.stop()
