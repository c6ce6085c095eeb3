"""RunnerFunction: the SQS event source hands over one task message (BatchSize 1) per invocation.

Returns `{"batchItemFailures": [...]}` (ReportBatchItemFailures): a message that should come back (its session
is busy, or something failed before the run) is listed; every other message is deleted by the event source.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

from agent_machine import queue
from agent_machine.observability import get_logger, quiet_noisy_loggers

from runner.cli import harden_runner_process
from runner.orchestrator import Disposition, Message, flush_metrics, handle, retry_soon
from runner.run import active_runs

quiet_noisy_loggers()
harden_runner_process()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Lambda sends SIGTERM before it shuts an execution environment down: the running CLI is interrupted so the
    run is booked as stopped, with its cost (as fargate_main does on ecs:StopTask). Nothing running: SIGTERM
    does what it does by default."""
    runs = active_runs()
    if not runs:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    get_logger().warning("SIGTERM: interrupting the run")
    for controller in runs.values():
        controller.request("shutdown")


if threading.current_thread() is threading.main_thread():  # (only the main thread may set a signal handler)
    signal.signal(signal.SIGTERM, _on_sigterm)


def _message(record: dict[str, Any]) -> Message:
    attributes = record.get("attributes") or {}
    return Message(
        task_id=queue.parse_body(record.get("body") or ""),
        message_id=str(record.get("messageId", "")),
        receipt_handle=record.get("receiptHandle"),
        receive_count=int(attributes.get("ApproximateReceiveCount", "1") or 1),
    )


@get_logger().inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    log = get_logger()
    failures: list[dict[str, str]] = []
    request_id = getattr(context, "aws_request_id", None)
    try:
        for record in event.get("Records", []):
            message_id = str(record.get("messageId", ""))
            try:
                msg = _message(record)
            except ValueError as exc:
                log.error("not a task message: dropping it", extra={"message_id": message_id, "error": str(exc)})
                continue
            try:
                disposition = handle(
                    msg,
                    run_mode="lambda",
                    request_id=request_id,
                    seconds_left=lambda: context.get_remaining_time_in_millis() / 1000,
                )
            except Exception:
                log.exception("handling the task failed; it will be retried", extra={"task_id": msg.task_id})
                disposition = retry_soon(msg, 10)
            if disposition is Disposition.RETRY:
                failures.append({"itemIdentifier": message_id})
    finally:
        flush_metrics()
    return {"batchItemFailures": failures}
