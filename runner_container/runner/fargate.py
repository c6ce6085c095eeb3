"""Long runs: hand a task to the Fargate runner (the same image, `python -m runner.fargate_main`, TASK_ID set).

FARGATE_MODE=ecs: `ecs.run_task` on the runner task definition (ECS_TASK_DEFINITION) in ECS_CLUSTER, in the
subnets ECS_SUBNETS with the security groups ECS_SECURITY_GROUPS (may be empty: the subnets' default), TASK_ID as
a container override. FARGATE_MODE=off, or ECS not configured (no task definition or subnets): tasks stay on
Lambda.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from agent_machine import aws
from agent_machine.models import AgentSpec, Task
from agent_machine.settings import get_settings

if TYPE_CHECKING:
    from mypy_boto3_ecs.type_defs import NetworkConfigurationTypeDef


class DispatchFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Dispatched:
    mode: str
    ref: str  # the ECS task ARN


def available() -> bool:
    settings = get_settings()
    if settings.fargate_mode == "ecs":
        return bool(settings.ecs_cluster and settings.ecs_task_definition and settings.ecs_subnets)
    return False


def should_dispatch(agent: AgentSpec) -> bool:
    """Long-running agents go to Fargate when it is there (else they run on Lambda, bounded by its 15 minutes)."""
    return agent.long_running and available()


def dispatch(task: Task) -> Dispatched:
    settings = get_settings()
    public_ip: Literal["ENABLED", "DISABLED"] = (
        "DISABLED" if os.environ.get("ECS_ASSIGN_PUBLIC_IP", "").upper() == "DISABLED" else "ENABLED"
    )
    network: NetworkConfigurationTypeDef = {
        "awsvpcConfiguration": {
            "subnets": settings.ecs_subnets,
            "securityGroups": settings.ecs_security_groups,
            "assignPublicIp": public_ip,
        }
    }
    resp = aws.ecs().run_task(
        cluster=settings.ecs_cluster or "",
        taskDefinition=settings.ecs_task_definition or "",
        count=1,
        startedBy=f"agent-machine-{task.task_id}"[:128],
        networkConfiguration=network,
        overrides={
            "containerOverrides": [
                {
                    "name": settings.ecs_container_name,
                    "environment": [{"name": "TASK_ID", "value": task.task_id}],
                }
            ]
        },
        tags=[{"key": "task_id", "value": task.task_id}, {"key": "agent", "value": task.agent}],
    )
    started = resp.get("tasks", [])
    if not started:
        reasons = "; ".join(f"{f.get('reason')} {f.get('detail', '')}".strip() for f in resp.get("failures", []))
        raise DispatchFailed(f"ecs run_task started nothing: {reasons or 'no reason given'}")
    return Dispatched("ecs", started[0].get("taskArn", ""))
