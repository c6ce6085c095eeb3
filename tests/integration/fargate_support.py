"""Long runs in the runner's integration tests, as on AWS: the runner hands them to ECS (`ecs.run_task`,
FARGATE_MODE=ecs) — the session's moto here — and the test plays ECS for the task that was started: it runs the
registered container's command (`python -m runner.fargate_main`) with the run_task container overrides (TASK_ID)
and a task metadata endpoint v4 (ECS_CONTAINER_METADATA_URI_V4) that answers the task's ARN. (run-local's own
ECS emulation, local_runtime/ecs.py, does the same for every task moto says is running.)

moto runs a FARGATE task only in a cluster whose default capacity provider is FARGATE (as the template's
RunnerCluster), and only with `memory` on the container, the default VPC's subnet and `securityGroups: []`
(ECS_SECURITY_GROUPS="").
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from agent_machine import aws
from agent_machine.settings import get_settings

CONTAINER = "runner"
COMMAND = ["python", "-m", "runner.fargate_main"]  # the template's RunnerTaskDefinition command


class _Metadata(ThreadingHTTPServer):
    daemon_threads = True
    arns: dict[str, str]  # ECS task id -> ARN


class _MetadataHandler(BaseHTTPRequestHandler):
    server: _Metadata

    def do_GET(self) -> None:
        parts = [p for p in self.path.split("/") if p]  # /v4/<task id>/task
        arn = self.server.arns.get(parts[1]) if len(parts) == 3 and parts[0] == "v4" and parts[2] == "task" else None
        body = json.dumps({"TaskARN": arn}).encode() if arn else b"{}"
        self.send_response(200 if arn else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class FargateTask:
    """A started ECS task, run as `python -m runner.fargate_main` by the test."""

    arn: str
    task_id: str  # the agent machine's task
    proc: subprocess.Popen[bytes]

    def wait(self, timeout: float = 120.0) -> int:
        return self.proc.wait(timeout)

    def terminate(self) -> None:
        """What ecs:StopTask does first."""
        self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@dataclass
class Ecs:
    cluster: str
    task_definition: str  # its ARN
    subnet: str
    client: Any
    _metadata: _Metadata
    running: list[FargateTask] = field(default_factory=list)

    def started(self, task_id: str, *, timeout: float = 30.0) -> dict[str, Any]:
        """The ECS task the runner started for `task_id` (waits for it), as DescribeTasks shows it."""

        def find() -> dict[str, Any] | None:
            arns = self.client.list_tasks(cluster=self.cluster, startedBy=f"agent-machine-{task_id}")["taskArns"]
            if not arns:
                return None
            return dict(self.client.describe_tasks(cluster=self.cluster, tasks=arns, include=["TAGS"])["tasks"][0])

        end = time.monotonic() + timeout
        while (found := find()) is None:
            assert time.monotonic() < end, f"no ECS task was started for task {task_id}"
            time.sleep(0.2)
        return found

    def run(self, ecs_task: dict[str, Any], *, env: Mapping[str, str] | None = None) -> FargateTask:
        """Start the task's container command with its overrides, as ECS would."""
        definition = self.client.describe_task_definition(taskDefinition=ecs_task["taskDefinitionArn"])
        container = next(c for c in definition["taskDefinition"]["containerDefinitions"] if c["name"] == CONTAINER)
        override = next(
            o for o in ecs_task["overrides"]["containerOverrides"] if o.get("name") == CONTAINER
        )  # the runner's TASK_ID
        variables = {e["name"]: e["value"] for e in override.get("environment", [])}
        arn = str(ecs_task["taskArn"])
        ecs_id = arn.rsplit("/", 1)[-1]
        self._metadata.arns[ecs_id] = arn
        port = self._metadata.server_address[1]
        argv = [sys.executable if part == "python" else str(part) for part in container["command"]]
        proc = subprocess.Popen(
            argv,
            env={
                **os.environ,
                **variables,
                "ECS_CONTAINER_METADATA_URI_V4": f"http://127.0.0.1:{port}/v4/{ecs_id}",
                **(env or {}),
            },
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a container: its own process group
        )
        task = FargateTask(arn, variables["TASK_ID"], proc)
        self.running.append(task)
        return task

    def run_started(self, task_id: str, *, env: Mapping[str, str] | None = None) -> FargateTask:
        return self.run(self.started(task_id), env=env)


@contextmanager
def enable_ecs(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> Iterator[Ecs]:
    """A FARGATE cluster and the runner's task definition in the emulator, and the runner configured to use them."""
    prefix = f"e{uuid.uuid4().hex[:8]}"
    region = get_settings().aws_region
    ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name=region)
    client = boto3.client("ecs", endpoint_url=endpoint, region_name=region)
    subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    subnet = sorted(s["SubnetId"] for s in subnets)[0]
    cluster = f"{prefix}-runners"
    client.create_cluster(
        clusterName=cluster,
        capacityProviders=["FARGATE", "FARGATE_SPOT"],
        defaultCapacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1}],
    )
    definition = client.register_task_definition(
        family=f"{prefix}-runner",
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="256",
        memory="512",
        containerDefinitions=[
            {"name": CONTAINER, "image": "runner", "essential": True, "memory": 512, "command": COMMAND}
        ],
    )["taskDefinition"]["taskDefinitionArn"]
    for name, value in {
        "FARGATE_MODE": "ecs",
        "ECS_CLUSTER": cluster,
        "ECS_TASK_DEFINITION": definition,
        "ECS_SUBNETS": subnet,
        "ECS_SECURITY_GROUPS": "",
        "ECS_CONTAINER_NAME": CONTAINER,
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    aws.reset_clients()
    metadata = _Metadata(("127.0.0.1", 0), _MetadataHandler)
    metadata.arns = {}
    threading.Thread(target=metadata.serve_forever, daemon=True).start()
    ecs = Ecs(cluster, definition, subnet, client, metadata)
    try:
        yield ecs
    finally:
        for task in ecs.running:
            task.kill()
        metadata.shutdown()
        metadata.server_close()
