"""The local runtime's ECS emulation (local_runtime.ecs.EcsAgent) over the session's moto server: `ecs.run_task`
starts the container's command as a process with the task definition's environment and the run's overrides,
the task metadata endpoint names its task, `ecs.stop_task` stops the process (SIGTERM, SIGKILL after the
container's stopTimeout), a process that exits stops its task; and the runner's own dispatch (FARGATE_MODE=ecs,
boto3 run_task) runs a long task to its end there, as on AWS."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from agent_machine.models import TaskStatus
from agent_machine.store import tasks
from local_runtime.ecs import EXITED_REASON, EcsAgent, keep_tasks_running
from local_runtime.emulator import MotoServer
from local_runtime.function_env import LocalEnvironment
from local_runtime.provision import Provisioned, provision
from local_runtime.template import ROOT, task_definitions
from local_runtime.workers import Processes, proc_stat

from tests.conftest import TEST_SECRETS, reset_caches
from tests.fakes.fake_claude import COST_PER_RESPONSE_USD as COST
from tests.integration.runner_support import invoke, receive, submit, wait_until

# The container of the probe task definition: writes its environment to <PROBE_OUT>/<TASK_ID>.json, then
# MODE=exit exits, MODE=wait waits for SIGTERM (and writes <TASK_ID>.terminated), MODE=ignore ignores it.
PROBE = """
import json, os, signal, sys, time
out = os.path.join(os.environ["PROBE_OUT"], os.environ["TASK_ID"])
def on_term(signum, frame):
    open(out + ".terminated", "w").close()
    sys.exit(0)
mode = os.environ.get("MODE", "wait")
signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "ignore" else on_term)
with open(out + ".tmp", "w") as fh:
    json.dump({"pid": os.getpid(), "env": dict(os.environ)}, fh)
os.rename(out + ".tmp", out + ".json")
while mode != "exit":
    time.sleep(0.1)
"""


@dataclass
class LocalEcs:
    agent: EcsAgent
    provisioned: Provisioned
    client: Any
    cluster: str
    subnet: str
    out: Path
    probe: str  # the probe task definition's ARN

    def run(self, task_definition: str, container: str, **env: str) -> str:
        response = self.client.run_task(
            cluster=self.cluster,
            taskDefinition=task_definition,
            count=1,
            networkConfiguration={"awsvpcConfiguration": {"subnets": [self.subnet], "securityGroups": []}},
            overrides={
                "containerOverrides": [
                    {"name": container, "environment": [{"name": k, "value": v} for k, v in env.items()]}
                ]
            },
        )
        return str(response["tasks"][0]["taskArn"])

    def started(self, task_id: str) -> dict[str, Any]:
        path = self.out / f"{task_id}.json"
        wait_until(path.exists, timeout=60)
        seen: dict[str, Any] = json.loads(path.read_text())
        return seen

    def described(self, arn: str) -> dict[str, Any]:
        found: dict[str, Any] = self.client.describe_tasks(cluster=self.cluster, tasks=[arn])["tasks"][0]
        return found


def alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat.state != "Z"


@pytest.fixture
def local_ecs(
    stack: Provisioned, moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalEcs]:
    # The stack again (same prefix: its tables and queues are kept), with its ECS cluster and task definition.
    prefix = stack.resolver.parameters["AWS::StackName"]
    provisioned = provision(
        endpoint=moto_server.endpoint, prefix=prefix, secret_values=TEST_SECRETS, queue_visibility_timeout=30, ecs=True
    )
    keep_tasks_running(moto_server.endpoint, os.environ["AWS_ACCESS_KEY_ID"])
    cluster = provisioned.clusters["RunnerCluster"]
    subnet = provisioned.resolver.parameters["FargateSubnets"]
    # What the runner's dispatch reads (the template gives the functions these, with FargateEnabled).
    monkeypatch.setenv("FARGATE_MODE", "ecs")
    monkeypatch.setenv("ECS_CLUSTER", cluster)
    monkeypatch.setenv("ECS_TASK_DEFINITION", provisioned.task_definitions["RunnerTaskDefinition"])
    monkeypatch.setenv("ECS_SUBNETS", subnet)
    monkeypatch.setenv("ECS_SECURITY_GROUPS", "")
    monkeypatch.setenv("RUNNER_WORK_ROOT", str(tmp_path / "runner"))
    reset_caches()
    client = boto3.client("ecs", endpoint_url=moto_server.endpoint, region_name="us-east-1")
    out = tmp_path / "out"
    out.mkdir()
    probe = client.register_task_definition(
        family=f"{prefix}-probe",
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="256",
        memory="512",
        containerDefinitions=[
            {
                "name": "probe",
                "image": "local",
                "essential": True,
                "memory": 512,
                "command": ["python", "-c", PROBE],
                "environment": [
                    {"name": "TASK_DEF_ONLY", "value": "from-the-definition"},
                    {"name": "PROBE_OUT", "value": str(out)},
                ],
                "stopTimeout": 2,
            }
        ],
    )["taskDefinition"]["taskDefinitionArn"]
    names = {
        str(c["Name"]): [str(e["Name"]) for e in c.get("Environment", [])]
        for spec in task_definitions(provisioned.template)
        for c in spec.properties.get("ContainerDefinitions", [])
    }
    local = LocalEnvironment(
        user_env=dict(os.environ),
        region="us-east-1",
        endpoint=moto_server.endpoint,
        credentials={k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
    )
    processes = Processes()
    agent = EcsAgent(
        cluster=cluster,
        endpoint=moto_server.endpoint,
        region="us-east-1",
        local=local,
        template_names=names,
        code_dirs=[str(ROOT / "runner_container"), str(ROOT / "layers" / "core" / "python")],
        processes=processes,
        cwd=str(ROOT),
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="ecs-test-loop", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(agent.start(), loop).result(60)
    try:
        yield LocalEcs(agent, provisioned, client, cluster, subnet, out, probe)
    finally:
        asyncio.run_coroutine_threadsafe(agent.stop(10), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_run_task_starts_the_command_with_the_task_definition_environment_and_stop_task_stops_it(
    local_ecs: LocalEcs,
) -> None:
    task_id = f"t-{uuid.uuid4().hex[:8]}"
    arn = local_ecs.run(local_ecs.probe, "probe", TASK_ID=task_id)
    seen = local_ecs.started(task_id)
    env = seen["env"]
    assert env["TASK_DEF_ONLY"] == "from-the-definition"  # the registered container's variables
    assert env["TASK_ID"] == task_id  # the run_task container override
    assert env["AWS_ENDPOINT_URL"] == local_ecs.agent.local.endpoint
    assert env["AWS_ACCESS_KEY_ID"] == os.environ["AWS_ACCESS_KEY_ID"]
    assert "POWERTOOLS_DEV" not in env  # the test process's own environment is not passed on
    with urllib.request.urlopen(f"{env['ECS_CONTAINER_METADATA_URI_V4']}/task", timeout=10) as resp:
        metadata = json.loads(resp.read())
    assert metadata["TaskARN"] == arn and metadata["LaunchType"] == "FARGATE"
    pid = int(seen["pid"])
    stat = proc_stat(pid)
    assert stat is not None and stat.sid == pid  # a session of its own
    assert local_ecs.described(arn)["lastStatus"] == "RUNNING"  # describing it does not age it

    local_ecs.client.stop_task(cluster=local_ecs.cluster, task=arn, reason="stopped by the test")
    wait_until(lambda: (local_ecs.out / f"{task_id}.terminated").exists(), timeout=30)  # SIGTERM first
    wait_until(lambda: not alive(pid), timeout=30)
    described = local_ecs.described(arn)
    assert (described["lastStatus"], described["stoppedReason"]) == ("STOPPED", "stopped by the test")


def test_a_task_whose_process_exits_is_stopped_in_ecs(local_ecs: LocalEcs) -> None:
    task_id = f"t-{uuid.uuid4().hex[:8]}"
    arn = local_ecs.run(local_ecs.probe, "probe", TASK_ID=task_id, MODE="exit")
    pid = int(local_ecs.started(task_id)["pid"])
    wait_until(lambda: not alive(pid), timeout=30)
    described = wait_until(lambda: (d := local_ecs.described(arn))["lastStatus"] == "STOPPED" and d, timeout=30)
    assert described["stoppedReason"] == EXITED_REASON


def test_a_task_that_ignores_sigterm_is_killed_after_its_stop_timeout(local_ecs: LocalEcs) -> None:
    task_id = f"t-{uuid.uuid4().hex[:8]}"
    arn = local_ecs.run(local_ecs.probe, "probe", TASK_ID=task_id, MODE="ignore")
    pid = int(local_ecs.started(task_id)["pid"])
    stopped_at = time.monotonic()
    local_ecs.client.stop_task(cluster=local_ecs.cluster, task=arn, reason="stop")
    wait_until(lambda: not alive(pid), timeout=60)
    assert time.monotonic() - stopped_at >= 2  # the container's stopTimeout, then SIGKILL
    assert not (local_ecs.out / f"{task_id}.terminated").exists()


def test_the_runner_hands_a_long_run_to_the_local_ecs(local_ecs: LocalEcs) -> None:
    task = submit("[[text:done on fargate]] implement it", agent="executor")
    started = time.monotonic()
    assert invoke(local_ecs.provisioned, receive(task.task_id)) == {"batchItemFailures": []}
    assert time.monotonic() - started < 10  # the Lambda only dispatched
    done = wait_until(lambda: (t := tasks.get(task.task_id)) and t.status.terminal and t, timeout=120)
    assert done.status == TaskStatus.COMPLETED and done.result == "done on fargate"
    assert done.run_mode == "fargate" and done.cost_usd == pytest.approx(COST)
    (arn,) = [a for a in local_ecs.client.list_tasks(cluster=local_ecs.cluster)["taskArns"]]
    assert done.runner_id == f"fargate:{arn}"  # read from the task metadata endpoint
    wait_until(lambda: local_ecs.described(arn)["lastStatus"] == "STOPPED", timeout=30)
    assert local_ecs.agent.launched == 1
