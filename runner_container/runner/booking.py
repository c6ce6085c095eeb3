"""A finished run's end: its booking (cost, terminal event, the task's row, metrics) and its report to the source.

Booking: the terminal event is stored first, then `lifecycle.finish` books status, result, cost, usage and
last_seq (the terminal event's) in one conditional transaction (never twice), then the terminal event is pushed:
a task read as finished always has its terminal event stored, and a watcher that gets the event finds the task
finished. The cost booked is the larger of the CLI's and the model proxy's (metered at the wire).

Reporting: the task's source (GitHub, Jira, Sentry) keeps one sticky comment, made when the run starts and edited
when it ends, after what the agent committed and did not push has been pushed (runner/publish.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

from agent_machine.domain import lifecycle, reporting
from agent_machine.models import EventType, Task, TaskStatus
from agent_machine.observability import get_logger, get_metrics
from agent_machine.store import tasks
from aws_lambda_powertools.metrics import MetricUnit

from runner import model_proxy, publish
from runner.output import EventStream
from runner.results import Outcome

TERMINAL_EVENT = {
    TaskStatus.COMPLETED: EventType.COMPLETED,
    TaskStatus.FAILED: EventType.FAILED,
    TaskStatus.TIMED_OUT: EventType.FAILED,
    TaskStatus.STOPPED: EventType.STOPPED,
}


async def book(
    task: Task,
    outcome: Outcome,
    *,
    runner_id: str,
    events: EventStream,
    proxy: model_proxy.ModelProxy | None,
) -> bool:
    """Store the terminal event, book the task, push the event, count the metrics. False: the task was finished
    elsewhere (nothing was booked)."""
    proxy_cost: float | None = None
    if proxy is not None:
        proxy_cost = round(proxy.cost_usd, 10)
        # The proxy's figure, metered at the wire, is booked when it is the larger: a CLI killed before its
        # result, or a tool that called the model with the token, spent what the CLI did not count.
        outcome.cost_usd = max(outcome.cost_usd, proxy_cost)
        if proxy.meter.refused and outcome.status == TaskStatus.FAILED:
            outcome.error_kind = "budget"  # the proxy refused a request over the task's or the day's cap
    payload = outcome.event_payload()
    if proxy_cost is not None:
        payload["proxy_cost_usd"] = proxy_cost
    if events.dropped_lines:
        payload["output_dropped_lines"] = events.dropped_lines
    terminal = await events.emit_terminal(TERMINAL_EVENT[outcome.status], payload)
    extra: dict[str, Any] = {
        "last_seq": terminal.seq,
        "num_turns": outcome.num_turns,
        "duration_ms": outcome.duration_ms,
        "model_usage": {name: usage.model_dump() for name, usage in outcome.model_usage.items()},
        "proxy_cost_usd": proxy_cost,
    }
    if outcome.plan is not None:
        extra["plan"] = outcome.plan
    try:
        booked = await asyncio.to_thread(
            lifecycle.finish,
            task,
            outcome.status,
            runner_id=runner_id,
            result=outcome.result,
            error=outcome.error,
            error_kind=outcome.error_kind,
            cost_usd=outcome.cost_usd,
            usage=outcome.usage,
            extra=extra,
            cli_session_id=outcome.cli_session_id,
            cli_total_cost_usd=outcome.cli_total_cost_usd,
        )
    finally:
        events.release()
    if not booked:
        get_logger().warning("the task was finished elsewhere: not booking it")
        return False
    record_metrics(task, outcome)
    return True


def record_metrics(task: Task, outcome: Outcome) -> None:
    metrics = get_metrics()
    name = {
        TaskStatus.COMPLETED: "TasksCompleted",
        TaskStatus.STOPPED: "TasksStopped",
        TaskStatus.TIMED_OUT: "TasksTimedOut",
    }.get(outcome.status, "TasksFailed")
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="TaskCostUsd", unit=MetricUnit.NoUnit, value=outcome.cost_usd)
    metrics.add_metric(name="TaskDuration", unit=MetricUnit.Milliseconds, value=outcome.duration_ms)


async def report_finished(
    task: Task,
    outcome: Outcome | None,
    publisher: publish.Publisher | None,
    *,
    report_start: asyncio.Task[None] | None,
) -> None:
    """The sticky comment's last edit, after the start report (it made the comment) has finished. `outcome` None:
    the run was not this runner's to book, nor to publish. The publisher is closed in any case."""
    if report_start is not None:
        with contextlib.suppress(Exception):
            await report_start
    try:
        if outcome is None:
            return
        published: dict[str, str] = {}
        if publisher is not None:
            # What the agent committed and did not push is pushed now, before the workspace goes. The pull
            # request shown is only one the runner opened, never a link the agent wrote.
            published = await asyncio.to_thread(
                publisher.finish, completed=outcome.status == TaskStatus.COMPLETED, result=outcome.result
            )
            pr_url = published.get("pr_url")
        else:
            pr_url = find_pull_request(outcome.result) if outcome.result else None
        await asyncio.to_thread(report_back, task, started=False, pr_url=pr_url, extra=published)
    finally:
        if publisher is not None:
            publisher.close()


PULL_REQUEST_URL = re.compile(r"https://[^\s/]+/[\w.-]+/[\w.-]+/pull/\d+")


def find_pull_request(text: str) -> str | None:
    found = PULL_REQUEST_URL.search(text)
    return found.group(0) if found else None


def report_back(task: Task, *, started: bool, pr_url: str | None = None, extra: dict[str, str] | None = None) -> None:
    """Tell the task's source (GitHub, Jira, Sentry) where it stands; failures stay on the task's report.
    `pr_url` and `extra` (the runner's publishing: branch, publish_error) are kept in the task's report."""
    try:
        current = tasks.get(task.task_id) or task  # the stored report (comment id) and the booked result
        added = {**(extra or {}), **({"pr_url": pr_url} if pr_url else {})}
        if added:
            current = current.model_copy(update={"report": {**current.report, **added}})
        report = reporting.report_started(current) if started else reporting.report_finished(current)
        if report != task.report or added:
            tasks.set_fields(task.task_id, report=report)
    except Exception:
        get_logger().exception("could not report back to the task's source")
