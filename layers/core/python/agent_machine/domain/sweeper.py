"""The sweeper: tasks whose runner died (a Lambda killed, a Fargate task gone, a machine lost) are found by their
stale heartbeat and run again, instead of waiting for the queue message's visibility timeout.

For each running task whose heartbeat is older than STALE_AFTER_SECONDS (several heartbeats):

- a stop was requested .............. stopped (its runner cannot honour it any more)
- it ran MAX_TASK_ATTEMPTS times ..... failed, error_kind "runner_lost"
- otherwise ......................... running -> queued and its hold on the day's budget given back, in one
                                      conditional transaction (same runner, heartbeat still stale), then a queue
                                      message: the next claim counts the attempt and numbers its output on after
                                      everything the lost run stored.

Every change is conditional, so sweepers that overlap (a slow run and the next schedule) act once per task, and a
runner that beats again in the meantime keeps its task. If the message cannot be sent after the requeue, the lost
run's own message still comes back after its visibility timeout and claims the queued task: at-least-once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from agent_machine import queue
from agent_machine.domain import lifecycle, publishing
from agent_machine.models import EventType, Task, TaskEvent, TaskStatus, utcnow
from agent_machine.observability import get_logger
from agent_machine.settings import get_settings
from agent_machine.store import errors, output, tasks

REQUEUE_ATTEMPTS = 4  # a transaction conflict (another sweeper, a booking on the day's item) is tried again
RUNNER_LOST = "runner_lost"

StopRun = Callable[[Task], None]  # ends what may still be running for a task (a Fargate task), best effort


@dataclass
class SweepReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # moved by someone else meanwhile (a runner, another sweeper)


def stale_before(now: datetime | None = None) -> datetime:
    return (now or utcnow()) - timedelta(seconds=get_settings().stale_after_seconds)


def sweep(*, now: datetime | None = None, stop_run: StopRun | None = None) -> SweepReport:
    """Recover every running task whose runner is lost."""
    report = SweepReport()
    cutoff = stale_before(now)
    for task in tasks.stale_running(cutoff):
        try:
            outcome = recover(task, cutoff, stop_run=stop_run)
        except Exception:
            # One task's trouble must not keep the others stuck; the next schedule tries it again.
            get_logger().exception("could not recover a lost run", extra={"task_id": task.task_id})
            continue
        getattr(report, outcome).append(task.task_id)
    return report


def recover(task: Task, cutoff: datetime, *, stop_run: StopRun | None = None) -> str:
    """Requeue, fail or stop one lost run; the SweepReport field it belongs to."""
    log = get_logger()
    if stop_run is not None:
        try:
            stop_run(task)
        except Exception:
            log.exception("could not stop the lost run's runner", extra={"task_id": task.task_id})
    last = task.heartbeat_at.isoformat() if task.heartbeat_at else "never"
    if task.stop_requested:
        error = f"stopped; its runner was lost (last heartbeat {last})"
        return "stopped" if _end(task, TaskStatus.STOPPED, error, "stopped") else "skipped"
    if task.attempt >= get_settings().max_task_attempts:
        error = f"the runner was lost {task.attempt} times (last heartbeat {last}); giving up"
        return "failed" if _end(task, TaskStatus.FAILED, error, RUNNER_LOST) else "skipped"
    if not requeue(task, cutoff):
        return "skipped"
    queue.send(task.task_id)
    log.warning(
        "requeued a run whose runner was lost",
        extra={"task_id": task.task_id, "runner_id": task.runner_id, "attempt": task.attempt, "heartbeat_at": last},
    )
    return "requeued"


def requeue(task: Task, cutoff: datetime) -> bool:
    """running -> queued, giving back the task's hold on the day's budget, in one transaction. False when the
    task moved meanwhile (its runner beat again, it finished, another sweeper requeued it)."""
    for attempt in range(1, REQUEUE_ATTEMPTS + 1):
        try:
            tasks.requeue(task, cutoff, lifecycle.held(task))
        except errors.WriteConflict:
            if attempt == REQUEUE_ATTEMPTS:
                raise
            lifecycle.backoff(attempt)
            continue
        except errors.Refused:
            return False
        return True
    return False  # (not reached: the last attempt returns or raises)


def _end(task: Task, status: TaskStatus, error: str, error_kind: str) -> bool:
    """Book the lost run as ended (its hold given back), then store and push a terminal event numbered after
    everything the lost run stored, so watchers and a replay see the end."""
    seq = max([task.last_seq, *(e.seq for e in output.read_events(task.task_id, after_seq=task.last_seq))]) + 1
    if not lifecycle.finish(
        task, status, runner_id=task.runner_id, error=error, error_kind=error_kind, extra={"last_seq": seq}
    ):
        return False
    event_type = EventType.STOPPED if status == TaskStatus.STOPPED else EventType.FAILED
    payload: dict[str, Any] = {
        "status": status.value,
        "error": error,
        "error_kind": error_kind,
        "cost_usd": 0.0,
        "usage": {},
    }
    event = TaskEvent(type=event_type, task_id=task.task_id, session_id=task.session_id, seq=seq, payload=payload)
    output.put_chunk(task.task_id, [event])
    publishing.publish(task, [event])  # its watchers and the dashboards watching all tasks; never raises
    get_logger().warning(
        "ended a run whose runner was lost", extra={"task_id": task.task_id, "status": status.value, "error": error}
    )
    return True
