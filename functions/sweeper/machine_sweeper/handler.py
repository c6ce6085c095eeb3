"""Sweeper Lambda, run by an EventBridge schedule: tasks whose runner died go back to the queue (domain/sweeper.py).

A Fargate run whose heartbeat went stale may still have its ECS task (hung, partitioned): it is stopped first, so
two runners never work on one task. The scheduled event carries nothing the sweep needs.
"""

from __future__ import annotations

from typing import Any

from agent_machine import aws
from agent_machine.domain import sweeper
from agent_machine.models import Task
from agent_machine.observability import get_logger, quiet_noisy_loggers
from agent_machine.settings import get_settings
from botocore.exceptions import ClientError

FARGATE_PREFIX = "fargate:"  # runner ids of Fargate runs: fargate:<ECS task ARN>

logger = get_logger()
quiet_noisy_loggers()


def stop_fargate_run(task: Task) -> None:
    """ecs:StopTask on the lost run's ECS task, if it was a Fargate run (a task already gone is fine)."""
    settings = get_settings()
    runner_id = task.runner_id or ""
    if task.run_mode != "fargate" or not runner_id.startswith(FARGATE_PREFIX) or not settings.ecs_cluster:
        return
    arn = runner_id.removeprefix(FARGATE_PREFIX)
    try:
        aws.ecs().stop_task(cluster=settings.ecs_cluster, task=arn, reason="agent-machine: heartbeat went stale")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code", "") not in ("InvalidParameterException", "ClientException"):
            raise  # (those two: the task is gone already)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    report = sweeper.sweep(stop_run=stop_fargate_run)
    summary = {
        "requeued": report.requeued,
        "failed": report.failed,
        "stopped": report.stopped,
        "skipped": report.skipped,
    }
    if report.requeued or report.failed or report.stopped:
        logger.info("swept lost runs", extra=summary)
    return summary
