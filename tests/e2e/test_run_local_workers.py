"""The local runtime runs each function in its own execution environments, as Lambda does (issue 11), seen through
`python -m local_runtime` as a child process.

A template derived from template.yaml points ApiFunction (HTTP) and RunnerFunction (SQS, MaximumConcurrency
MAX_CONCURRENT_TASKS=2) at probe handlers (worker_probes.py) and gives each a variable of its own: each
function's worker sees its own template environment and nothing of the other's nor of the runtime's, a warm
worker is reused, a crashed or timed-out one is replaced (the invocation fails, the SQS message comes back), and
no more than MaximumConcurrency runner invocations run at once.

With the real template and the fake CLI: a Ctrl-C to the runtime, while a chat runs on a runner worker and an
executor task on the local ECS, stops everything within seconds, leaves no process behind, and both tasks end
`stopped` with their cost.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import pytest
from local_runtime.template import load
from local_runtime.workers import ProcStat, children_of, proc_stat

from tests.conftest import FAKE_CLAUDE
from tests.e2e.conftest import RunningMachine, start_machine
from tests.faults import chat, get_task, runtime_env, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

RUNNER_TIMEOUT = 3  # RunnerFunction's and ApiFunction's Timeout in the probe template
VISIBILITY = 6  # LOCAL_QUEUE_VISIBILITY_TIMEOUT: a failed message is received again after this
COST_PER_RESPONSE = 0.00423  # fake_claude's cost of one model response ([[hang]] answers once)


@dataclass
class ProbeMachine:
    machine: RunningMachine
    log: Path
    queue_url: str
    sqs: Any
    runtime: dict[str, Any]

    def send(self, **body: Any) -> None:
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps(body))

    def entries(self, tag: str) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        lines = [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]
        return [e for e in lines if e["tag"] == tag]

    def done(self, tag: str, count: int = 1) -> list[dict[str, Any]]:
        """The tag's `done` entries once there are `count` of them."""

        def finished() -> list[dict[str, Any]] | None:
            found = [e for e in self.entries(tag) if e["event"] == "done"]
            return found if len(found) >= count else None

        result: list[dict[str, Any]] = wait_for(finished, timeout=120, what=f"{count} x {tag} done")
        return result

    def get(self, path: str) -> tuple[int, Any, float]:
        started = time.monotonic()
        try:
            with urllib.request.urlopen(f"{self.machine.base_url}{path}", timeout=60) as resp:
                return resp.status, json.loads(resp.read()), time.monotonic() - started
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null"), time.monotonic() - started


def probe_template(path: Path, log: Path) -> None:
    """template.yaml with ApiFunction and RunnerFunction pointed at the probes, written as JSON (long-form
    intrinsics: the runtime reads it as it reads the YAML)."""
    template = load()
    resources = template["Resources"]
    api = resources["ApiFunction"]["Properties"]
    api["Handler"] = "tests.e2e.worker_probes.http_probe"
    api["Timeout"] = RUNNER_TIMEOUT
    api["Environment"]["Variables"]["API_ONLY_PROBE"] = "api-side"
    runner = resources["RunnerFunction"]["Properties"]
    runner["ImageConfig"]["Command"] = ["tests.e2e.worker_probes.sqs_probe"]
    runner["Timeout"] = RUNNER_TIMEOUT
    runner["Environment"]["Variables"].update({"RUNNER_ONLY_PROBE": "runner-side", "PROBE_LOG": str(log)})
    path.write_text(json.dumps(template))


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProbeMachine]:
    tmp = tmp_path_factory.mktemp("workers")
    log = tmp / "probe.jsonl"
    template = tmp / "template.json"
    probe_template(template, log)
    machine = start_machine(
        tmp,
        persist=False,
        extra_env={
            "LOCAL_TEMPLATE": str(template),
            "MAX_CONCURRENT_TASKS": "2",
            "LOCAL_QUEUE_VISIBILITY_TIMEOUT": str(VISIBILITY),
            "LEAK_CANARY": "only-in-the-runtime",  # set for the runtime, named by no template nor pass-through
        },
    )
    try:
        env = runtime_env(machine)
        sqs = boto3.client(
            "sqs",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        runtime = json.loads((machine.data_dir / "runtime.json").read_text())
        yield ProbeMachine(machine, log, env["TASK_QUEUE_URL"], sqs, runtime)
    finally:
        machine.stop()


def alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat.state != "Z"


def test_each_function_sees_only_its_own_template_environment(probes: ProbeMachine) -> None:
    status, api, _ = probes.get("/webhooks/env")
    assert status == 200, api
    probes.send(tag="env", action="ok", env=True)
    (runner,) = probes.done("env")
    api_env, runner_env = api["env"], runner["env"]

    assert api["pid"] != runner["pid"] and probes.runtime["pid"] not in (api["pid"], runner["pid"])
    assert api["function_name"] == api_env["AWS_LAMBDA_FUNCTION_NAME"] == "ApiFunction"
    assert runner_env["AWS_LAMBDA_FUNCTION_NAME"] == "RunnerFunction"
    # Each its own variables (template Globals are shared, a function's own are not) ...
    assert api_env["API_ONLY_PROBE"] == "api-side" and "RUNNER_ONLY_PROBE" not in api_env
    assert runner_env["RUNNER_ONLY_PROBE"] == "runner-side" and "API_ONLY_PROBE" not in runner_env
    assert (api_env["POWERTOOLS_SERVICE_NAME"], runner_env["POWERTOOLS_SERVICE_NAME"]) == ("api", "runner")
    assert api_env["TASKS_TABLE"] == runner_env["TASKS_TABLE"] == probes.runtime["env"]["TASKS_TABLE"]
    assert "PROBE_LOG" not in api_env
    # ... the runner's local settings only for the runner, nothing of the runtime's own environment ...
    assert runner_env["CLAUDE_CLI_PATH"] == str(FAKE_CLAUDE) and "CLAUDE_CLI_PATH" not in api_env
    for env in (api_env, runner_env):
        assert "LEAK_CANARY" not in env
        assert not {"API_TOKEN", "GITHUB_WEBHOOK_SECRET", "JIRA_WEBHOOK_SECRET"} & set(env)  # from Secrets Manager
        # ... the emulator and the run's own credentials (the only ones it answers) ...
        assert env["AWS_ENDPOINT_URL"] == probes.runtime["endpoint"]
        assert env["AWS_ACCESS_KEY_ID"] == probes.runtime["credentials"]["AWS_ACCESS_KEY_ID"]
        # ... and the template's conditions evaluated: the runtime plays ECS, so Fargate is on as on AWS.
        assert env["FARGATE_MODE"] == "ecs" and env["ECS_TASK_DEFINITION"].startswith("arn:aws:ecs:")
        assert env["ECS_SUBNETS"].startswith("subnet-") and env["ECS_SECURITY_GROUPS"] == ""
    assert runner_env["CLAUDE_CODE_USE_BEDROCK"] == "0"
    assert 0 < api["remaining_ms"] <= RUNNER_TIMEOUT * 1000
    # What a worker prints reaches the runtime's output, marked with its function and process.
    wait_for(lambda: f"[ApiFunction:{api['pid']}] http probe" in probes.machine.logs(), timeout=30, what="a log line")


def test_a_warm_worker_is_reused(probes: ProbeMachine) -> None:
    first = probes.get("/webhooks/warm")
    second = probes.get("/webhooks/warm")
    assert first[0] == second[0] == 200
    assert first[1]["pid"] == second[1]["pid"]
    probes.send(tag="warm-1")
    (one,) = probes.done("warm-1")
    probes.send(tag="warm-2")
    (two,) = probes.done("warm-2")
    assert one["pid"] == two["pid"]


def test_a_crashed_worker_is_replaced_and_its_message_comes_back(probes: ProbeMachine) -> None:
    status, before, _ = probes.get("/webhooks/before")
    assert status == 200
    status, body, _ = probes.get("/webhooks/crash?crash=1")
    assert (status, body) == (500, {"message": "Internal Server Error"})
    wait_for(lambda: not alive(before["pid"]), timeout=30, what="the crashed worker gone")
    status, after, _ = probes.get("/webhooks/after")
    assert status == 200 and after["pid"] != before["pid"]

    probes.send(tag="crash", action="crash")
    (done,) = probes.done("crash")
    (crashed,) = [e for e in probes.entries("crash") if e["event"] == "crash"]
    assert (crashed["receive_count"], done["receive_count"]) == (1, 2)  # failed, so received again
    assert crashed["message_id"] == done["message_id"] and done["pid"] != crashed["pid"]
    assert not alive(crashed["pid"])
    assert "RunnerFunction: invocation failed: Runtime.ExitError" in probes.machine.logs()


def test_a_timed_out_invocation_fails_and_its_message_comes_back(probes: ProbeMachine) -> None:
    status, before, _ = probes.get("/webhooks/before")
    assert status == 200
    status, body, took = probes.get("/webhooks/slow?sleep=50")
    assert (status, body) == (500, {"message": "Internal Server Error"})  # a Lambda error at the edge
    assert took < 45  # the function's Timeout, not the sleep, ended it
    wait_for(lambda: not alive(before["pid"]), timeout=30, what="the timed-out worker killed")
    assert f"Task timed out after {RUNNER_TIMEOUT:.2f} seconds" in probes.machine.logs()
    status, after, _ = probes.get("/webhooks/after")
    assert status == 200 and after["pid"] != before["pid"]

    probes.send(tag="hang", action="hang")
    (done,) = probes.done("hang")
    (hung,) = [e for e in probes.entries("hang") if e["event"] == "hang"]
    assert (hung["receive_count"], done["receive_count"]) == (1, 2)
    assert done["start"] - hung["start"] >= RUNNER_TIMEOUT  # received again only once the first had failed
    assert done["pid"] != hung["pid"] and not alive(hung["pid"])


def test_maximum_concurrency_bounds_the_runner_invocations(probes: ProbeMachine) -> None:
    for _ in range(6):
        probes.send(tag="concurrency", action="sleep", seconds=1)
    runs = probes.done("concurrency", count=6)
    edges = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs])
    running, peak = 0, 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert peak == 2  # MAX_CONCURRENT_TASKS: two at a time, never more
    assert len({r["pid"] for r in runs}) <= 2


# ------------------------------------------------------------------------------------------------------ Ctrl-C


def descendants(root: int) -> list[ProcStat]:
    found: list[ProcStat] = []
    todo = [root]
    while todo:
        for child in children_of(todo.pop()):
            found.append(child)
            todo.append(child.pid)
    return found


def still_running(snapshot: list[ProcStat]) -> list[ProcStat]:
    left = []
    for proc in snapshot:
        now = proc_stat(proc.pid)
        if now is not None and now.start_ticks == proc.start_ticks and now.state != "Z":
            left.append(now)
    return left


def has_assistant_output(machine: RunningMachine, task_id: str) -> bool:
    detail = get_task(machine, task_id)
    return detail["task"]["status"] == "running" and any(
        e.get("payload", {}).get("kind") == "assistant" for e in detail["output"]
    )


def test_a_ctrl_c_stops_everything_and_running_tasks_end_stopped_with_their_cost(tmp_path: Path) -> None:
    machine = start_machine(tmp_path, extra_env={"MAX_CONCURRENT_TASKS": "2"})
    try:
        secret = "ctrl-c-webhook-secret-0123456789"
        status, created = machine.api(
            "POST",
            "/api/webhooks",
            {"name": "long", "agent": "executor", "secret": secret, "prompt_template": "{payload.text}"},
        )
        assert status == 201, created
        on_lambda = chat(machine, "[[hang]] a chat on a runner worker")["task_id"]
        payload = json.dumps({"text": "[[hang]] an executor on the local ECS"}).encode()
        digest = hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
        request = urllib.request.Request(
            f"{machine.base_url}/webhooks/long",
            data=payload,
            method="POST",
            headers={"Content-Type": "application/json", "X-Signature-256": f"sha256={digest}"},
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            on_ecs = json.loads(resp.read())["task_id"]
        for task_id in (on_lambda, on_ecs):
            wait_for(partial(has_assistant_output, machine, task_id), timeout=120, what=f"{task_id} streaming")
        ecs_task = get_task(machine, on_ecs)["task"]
        assert ecs_task["run_mode"] == "fargate" and ecs_task["runner_id"].startswith("fargate:arn:aws:ecs:")
        assert get_task(machine, on_lambda)["task"]["run_mode"] == "lambda"

        runtime = proc_stat(machine.process.pid)
        assert runtime is not None
        tree = descendants(machine.process.pid)
        commands = [Path(f"/proc/{p.pid}/cmdline").read_bytes() for p in tree]
        assert sum(b"runner.fargate_main" in c for c in commands) == 1
        assert sum(b"fake_claude" in c for c in commands) >= 2  # (and what they started)
        # Workers, tasks and CLIs have sessions of their own: a terminal's Ctrl-C reaches the runtime alone.
        assert all(p.sid != runtime.sid for p in tree)

        started = time.monotonic()
        machine.process.send_signal(signal.SIGINT)
        assert machine.process.wait(60) == 0, machine.logs()[-3000:]
        took = time.monotonic() - started
        assert took < 30, machine.logs()[-3000:]  # a few seconds: the runs' 5 s grace, booking, saving
        assert still_running(tree) == [], machine.logs()[-3000:]
    finally:
        machine.stop()

    again = start_machine(tmp_path, port=machine.port)
    try:
        for task_id, why in ((on_lambda, "shutdown"), (on_ecs, "terminated")):
            task = get_task(again, task_id)["task"]
            assert (task["status"], task["error_kind"]) == ("stopped", why), task
            assert task["cost_usd"] == pytest.approx(COST_PER_RESPONSE)
    finally:
        again.stop()
