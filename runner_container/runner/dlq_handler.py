"""DlqFunction: messages that exhausted MAX_TASK_ATTEMPTS receives land here; their tasks are failed.

A task is never left "queued" or "running" forever: whatever state its last runner left it in, it becomes
failed with a reason that says what happened, and the dashboards are told. The booking gives back what the task
held of the day's budget (domain/lifecycle.finish). Its source is told after the booking, as a runner does: its
sticky comment says it failed (a dead runner never wrote that), and a delegated task updates its parent's list.
A booking that breaks names its message in `batchItemFailures` (Powertools' BatchProcessor): it comes back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent_machine import queue
from agent_machine.domain import reporting
from agent_machine.observability import get_logger, get_metrics, quiet_noisy_loggers
from agent_machine.settings import get_settings
from agent_machine.store import tasks
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from runner.orchestrator import fail_unstarted, process_batch

quiet_noisy_loggers()
ERROR_KIND = "dead_letter"
REPORT_MARGIN_SECONDS = 5.0  # the invocation's last seconds are not given to reports
REPORT_MIN_SECONDS = 5.0  # less left than this: the report is not tried


def reason() -> str:
    return (
        f"gave up after {get_settings().max_task_attempts} deliveries of the task's message (MAX_TASK_ATTEMPTS): "
        "its runner kept failing or timing out before the task finished; see the runner's logs"
    )


def fail_task(task_id: str) -> bool:
    """Fail the task unless it finished; it is booked as `lifecycle.fail_unfinished` does (whoever holds it), with
    its failure event numbered after everything its runs stored."""
    task = tasks.get(task_id)
    if task is None or task.status.terminal:
        return False
    if not fail_unstarted(task, reason(), ERROR_KIND):
        return False
    get_metrics().add_metric(name="TasksDeadLettered", unit=MetricUnit.Count, value=1)
    return True


def report_failure(task_id: str, within_seconds: float) -> None:
    """The failed task's last report back (best effort, after the booking: it never undoes or delays it)."""
    try:
        current = tasks.get(task_id)
        if current is None:
            return
        report = reporting.report_finished(current, within_seconds=within_seconds)
        if report != current.report:
            tasks.set_fields(task_id, report=report)
    except Exception:
        get_logger().exception("could not report the dead-lettered task back", extra={"task_id": task_id})


@dataclass
class Booking:
    """The record handler: books each dead-lettered task failed, noting which it failed (reported after)."""

    failed: list[str] = field(default_factory=list)

    def __call__(self, record: SQSRecord) -> None:
        log = get_logger()
        try:
            task_id = queue.parse_body(record.body)
        except ValueError:
            log.error("not a task message: dropping it", extra={"message_id": record.message_id})
            return
        try:
            booked = fail_task(task_id)
        except Exception:
            log.exception("could not fail the dead-lettered task", extra={"task_id": task_id})
            raise  # a batch item failure: the message comes back
        if booked:
            self.failed.append(task_id)
            log.warning("dead-lettered task failed", extra={"task_id": task_id})
        else:
            log.info("dead-lettered task had already finished", extra={"task_id": task_id})


@get_metrics().log_metrics  # EMF lines after each invocation
@get_logger().inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    log = get_logger()
    booking = Booking()
    answer = process_batch(event, booking, context)
    # Every task is booked first; the reports (up to REPORT_DEADLINE_SECONDS each) get the time that is left.
    for task_id in booking.failed:
        left = context.get_remaining_time_in_millis() / 1000 - REPORT_MARGIN_SECONDS
        if left < REPORT_MIN_SECONDS:
            log.warning("no time left to report the dead-lettered task back", extra={"task_id": task_id})
            continue
        report_failure(task_id, within_seconds=left)
    return answer
