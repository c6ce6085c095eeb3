"""`python -m runner.fargate_main`: the Fargate runner (the same image as the Lambda), one task per container.

TASK_ID names the task. It claims the task (queued, or a stale run), runs it without Lambda's time limit and
exits. SIGTERM (ecs:StopTask, a scale-in, the local runtime shutting down) interrupts the CLI with SIGINT so the
run is booked as stopped with its cost, before ECS's StopTimeout sends SIGKILL.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

from agent_machine.observability import get_logger, quiet_noisy_loggers
from agent_machine.settings import get_settings

from runner.orchestrator import flush_metrics, run_by_id
from runner.run import active_runs


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    get_logger().warning("SIGTERM: interrupting the run")
    for controller in active_runs().values():
        controller.request("terminated")


def main() -> int:
    quiet_noisy_loggers()
    task_id = os.environ.get("TASK_ID", "").strip()
    if not task_id:
        get_logger().error("TASK_ID is not set")
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    run_mode = "local" if get_settings().fargate_mode == "local" else "fargate"
    try:
        return run_by_id(task_id, run_mode=run_mode)
    finally:
        flush_metrics()


if __name__ == "__main__":
    sys.exit(main())
