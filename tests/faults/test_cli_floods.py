"""A CLI that floods stdout (100 MB of lines) or never writes a newline (50 MB): the runner's memory stays bounded
and the run ends cleanly (the task reaches a terminal state with its end stored).

The runner runs inside the local runtime's process, so that process's resident memory is what a flood could
blow up: it is sampled (VmRSS) every 100 ms while each task runs, and its peak (VmHWM) read at the end.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import RunningMachine, start_machine
from tests.faults import TERMINAL, TERMINAL_EVENTS, as_dict, chat, proc_status_kb, wait_finished, wait_for

pytestmark = pytest.mark.e2e

BOUND_MB = 200


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_kb = max(self.peak_kb, proc_status_kb(self.pid, "VmRSS"))
            except (OSError, KeyError):
                return
            self._stop.wait(0.1)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(2)


def light_wait(machine: RunningMachine, task_id: str, session_id: str, *, timeout: float) -> dict[str, Any]:
    """Wait for the task's end without reading its (large) output through the API, which runs in the very
    process being measured: the session's task listing for the status, then only the last stored events."""

    def ended() -> dict[str, Any] | None:
        items = as_dict(machine.api("GET", f"/api/tasks?session_id={session_id}&limit=5")[1])["items"]
        task = next(t for t in items if t["task_id"] == task_id)
        if task["status"] not in TERMINAL:
            return None
        tail = as_dict(machine.api("GET", f"/api/tasks/{task_id}?after_seq={max(0, task['last_seq'] - 1)}")[1])
        return task if any(e["type"] in TERMINAL_EVENTS for e in tail["output"]) else None

    return dict(wait_for(ended, timeout=timeout, interval=0.5, what=f"task {task_id} finished"))


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMachine]:
    running = start_machine(
        tmp_path_factory.mktemp("floods"),
        persist=False,
        extra_env={"LOG_LEVEL": "WARNING", "MAX_CONCURRENT_TASKS": "1"},
    )
    try:
        warm = chat(running, "[[lines:200]] warm up the runner")  # imports, clients, first flushes
        wait_finished(running, warm["task_id"], timeout=60)
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize(
    ("prompt", "statuses"),
    [
        ("[[flood:100]] a firehose", {"completed"}),
        ("[[nonewline:50]] one endless line", {"completed", "failed"}),
    ],
    ids=["flood-100MB", "no-newline-50MB"],
)
def test_memory_stays_bounded_and_the_run_ends(machine: RunningMachine, prompt: str, statuses: set[str]) -> None:
    pid = machine.process.pid
    before_kb = proc_status_kb(pid, "VmRSS")
    hwm_before_kb = proc_status_kb(pid, "VmHWM")
    with RssSampler(pid) as sampler:
        created = chat(machine, prompt)
        task = light_wait(machine, created["task_id"], created["session_id"], timeout=240)
    hwm_after_kb = proc_status_kb(pid, "VmHWM")
    assert task["status"] in statuses, (task["status"], task.get("error"))

    growth_mb = (sampler.peak_kb - before_kb) / 1024
    hwm_growth_mb = (hwm_after_kb - max(hwm_before_kb, before_kb)) / 1024
    print(
        f"{prompt}: RSS {before_kb // 1024} MB before, peak {sampler.peak_kb // 1024} MB "
        f"(+{growth_mb:.0f} MB), VmHWM +{max(0.0, hwm_growth_mb):.0f} MB; status {task['status']}"
    )
    assert growth_mb < BOUND_MB, f"the runtime's RSS grew by {growth_mb:.0f} MB"
    assert hwm_growth_mb < BOUND_MB, f"the runtime's peak RSS grew by {hwm_growth_mb:.0f} MB"

    detail = wait_finished(machine, created["task_id"], timeout=30)  # now the whole output (memory measured)
    events = detail["output"]
    numbers = [e["seq"] for e in events]
    assert numbers == list(range(1, len(numbers) + 1))
    stored_bytes = sum(len(str(e.get("payload"))) for e in events)
    print(f"  stored events: {len(events)}, GET /api/tasks/<id> body ~{len(json.dumps(detail)) / 1e6:.1f} MB")
    assert stored_bytes < 64 * 1024 * 1024  # the output cap (16 MB of CLI output) held
