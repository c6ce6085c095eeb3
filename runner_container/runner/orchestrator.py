"""From a queue message (or a Fargate start) to a run: `decide` reads a task's record and answers what to do;
two thin executors act on the answer: `handle` (on Lambda, for a queue message) and `run_by_id` (the Fargate
runner started for one task). The table, in `decide`'s order (where the two differ, the Fargate answer follows /):

finished .......................... Nothing (an SQS redelivery)
running, heartbeat fresh .......... Nothing: its runner is alive (a duplicate delivery); on Lambda, for a run on
                                    Fargate, re-arm the watchdog message
running, heartbeat stale .......... its runner died: ClaimAndRun, a takeover (the message came back after the
                                    visibility timeout), or Fail "runner_lost" after MAX_TASK_ATTEMPTS runs
unknown agent ..................... Fail "unknown_agent"
another task of the session runs .. PutBack: come back in SESSION_BUSY_DELAY_SECONDS (messages of one chat are
(or an older one is queued)         answered one at a time, in the order they were created: each resumes the
                                    conversation of the previous) / not looked at on Fargate. The guarantee is
                                    the session's lease, taken atomically with the claim (any path: Lambda,
                                    Fargate, a redelivery), renewed by the heartbeat, released after booking,
                                    expiring if its runner dies; a claim refused for it is a PutBack too (on
                                    Fargate: the task is queued again)
MAX_CONCURRENT_TASKS live runs .... PutBack / not looked at on Fargate (a Lambda looked before starting it)
over the daily budget ............. Fail "budget", with the reason (checked first on what is booked, then
                                    atomically by the claim: its cap must fit beside what running tasks hold,
                                    domain/budgets.py)
long-running agent ................ DispatchToFargate (+ a delayed watchdog copy of the message) / run here
otherwise ......................... ClaimAndRun: queued -> running (conditional: one runner only) holding the
                                    task's cap of the day, run, book (the hold is given back)
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
from typing import Any, Literal, TypeVar, assert_never, overload

from agent_machine import aws, queue
from agent_machine.domain import agents as agent_registry
from agent_machine.domain import budgets, lifecycle
from agent_machine.models import AgentSpec, EventType, Task, TaskStatus, utcnow
from agent_machine.observability import get_logger, get_metrics
from agent_machine.settings import get_settings
from agent_machine.store import sessions, tasks
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, process_partial_response
from aws_lambda_powertools.utilities.batch import EventType as BatchEventType

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


def process_batch(event: dict[str, Any], record_handler: Callable[..., None], context: Any) -> dict[str, Any]:
    """An SQS event through Powertools' BatchProcessor: the answer (ReportBatchItemFailures) names the records
    whose handler raised; the event source deletes the others."""
    if not event.get("Records"):  # (never sent by the event source; Powertools would refuse it)
        return {"batchItemFailures": []}
    # A processor per invocation: it keeps the batch's state, and the local runtime may run invocations side by
    # side on threads of one process. A batch that fails whole (a batch of one put back) must still be an answer
    # naming its records, not the BatchProcessingError Powertools raises by default.
    processor = BatchProcessor(event_type=BatchEventType.SQS, raise_on_entire_batch_failure=False)
    answer = process_partial_response(event, record_handler, processor, context)
    return {"batchItemFailures": list(answer["batchItemFailures"])}


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


class Where(StrEnum):
    LAMBDA = "lambda"  # a queue message on the RunnerFunction
    FARGATE = "fargate"  # the Fargate runner a Lambda started for this very task


@dataclass(frozen=True)
class Nothing:
    """Leave the task as it is: finished, alive elsewhere, or claimed by another runner."""

    note: str
    rearm_watchdog: bool = False  # a live run on Fargate: its watchdog message must keep coming back


@dataclass(frozen=True)
class Fail:
    """The task will not run (any more): failed with this reason and error_kind."""

    reason: str
    kind: str


@dataclass(frozen=True)
class PutBack:
    """Not now: the task comes back in SESSION_BUSY_DELAY_SECONDS."""

    note: str


@dataclass(frozen=True)
class DispatchToFargate:
    """A long-running agent: a Fargate run takes it (Lambda only)."""


@dataclass(frozen=True)
class ClaimAndRun:
    """Claim it (or take over a stale run) and run it here."""

    agent: AgentSpec


Decision = Nothing | Fail | PutBack | DispatchToFargate | ClaimAndRun
FargateDecision = Nothing | Fail | PutBack | ClaimAndRun  # a Fargate run neither looks at capacity nor hands over


@overload
def decide(task: Task, *, where: Literal[Where.LAMBDA]) -> Decision: ...
@overload
def decide(task: Task, *, where: Literal[Where.FARGATE]) -> FargateDecision: ...
def decide(task: Task, *, where: Where) -> Decision:
    """The module's table, in its order. It reads the store (the session's other tasks, the live runs, today's
    budget) and changes nothing: the executors act, so the two entries cannot drift apart."""
    if task.status.terminal:
        return Nothing("task already finished: nothing to do")
    if task.status == TaskStatus.RUNNING:
        if not is_stale(task):
            fargate_run = where is Where.LAMBDA and task.run_mode == "fargate"
            return Nothing("task is running elsewhere: nothing to do", rearm_watchdog=fargate_run)
        if task.attempt >= get_settings().max_task_attempts:
            heartbeat = task.heartbeat_at.isoformat() if task.heartbeat_at else "never"
            return Fail(
                f"the runner was lost {task.attempt} times (last heartbeat {heartbeat}); giving up", "runner_lost"
            )
    try:
        agent = agent_registry.get_agent(task.agent)
    except agent_registry.UnknownAgent:
        return Fail(f"there is no agent named {task.agent!r}", "unknown_agent")
    if where is Where.LAMBDA:
        if session_busy(task):
            return PutBack("another task of this session is running: trying again shortly")
        if at_capacity(task):
            return PutBack("MAX_CONCURRENT_TASKS runs are going on (Lambda and Fargate): trying again shortly")
    if task.status == TaskStatus.QUEUED and (refusal := budget_refusal()):
        return Fail(refusal, "budget")
    if where is Where.LAMBDA and fargate.should_dispatch(agent):
        return DispatchToFargate()
    return ClaimAndRun(agent)


def after_claim(outcome: lifecycle.Refused | lifecycle.SessionBusy | None) -> Nothing | Fail | PutBack:
    """What a claim that did not give this runner the task means."""
    if outcome is None:
        return Nothing("another runner claimed the task first")
    if isinstance(outcome, lifecycle.Refused):  # its cap does not fit in what is left of today's budget
        return Fail(outcome.reason, "budget")
    return PutBack("another task of this session holds its lease: trying again shortly")


def claim(
    task: Task, runner_id: str, run_mode: str, agent: AgentSpec
) -> Task | lifecycle.Refused | lifecycle.SessionBusy | None:
    """The task for this runner with its session's lease; None when another runner has it; Refused when its
    cap does not fit in today's budget; SessionBusy when another task of the session holds the lease."""
    lease = config.SESSION_LEASE_SECONDS
    if task.status == TaskStatus.QUEUED:
        return lifecycle.claim(task, runner_id, run_mode, agent_cap_usd=agent.max_budget_usd, lease_seconds=lease)
    get_logger().warning("taking over a stale run", extra={"runner_id": task.runner_id, "attempt": task.attempt})
    # A takeover: the lease first (the dead runner's has expired, unless another task of the session took it).
    if not sessions.take_lease(task.session_id, task.task_id, runner_id, seconds=lease):
        return lifecycle.SessionBusy()
    stale_before = utcnow() - timedelta(seconds=config.STALE_AFTER_SECONDS)
    taken = tasks.take_over_stale(task.task_id, runner_id, run_mode, stale_before)
    if taken is None:
        sessions.release_lease(task.session_id, task.task_id, runner_id)
    return taken


def settle(task: Task, decision: Nothing | Fail) -> None:
    """What both executors do for a task that is not to run here."""
    if isinstance(decision, Fail):
        fail_unstarted(task, decision.reason, decision.kind)
        return
    get_logger().info(decision.note, extra={"status": task.status.value, "runner_id": task.runner_id})
    if decision.rearm_watchdog:
        arm_watchdog(task)


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


@contextmanager
def task_log_keys(task: Task) -> Iterator[None]:
    log = get_logger()
    log.thread_safe_append_keys(task_id=task.task_id, session_id=task.session_id, agent=task.agent)
    try:
        yield
    finally:
        log.thread_safe_remove_keys(LOG_KEYS)


@dataclass(frozen=True)
class RunTime:
    seconds: float
    detail: str  # what the timeout's error names as the limit


def task_run_time() -> RunTime:
    settings = get_settings()
    return RunTime(float(settings.task_timeout_seconds), f"TASK_TIMEOUT_SECONDS={settings.task_timeout_seconds}")


@dataclass(frozen=True)
class OnLambda:
    """The Lambda executor for one queue message: a Disposition for the event source."""

    msg: Message
    run_mode: str
    seconds_left: Callable[[], float] | None = None
    request_id: str | None = None

    def act(self, task: Task, decision: Decision) -> Disposition:
        match decision:
            case Nothing() | Fail():
                settle(task, decision)
                return Disposition.DONE
            case PutBack(note):
                get_logger().info(note)
                return put_back(self.msg)
            case DispatchToFargate():
                return self.dispatch(task)
            case ClaimAndRun(agent):
                return self.claim_and_run(task, agent)
            case _:
                assert_never(decision)

    def dispatch(self, task: Task) -> Disposition:
        if task.status == TaskStatus.QUEUED and not unclaimed_dispatch_counted(task):
            return Disposition.DONE
        try:
            where = fargate.dispatch(task)
        except Exception:
            get_logger().exception("could not start the Fargate run")
            return retry_soon(self.msg, 30)
        tasks.mark_dispatched(task.task_id)
        arm_watchdog(task)
        get_logger().info("handed to Fargate", extra={"mode": where.mode, "ref": where.ref})
        return Disposition.DONE

    def run_time(self) -> RunTime:
        """TASK_TIMEOUT_SECONDS, or less when the invocation ends sooner."""
        limit = task_run_time()
        if self.seconds_left is None:
            return limit
        lambda_seconds = self.seconds_left() - config.LAMBDA_SAFETY_MARGIN_SECONDS
        if lambda_seconds >= limit.seconds:
            return limit
        detail = (
            f"Lambda's time limit: {max(0, int(lambda_seconds))} s were left for the run; agents marked "
            "long_running run on Fargate without this limit"
        )
        return RunTime(lambda_seconds, detail)

    def claim_and_run(self, task: Task, agent: AgentSpec) -> Disposition:
        run_time = self.run_time()
        if run_time.seconds < 5:
            get_logger().warning("too little Lambda time left to start a run")
            return retry_soon(self.msg, 5)
        runner_id = new_runner_id(self.run_mode, self.request_id)
        claimed = claim(task, runner_id, self.run_mode, agent)
        if not isinstance(claimed, Task):
            return self.act(task, after_claim(claimed))
        settled = run_claimed(
            claimed,
            agent,
            runner_id=runner_id,
            run_mode=self.run_mode,
            seconds=run_time.seconds,
            timeout_detail=run_time.detail,
        )
        # Not settled: still `running`; it comes back once its heartbeat is stale, to be taken over.
        return Disposition.DONE if settled else retry_soon(self.msg, int(config.STALE_AFTER_SECONDS) + 5)


@dataclass(frozen=True)
class OnFargate:
    """The Fargate executor: the container's exit code (1: the run broke and the task could not be settled)."""

    run_mode: str
    runner_id: str | None = None

    def act(self, task: Task, decision: FargateDecision) -> int:
        match decision:
            case Nothing() | Fail():
                settle(task, decision)
                return 0
            case PutBack(note):
                # Back to the queue: its handler starts it (here or on Fargate again) once the session is free.
                get_logger().info(note)
                tasks.clear_dispatched(task.task_id)  # given back on purpose: not a Fargate run lost before its claim
                queue.send(task.task_id, delay_seconds=config.SESSION_BUSY_DELAY_SECONDS)
                return 0
            case ClaimAndRun(agent):
                return self.claim_and_run(task, agent)
            case _:
                assert_never(decision)

    def claim_and_run(self, task: Task, agent: AgentSpec) -> int:
        runner_id = self.runner_id or new_runner_id(self.run_mode)
        claimed = claim(task, runner_id, self.run_mode, agent)
        if not isinstance(claimed, Task):
            return self.act(task, after_claim(claimed))
        run_time = task_run_time()  # no Lambda time limit here
        settled = run_claimed(
            claimed,
            agent,
            runner_id=runner_id,
            run_mode=self.run_mode,
            seconds=run_time.seconds,
            timeout_detail=run_time.detail,
        )
        return 0 if settled else 1


def handle(
    msg: Message, *, run_mode: str, seconds_left: Callable[[], float] | None = None, request_id: str | None = None
) -> Disposition:
    """Decide and act for one task message on Lambda."""
    task = tasks.get(msg.task_id)
    if task is None:
        get_logger().warning("no such task: dropping the message", extra={"task_id": msg.task_id})
        return Disposition.DONE
    executor = OnLambda(msg, run_mode, seconds_left=seconds_left, request_id=request_id)
    with task_log_keys(task):
        return executor.act(task, decide(task, where=Where.LAMBDA))


def run_by_id(task_id: str, *, run_mode: str, runner_id: str | None = None) -> int:
    """The Fargate entry: claim the task (queued, or stale) and run it here, without the Lambda time limit."""
    task = tasks.get(task_id)
    if task is None:
        get_logger().error("no such task", extra={"task_id": task_id})
        return 1
    with task_log_keys(task):
        return OnFargate(run_mode, runner_id).act(task, decide(task, where=Where.FARGATE))
