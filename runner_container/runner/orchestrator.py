"""From a queue message (or a Fargate start) to a run: what to do with a task, decided from its record.

finished .......................... nothing (an SQS redelivery)
running, heartbeat fresh .......... nothing: its runner is alive (a duplicate delivery); for a run on
                                    Fargate, re-arm the watchdog message
running, heartbeat stale .......... its runner died: take it over and run it again (the message came back
                                    after the visibility timeout), or fail it after MAX_TASK_ATTEMPTS runs
another task of the session runs .. come back in SESSION_BUSY_DELAY_SECONDS (messages of one chat are
(or an older one is queued)         answered one at a time, in the order they were created: each resumes the
                                    conversation of the previous). The guarantee is the session's lease, taken
                                    atomically with the claim (any path: Lambda, Fargate, a redelivery), renewed
                                    by the heartbeat, released after booking, expiring if its runner dies
long-running agent ................ hand it to Fargate (+ a delayed watchdog copy of the message)
over the daily budget ............. failed, error_kind "budget", with the reason (checked first on what is
                                    booked, then atomically by the claim: its cap must fit beside what running
                                    tasks hold, domain/budgets.py)
otherwise ......................... queued -> running (conditional: one runner only) holding the task's cap of
                                    the day, run, book (the hold is given back)
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any, TypeVar

from agent_machine import aws, queue
from agent_machine.domain import agents as agent_registry
from agent_machine.domain import budgets, lifecycle
from agent_machine.models import AgentSpec, EventType, Task, TaskStatus, utcnow
from agent_machine.observability import get_logger, get_metrics
from agent_machine.settings import get_settings
from agent_machine.store import sessions, tasks
from aws_lambda_powertools.metrics import MetricUnit

from runner import config, fargate
from runner.output import last_stored_seq, lifecycle_event, publish
from runner.run import RunOptions, run_task

T = TypeVar("T")
LOG_KEYS = ["task_id", "session_id", "agent"]


class Disposition(StrEnum):
    DONE = "done"  # delete the message
    RETRY = "retry"  # report it as a batch item failure (it comes back after its visibility timeout)


@dataclass(frozen=True)
class Message:
    task_id: str
    message_id: str = ""
    receipt_handle: str | None = None
    receive_count: int = 1


def new_runner_id(run_mode: str, request_id: str | None = None) -> str:
    if request_id:
        return f"{run_mode}:{request_id}"
    return f"{run_mode}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run on a private event loop: the caller's thread may own one already (a handler called from async code)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def flush_metrics() -> None:
    """Publish the metrics gathered (EMF log lines); nothing when there are none (no empty-metrics warning)."""
    metrics = get_metrics()
    if metrics.metric_set:
        metrics.flush_metrics()


def is_stale(task: Task) -> bool:
    if task.heartbeat_at is None:
        return True
    return (utcnow() - task.heartbeat_at).total_seconds() > config.STALE_AFTER_SECONDS


def fail_unstarted(task: Task, error: str, error_kind: str, *, runner_id: str | None = None) -> bool:
    """Fail a task that will not run (any more) — refused, unknown agent, lost runners, dead-lettered, or a run
    that broke after its claim (then only while `runner_id` still holds it) — in one booking, and tell its
    watchers with a task.failed event numbered after everything stored (also the task's last_seq). False if the
    task had finished already."""
    seq = last_stored_seq(task) + 1
    if not lifecycle.finish(
        task, TaskStatus.FAILED, runner_id=runner_id, error=error, error_kind=error_kind, extra={"last_seq": seq}
    ):
        return False
    payload = {
        "status": "failed",
        "error": error,
        "error_kind": error_kind,
        "cost_usd": 0.0,
        "duration_ms": 0,
        "num_turns": 0,
        "usage": {},
    }
    publish(task, [lifecycle_event(task, EventType.FAILED, payload, seq=seq)])
    get_metrics().add_metric(name="TasksFailed", unit=MetricUnit.Count, value=1)
    get_logger().warning("task failed", extra={"error_kind": error_kind, "error": error, "task_id": task.task_id})
    return True


def session_busy(task: Task) -> bool:
    """Another task of the same session is running (and alive), or an older one waits for its turn (a quick
    look that saves a claim or a Fargate start; the claim's lease is what guarantees one run at a time)."""
    page = tasks.list_tasks(session_id=task.session_id, limit=50, max_pages=2)
    for other in page.items:
        if other.task_id == task.task_id:
            continue
        if other.status == TaskStatus.RUNNING and not is_stale(other):
            return True
        if other.status == TaskStatus.QUEUED and _comes_first(other, task):
            return True
    return False


def _comes_first(other: Task, task: Task) -> bool:
    """`other` was created before `task` (ties broken by id), recently enough to be waited for."""
    if (other.created_at, other.task_id) >= (task.created_at, task.task_id):
        return False
    return (task.created_at - other.created_at).total_seconds() <= config.SESSION_ORDER_WINDOW_SECONDS


def at_capacity(task: Task) -> bool:
    """MAX_CONCURRENT_TASKS live runs, on Lambda and Fargate together (a dead runner's task, its heartbeat stale,
    does not count). A look before starting, not a lock: runs started at the same instant may pass it together,
    and the Lambda event source's own MaximumConcurrency bounds those. A delegated child does not wait: its parent
    holds a slot while it waits for its children (bounded by MAX_CHILDREN_PER_TASK and the depth)."""
    if task.parent_task_id:
        return False
    limit = get_settings().max_concurrent_tasks
    page = tasks.list_tasks(status=TaskStatus.RUNNING, limit=limit + 50, max_pages=4)
    live = [t for t in page.items if t.task_id != task.task_id and not is_stale(t)]
    return len(live) >= limit


def put_back(msg: Message) -> Disposition:
    """Look at the message again shortly. Changing its visibility is one call but counts a receive (the DLQ
    takes it after MAX_TASK_ATTEMPTS receives), so near that limit a fresh delayed copy replaces it."""
    delay = config.SESSION_BUSY_DELAY_SECONDS
    settings = get_settings()
    if msg.receipt_handle and msg.receive_count < settings.max_task_attempts - 1:
        aws.sqs().change_message_visibility(
            QueueUrl=settings.task_queue_url, ReceiptHandle=msg.receipt_handle, VisibilityTimeout=delay
        )
        return Disposition.RETRY
    queue.send(msg.task_id, delay_seconds=delay)
    return Disposition.DONE


def retry_soon(msg: Message, seconds: int) -> Disposition:
    if msg.receipt_handle:
        try:
            aws.sqs().change_message_visibility(
                QueueUrl=get_settings().task_queue_url, ReceiptHandle=msg.receipt_handle, VisibilityTimeout=seconds
            )
        except Exception:
            get_logger().exception("could not shorten the message's visibility")
    return Disposition.RETRY


def arm_watchdog(task: Task) -> None:
    """A delayed copy of the message: if the Fargate run dies or never starts, it finds out and acts."""
    queue.send(task.task_id, delay_seconds=config.FARGATE_WATCHDOG_SECONDS)


def unclaimed_dispatch_counted(task: Task) -> bool:
    """Before handing a queued task to Fargate (again): a Fargate run it was handed to and that never claimed it
    (never started, died before its claim) counts as an attempt, and past MAX_TASK_ATTEMPTS the task fails. False
    when nothing is to be started now: a hand-over is still in progress (a duplicate delivery), or it failed."""
    since = tasks.dispatched_at(task.task_id)
    if since is None:
        return True
    if (utcnow() - since).total_seconds() < config.FARGATE_CLAIM_WAIT_SECONDS:
        get_logger().info("a Fargate run is starting for this task: nothing to do")
        return False
    counted = tasks.count_unclaimed_dispatch(task.task_id, since)
    if counted is None:  # claimed, stopped or counted meanwhile: the next delivery looks again
        return False
    settings = get_settings()
    get_logger().warning("the Fargate run never claimed the task", extra={"attempt": counted.attempt})
    if counted.attempt >= settings.max_task_attempts:
        fail_unstarted(
            counted,
            f"{counted.attempt} Fargate runs were started for the task and none claimed it (the last one at "
            f"{since.isoformat()}); giving up",
            "fargate_never_started",
        )
        return False
    return True


def budget_refusal() -> str | None:
    check = budgets.check_daily()
    return None if check.allowed else check.reason


def claim(task: Task, runner_id: str, run_mode: str, agent: AgentSpec) -> Task | lifecycle.SessionBusy | None:
    """The task for this runner with its session's lease; None when another runner has it (or it was refused);
    SessionBusy when another task of the session holds the lease."""
    lease = config.SESSION_LEASE_SECONDS
    if task.status == TaskStatus.QUEUED:
        claimed = lifecycle.claim(task, runner_id, run_mode, agent_cap_usd=agent.max_budget_usd, lease_seconds=lease)
        if isinstance(claimed, lifecycle.Refused):  # its cap does not fit in what is left of today's budget
            fail_unstarted(task, claimed.reason, "budget")
            return None
        return claimed
    # A takeover: the lease first (the dead runner's has expired, unless another task of the session took it).
    if not sessions.take_lease(task.session_id, task.task_id, runner_id, seconds=lease):
        return lifecycle.SessionBusy()
    stale_before = utcnow() - timedelta(seconds=config.STALE_AFTER_SECONDS)
    taken = tasks.take_over_stale(task.task_id, runner_id, run_mode, stale_before)
    if taken is None:
        sessions.release_lease(task.session_id, task.task_id, runner_id)
    return taken


def resolve_agent(task: Task) -> AgentSpec | None:
    try:
        return agent_registry.get_agent(task.agent)
    except agent_registry.UnknownAgent:
        fail_unstarted(task, f"there is no agent named {task.agent!r}", "unknown_agent")
        return None


def run_claimed(
    claimed: Task, agent: AgentSpec, *, runner_id: str, run_mode: str, seconds: float, timeout_detail: str
) -> bool:
    """Run and book a claimed task. False when the run broke and even failing the task did not work: it is
    still `running`, and only a delivery after its heartbeat has gone stale can take it over."""
    metrics = get_metrics()
    metrics.add_metric(name="TasksStarted", unit=MetricUnit.Count, value=1)
    if claimed.started_at is not None and claimed.attempt <= 1:
        wait_ms = max(0.0, (claimed.started_at - claimed.created_at).total_seconds() * 1000)
        metrics.add_metric(name="QueueWait", unit=MetricUnit.Milliseconds, value=wait_ms)
    if claimed.attempt > 1:  # a takeover: number on after whatever the lost run stored
        claimed = claimed.model_copy(update={"last_seq": last_stored_seq(claimed)})
    opts = RunOptions(
        runner_id=runner_id, run_mode=run_mode, deadline=time.monotonic() + seconds, timeout_detail=timeout_detail
    )
    # Two messages of one chat claimed at the same moment (both saw the session idle) must not share the
    # session's working folder in this process: the second runs after the first, resuming its conversation.
    try:
        with _session_lock(claimed.session_id):
            run_coroutine(run_task(claimed, agent, opts))
    except Exception as exc:
        # Left running, the task would look alive to the next delivery (fresh heartbeat) and never end.
        get_logger().exception("the run broke after its claim: failing the task")
        return fail_after_claim(claimed, runner_id, exc)
    return True


def fail_after_claim(task: Task, runner_id: str, exc: Exception) -> bool:
    """Fail a claimed task whose run raised, if this runner still holds it (a conditional booking)."""
    error = f"the runner failed after claiming the task: {type(exc).__name__}: {exc}"[: config.MAX_ERROR_BYTES]
    try:
        current = tasks.get(task.task_id) or task
        fail_unstarted(current, error, "runner_error", runner_id=runner_id)
    except Exception:
        get_logger().exception("could not fail the task; it is retried once its heartbeat has gone stale")
        return False
    return True


_session_locks: dict[str, threading.Lock] = {}
_session_locks_guard = threading.Lock()


@contextmanager
def _session_lock(session_id: str) -> Iterator[None]:
    with _session_locks_guard:
        lock = _session_locks.setdefault(session_id, threading.Lock())
    try:
        with lock:
            yield
    finally:
        with _session_locks_guard:
            if not lock.locked():
                _session_locks.pop(session_id, None)


def handle(
    msg: Message, *, run_mode: str, seconds_left: Callable[[], float] | None = None, request_id: str | None = None
) -> Disposition:
    """Decide and act for one task message on Lambda."""
    log = get_logger()
    settings = get_settings()
    task = tasks.get(msg.task_id)
    if task is None:
        log.warning("no such task: dropping the message", extra={"task_id": msg.task_id})
        return Disposition.DONE
    log.thread_safe_append_keys(task_id=task.task_id, session_id=task.session_id, agent=task.agent)
    try:
        if task.status.terminal:
            log.info("task already finished: nothing to do", extra={"status": task.status.value})
            return Disposition.DONE
        if task.status == TaskStatus.RUNNING:
            if not is_stale(task):
                log.info("task is running elsewhere: nothing to do", extra={"runner_id": task.runner_id})
                if task.run_mode == "fargate":
                    arm_watchdog(task)
                return Disposition.DONE
            if task.attempt >= settings.max_task_attempts:
                fail_unstarted(
                    task,
                    f"the runner was lost {task.attempt} times (last heartbeat "
                    f"{task.heartbeat_at.isoformat() if task.heartbeat_at else 'never'}); giving up",
                    "runner_lost",
                )
                return Disposition.DONE
            log.warning("taking over a stale run", extra={"runner_id": task.runner_id, "attempt": task.attempt})
        agent = resolve_agent(task)
        if agent is None:
            return Disposition.DONE
        if session_busy(task):
            log.info("another task of this session is running: trying again shortly")
            return put_back(msg)
        if at_capacity(task):
            log.info("MAX_CONCURRENT_TASKS runs are going on (Lambda and Fargate): trying again shortly")
            return put_back(msg)
        if task.status == TaskStatus.QUEUED:
            refusal = budget_refusal()
            if refusal:
                fail_unstarted(task, refusal, "budget")
                return Disposition.DONE
        if fargate.should_dispatch(agent):
            if task.status == TaskStatus.QUEUED and not unclaimed_dispatch_counted(task):
                return Disposition.DONE
            try:
                where = fargate.dispatch(task)
            except Exception:
                log.exception("could not start the Fargate run")
                return retry_soon(msg, 30)
            tasks.mark_dispatched(task.task_id)
            arm_watchdog(task)
            log.info("handed to Fargate", extra={"mode": where.mode, "ref": where.ref})
            return Disposition.DONE
        seconds = float(settings.task_timeout_seconds)
        detail = f"TASK_TIMEOUT_SECONDS={settings.task_timeout_seconds}"
        if seconds_left is not None:
            lambda_seconds = seconds_left() - config.LAMBDA_SAFETY_MARGIN_SECONDS
            if lambda_seconds < seconds:
                seconds = lambda_seconds
                detail = (
                    f"Lambda's time limit: {max(0, int(lambda_seconds))} s were left for the run; agents marked "
                    "long_running run on Fargate without this limit"
                )
            if seconds < 5:
                log.warning("too little Lambda time left to start a run")
                return retry_soon(msg, 5)
        runner_id = new_runner_id(run_mode, request_id)
        claimed = claim(task, runner_id, run_mode, agent)
        if claimed is None:
            log.info("another runner claimed the task first")
            return Disposition.DONE
        if isinstance(claimed, lifecycle.SessionBusy):
            log.info("another task of this session holds its lease: trying again shortly")
            return put_back(msg)
        if not run_claimed(
            claimed, agent, runner_id=runner_id, run_mode=run_mode, seconds=seconds, timeout_detail=detail
        ):
            return retry_soon(msg, int(config.STALE_AFTER_SECONDS) + 5)
        return Disposition.DONE
    finally:
        log.thread_safe_remove_keys(LOG_KEYS)


def run_by_id(task_id: str, *, run_mode: str, runner_id: str | None = None) -> int:
    """The Fargate entry: claim the task (queued, or stale) and run it here, without the Lambda time limit."""
    log = get_logger()
    settings = get_settings()
    task = tasks.get(task_id)
    if task is None:
        log.error("no such task", extra={"task_id": task_id})
        return 1
    log.thread_safe_append_keys(task_id=task.task_id, session_id=task.session_id, agent=task.agent)
    try:
        if task.status.terminal or (task.status == TaskStatus.RUNNING and not is_stale(task)):
            log.info("nothing to do", extra={"status": task.status.value})
            return 0
        if task.status == TaskStatus.RUNNING and task.attempt >= settings.max_task_attempts:
            fail_unstarted(task, f"the runner was lost {task.attempt} times; giving up", "runner_lost")
            return 0
        agent = resolve_agent(task)
        if agent is None:
            return 0
        if task.status == TaskStatus.QUEUED:
            refusal = budget_refusal()
            if refusal:
                fail_unstarted(task, refusal, "budget")
                return 0
        runner_id = runner_id or new_runner_id(run_mode)
        claimed = claim(task, runner_id, run_mode, agent)
        if claimed is None:
            log.info("another runner claimed the task first")
            return 0
        if isinstance(claimed, lifecycle.SessionBusy):
            # Back to the queue: its handler starts it (here or on Fargate again) once the session is free.
            log.info("another task of this session holds its lease: queued again")
            tasks.clear_dispatched(task.task_id)  # given back on purpose: not a Fargate run lost before its claim
            queue.send(task.task_id, delay_seconds=config.SESSION_BUSY_DELAY_SECONDS)
            return 0
        settled = run_claimed(
            claimed,
            agent,
            runner_id=runner_id,
            run_mode=run_mode,
            seconds=float(settings.task_timeout_seconds),
            timeout_detail=f"TASK_TIMEOUT_SECONDS={settings.task_timeout_seconds}",
        )
        return 0 if settled else 1
    finally:
        log.thread_safe_remove_keys(LOG_KEYS)
