"""Long runs: hand a task to the Fargate runner (the same image, `python -m runner.fargate_main`, TASK_ID set).

FARGATE_MODE=ecs: `ecs.run_task` on the runner task definition with TASK_ID as a container override.
FARGATE_MODE=local: the local runtime plays Fargate with a child process of the same entry point and the
same environment; the children are kept here so the local runtime can end them (`shutdown_local_children`).
FARGATE_MODE=off, or ECS not configured (no task definition or subnets): tasks stay on Lambda.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from agent_machine import aws
from agent_machine.models import AgentSpec, Task
from agent_machine.settings import get_settings

from runner import config

if TYPE_CHECKING:
    from mypy_boto3_ecs.type_defs import NetworkConfigurationTypeDef


class DispatchFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Dispatched:
    mode: str
    ref: str  # the ECS task ARN, or "pid:<n>" locally


_children: dict[str, subprocess.Popen[bytes]] = {}
_lock = threading.Lock()


def available() -> bool:
    settings = get_settings()
    if settings.fargate_mode == "local":
        return True
    if settings.fargate_mode == "ecs":
        return bool(settings.ecs_cluster and settings.ecs_task_definition and settings.ecs_subnets)
    return False


def should_dispatch(agent: AgentSpec) -> bool:
    """Long-running agents go to Fargate when it is there (else they run on Lambda, bounded by its 15 minutes)."""
    return agent.long_running and available()


def dispatch(task: Task) -> Dispatched:
    settings = get_settings()
    if settings.fargate_mode == "local":
        return _spawn_local(task.task_id)
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


def _spawn_local(task_id: str) -> Dispatched:
    env = {**os.environ, "TASK_ID": task_id}
    pythonpath = [str(config.code_root()), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(pythonpath))
    # A session of its own: a Ctrl-C in the runtime's terminal (SIGINT to its process group) must not kill the
    # run with a KeyboardInterrupt and leave the task running; the runtime stops it with SIGTERM on shutdown.
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner.fargate_main"], env=env, stdin=subprocess.DEVNULL, start_new_session=True
    )
    with _lock:
        for done in [k for k, p in _children.items() if p.poll() is not None]:
            del _children[done]
        _children[task_id] = proc
    return Dispatched("local", f"pid:{proc.pid}")


def local_children() -> dict[str, subprocess.Popen[bytes]]:
    with _lock:
        return {k: p for k, p in _children.items() if p.poll() is None}


def shutdown_local_children(timeout: float = 15.0) -> None:
    """SIGTERM every local "Fargate" child (each interrupts its CLI and records the task), then SIGKILL stragglers."""
    with _lock:
        children = list(_children.values())
        _children.clear()
    for proc in children:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    end = time.monotonic() + timeout
    for proc in children:
        try:
            proc.wait(max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
