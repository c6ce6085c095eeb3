"""RunnerFunction: the SQS event source hands over one task message (BatchSize 1) per invocation.

Returns `{"batchItemFailures": [...]}` (ReportBatchItemFailures, Powertools' BatchProcessor): a message that should
come back (its session is busy, or something failed before the run) is listed (its record handler raises
ComesBack); every other message is deleted by the event source.

SIGTERM: Lambda sends it before it shuts an execution environment down (when an extension is registered). A run in
progress is interrupted (its CLI gets SIGINT and writes its result) and booked `stopped` with its cost, as the
Fargate runner does on ecs:StopTask; messages not started yet come back for another environment. An idle
environment ends at once (SIGTERM's default).
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

from agent_machine import queue
from agent_machine.observability import get_logger, get_metrics, quiet_noisy_loggers
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from runner import config
from runner.cli import harden_runner_process
from runner.controller import active_runs, interrupt_all, stopping
from runner.orchestrator import Disposition, Message, handle, process_batch, retry_soon

quiet_noisy_loggers()
harden_runner_process()

_invocations = 0  # in progress in this process (read by the signal handler without a lock)
_invocations_lock = threading.Lock()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if _invocations == 0 and not active_runs():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    get_logger().warning("SIGTERM: the execution environment is shutting down; interrupting the run")
    interrupt_all("shutdown")


if threading.current_thread() is threading.main_thread():  # (only the main thread may set a signal handler)
    signal.signal(signal.SIGTERM, _on_sigterm)


class ComesBack(Exception):
    """The message is to come back (a batch item failure): it was not started here, or it was put back."""


def _message(record: SQSRecord) -> Message:
    return Message(
        task_id=queue.parse_body(record.body),
        message_id=record.message_id,
        receipt_handle=record.receipt_handle,
        receive_count=int(record.attributes.approximate_receive_count or 1),
    )


def _record_handler(record: SQSRecord, lambda_context: LambdaContext) -> None:
    """One task message; raises ComesBack for a message that should be received again."""
    log = get_logger()
    if stopping() is not None:
        raise ComesBack("the environment is shutting down: another one takes the message")
    try:
        msg = _message(record)
    except ValueError as exc:
        log.error("not a task message: dropping it", extra={"message_id": record.message_id, "error": str(exc)})
        return
    try:
        disposition = handle(
            msg,
            run_mode="lambda",
            request_id=lambda_context.aws_request_id,
            seconds_left=lambda: lambda_context.get_remaining_time_in_millis() / 1000,
        )
    except Exception:
        log.exception("handling the task failed; it will be retried", extra={"task_id": msg.task_id})
        disposition = retry_soon(msg, 10)
    if disposition is Disposition.RETRY:
        raise ComesBack(f"task {msg.task_id} comes back")


@get_metrics().log_metrics  # EMF lines after each invocation
@get_logger().inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _invocations
    with _invocations_lock:
        _invocations += 1
    try:
        return process_batch(event, _record_handler, context)
    finally:
        with _invocations_lock:
            _invocations -= 1
        # The cold start and this first invocation made the environment's long-lived state: frozen once, so later
        # full garbage collections do not walk it in the middle of a run's output.
        config.freeze_warm_state()
