"""`python -m runner.fargate_main`: the Fargate runner (the same image as the Lambda), one task per container.

TASK_ID names the task. It claims the task (queued, or a stale run), runs it without Lambda's time limit and
exits. SIGTERM (ecs:StopTask, a scale-in) interrupts the CLI with SIGINT so the run is booked as stopped with its
cost, before ECS's StopTimeout sends SIGKILL. The task records `fargate:<task ARN>` as its runner (the task
metadata endpoint's ARN: what ecs:StopTask needs if this runner stops answering).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.request
from types import FrameType

from agent_machine.observability import get_logger, quiet_noisy_loggers

from runner import config
from runner.cli import harden_runner_process
from runner.controller import interrupt_all
from runner.orchestrator import flush_metrics, run_by_id


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    get_logger().warning("SIGTERM: interrupting the run")
    interrupt_all("terminated")  # also a run that has not registered yet: it is stopped as it starts


def ecs_task_arn() -> str | None:
    """This container's ECS task ARN (task metadata endpoint v4), so the task records which ECS task runs it —
    what `ecs:StopTask` needs if this runner stops answering."""
    base = os.environ.get("ECS_CONTAINER_METADATA_URI_V4")
    if not base:
        return None
    try:
        with urllib.request.urlopen(f"{base}/task", timeout=2) as resp:  # noqa: S310 - link-local ECS endpoint
            arn = json.load(resp).get("TaskARN")
    except (OSError, ValueError):
        return None
    return arn if isinstance(arn, str) and arn else None


def main() -> int:
    harden_runner_process()
    quiet_noisy_loggers()
    task_id = os.environ.get("TASK_ID", "").strip()
    if not task_id:
        get_logger().error("TASK_ID is not set")
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    config.freeze_warm_state()
    arn = ecs_task_arn()
    try:
        return run_by_id(task_id, run_mode="fargate", runner_id=f"fargate:{arn}" if arn else None)
    finally:
        flush_metrics()


if __name__ == "__main__":
    sys.exit(main())
