"""A runner killed mid-task (kill -9 of its worker process and its CLI, as a Lambda killed or a machine lost) is
recovered by the sweeper, through run-local: SweeperFunction's schedule (every LOCAL_SCHEDULE_SECONDS here) finds
the task's heartbeat stale, puts the task back in the queue and the next runner runs it again (attempt 2) to the
end. The queue's visibility timeout is made far longer than the test, so only the sweeper can have brought the task
back; its stored output keeps one strictly increasing sequence without duplicates."""

from __future__ import annotations

import itertools
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from local_runtime.workers import proc_stat

from tests.e2e.conftest import start_machine
from tests.faults import chat, get_task, kill_pids, pids_with, reaping, seqs, wait_finished, wait_for, wait_status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

SWEEP_SECONDS = 2  # LOCAL_SCHEDULE_SECONDS: the sweeper's period here (a minute on AWS)
STALE_SECONDS = 5  # STALE_AFTER_SECONDS (the template's StaleAfterSeconds): five missed heartbeats
VISIBILITY_SECONDS = 900  # the lost run's own message would come back only after this


def worker_of(pid: int) -> int:
    """The runner worker (`python -m local_runtime.worker_main`) the process `pid` descends from."""
    current: int | None = pid
    while current and current > 1:
        cmdline = Path(f"/proc/{current}/cmdline").read_bytes()
        if b"local_runtime.worker_main" in cmdline:
            return current
        stat = proc_stat(current)
        current = stat.ppid if stat else None
    raise AssertionError(f"process {pid} does not run under a runner worker")


def test_a_killed_runner_is_swept_back_to_the_queue_and_its_task_completes(tmp_path: Path) -> None:
    marker = f"sweep-{uuid.uuid4().hex[:12]}"
    machine = start_machine(
        tmp_path,
        extra_env={
            "LOCAL_SCHEDULE_SECONDS": str(SWEEP_SECONDS),
            "STALE_AFTER_SECONDS": str(STALE_SECONDS),
            "LOCAL_QUEUE_VISIBILITY_TIMEOUT": str(VISIBILITY_SECONDS),
        },
        persist=False,
    )
    with reaping(marker):
        try:
            # 40 lines 150 ms apart: still streaming when it is killed, short enough to run twice.
            task_id = chat(machine, f"[[lines:40:150]] {marker}")["task_id"]
            wait_status(machine, task_id, {"running"}, timeout=120)
            first = wait_for(
                lambda: [e for e in get_task(machine, task_id)["output"] if "line 3 of 40" in str(e["payload"])],
                timeout=120,
                what="the first run streaming",
            )
            assert first
            clis = wait_for(lambda: pids_with(marker), timeout=30, what="the CLI running")
            worker = worker_of(clis[0])
            os.kill(worker, signal.SIGKILL)
            kill_pids(pids_with(marker))  # (the CLI runs in a session of its own: it would outlive its runner)
            killed_at = time.monotonic()
            lost = get_task(machine, task_id)
            assert lost["task"]["status"] == "running" and lost["task"]["attempt"] == 1
            stored_before = seqs(lost["output"])

            # Stale after STALE_SECONDS, found by the next sweep, claimed again by a new runner worker.
            retried = wait_for(
                lambda: (t := get_task(machine, task_id)["task"])["attempt"] == 2 and t,
                timeout=120,
                what="the task requeued by the sweeper and claimed again",
            )
            requeued_after = time.monotonic() - killed_at
            assert retried["runner_id"] != lost["task"]["runner_id"]
            detail = wait_finished(machine, task_id, timeout=240)
            task = detail["task"]
            assert (task["status"], task["attempt"]) == ("completed", 2), task
            assert task["result"].endswith("line 40 of 40")
            assert time.monotonic() - killed_at < VISIBILITY_SECONDS  # (so it was the sweeper, not SQS)

            numbers = seqs(detail["output"])
            assert numbers[: len(stored_before)] == stored_before  # the lost run's stored output is kept
            assert all(a < b for a, b in itertools.pairwise(numbers)), numbers  # no seq twice
            assert numbers[-1] == task["last_seq"]
            types = [e["type"] for e in detail["output"]]
            assert types.count("task.started") == 2 and types.count("task.completed") == 1
            assert types[-1] == "task.completed"
            # The sweep reached it within a few periods of going stale (generous: the machine is shared).
            assert requeued_after < STALE_SECONDS + 30 * SWEEP_SECONDS, requeued_after
            logs = machine.logs()
            assert "SweeperFunction runs every 2 s" in logs
            assert f"requeued a run whose runner was lost task_id={task_id}" in logs
        finally:
            machine.stop()
