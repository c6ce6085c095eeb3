"""A runner that dies mid-task: the task is retried or failed, never left "running"; a runner that keeps dying
ends in the dead-letter queue and the task is failed.

1. The whole local runtime (gateway, event sources, runner) is SIGKILLed while a CLI runs; a new runtime on
   the same data directory picks the task up again from the saved state and it finishes.
2. The runner's Lambda handler runs in a process of its own (as on Lambda), driven with the task's SQS message
   the way the event source mapping does; the CLI kills that process (SIGKILL, as an out-of-memory kill or a
   Lambda timeout would). The message is not deleted, comes back after its visibility timeout, the next runner
   takes the stale run over... and after MAX_TASK_ATTEMPTS receives SQS moves the message to the DLQ, whose
   handler fails the task.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from agent_machine import aws
from agent_machine.settings import get_settings
from agent_machine.store import output, tasks
from local_runtime.events import LambdaContext, sqs_event
from local_runtime.provision import Provisioned
from runner import dlq_handler, sandbox

from tests.conftest import ROOT
from tests.e2e.conftest import start_machine
from tests.faults import (
    chat,
    get_task,
    kill_pids,
    paged,
    pids_with,
    reaping,
    seqs,
    wait_finished,
    wait_for,
    wait_status,
)
from tests.integration.runner_support import submit

SLOW_SECONDS = 15  # the CLI's first run must still be going when the runtime is killed (<= 10 s + margin)


@pytest.mark.e2e
def test_a_killed_runtime_retries_the_task_after_restart(tmp_path: Path) -> None:
    marker = f"kill9-{uuid.uuid4().hex[:12]}"
    machine = start_machine(tmp_path)
    with reaping(marker):
        try:
            created = chat(machine, f"[[slow:{SLOW_SECONDS}]] [[text:survived]] {marker}")
            task_id = created["task_id"]
            wait_status(machine, task_id, {"running"}, timeout=60)
            wait_for(lambda: pids_with(marker), timeout=30, what="the CLI running")
            running_since = time.time()
            # The runtime saves its tables every 10 s: kill it once a save has seen the task running.
            state = machine.data_dir / "state.json.gz"
            wait_for(
                lambda: state.exists() and state.stat().st_mtime > running_since + 0.2,
                timeout=20,
                what="an autosave while the task runs",
            )
            assert get_task(machine, task_id)["task"]["status"] == "running"
        finally:
            machine.stop(signal.SIGKILL)
        assert machine.process.returncode == -signal.SIGKILL
        # The CLI runs in its own session (so a stop reaches its whole process group) and outlives a runtime
        # killed outright; it is ours to clean up here.
        kill_pids(pids_with(marker))

        again = start_machine(tmp_path, port=machine.port)
        try:
            detail = wait_finished(again, task_id, timeout=120)
            task = detail["task"]
            assert task["status"] in ("completed", "failed"), task
            if task["status"] == "completed":
                assert task["attempt"] == 2, task  # retried once, by the new runtime
                assert task["result"] == "survived"
            events = detail["output"]
            numbers = seqs(events)
            assert numbers == list(range(1, len(numbers) + 1)), numbers  # unique and contiguous
            assert [e["type"] for e in events].count("task.started") == task["attempt"]
            terminal = [e for e in events if e["type"] in ("task.completed", "task.failed", "task.stopped")]
            assert len(terminal) == 1 and terminal[0] is events[-1]
            stuck = [t["task_id"] for t in paged(again, "/api/tasks", limit=500) if t["status"] == "running"]
            assert stuck == []
        finally:
            again.stop()


# ------------------------------------------------------------------------------------------ the DLQ path

DYING_CLI = """#!{python}
# A "claude" whose runner is killed (by the test: a root runner runs the CLI as another user, which may not
# signal it) once it has started streaming; it ends when its runner is gone.
import json, os, sys, time, uuid
print(json.dumps({{"type": "system", "subtype": "init", "session_id": str(uuid.uuid4()), "tools": [],
                  "mcp_servers": [], "model": "claude-sonnet-4-5", "permissionMode": "default"}}), flush=True)
runner = os.getppid()
deadline = time.monotonic() + 60
while os.getppid() == runner and time.monotonic() < deadline:
    time.sleep(0.05)
"""


def kill_when_streaming(runner: subprocess.Popen[str], cli_name: str, timeout: float = 60) -> None:
    """SIGKILL the runner once it has spawned the CLI (a child of it running `cli_name`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and runner.poll() is None:
        for proc in Path("/proc").iterdir():
            try:
                stat = (proc / "stat").read_text()
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2 :].split()[1]) == runner.pid and cli_name.encode() in cmdline:
                time.sleep(0.3)  # streaming has started
                runner.kill()
                return
        time.sleep(0.05)


RUNNER_PROCESS = """
import json, sys
from local_runtime.events import LambdaContext
from runner import config, lambda_handler
config.STALE_AFTER_SECONDS = 1.0  # the previous (dead) runner's heartbeat is stale after 1 s, not 30 s
with open(sys.argv[1]) as fh:
    event = json.load(fh)
result = lambda_handler.handler(event, LambdaContext("RunnerFunction", timeout_seconds=120))
print("handler returned", json.dumps(result), flush=True)
"""


def receive(queue_url: str, *, visibility: int, wait: int = 1) -> list[dict[str, Any]]:
    resp = aws.sqs().receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=1,
        WaitTimeSeconds=wait,
        VisibilityTimeout=visibility,
        AttributeNames=["All"],
    )
    return [dict(message) for message in resp.get("Messages", [])]


def test_a_runner_that_keeps_dying_ends_in_the_dlq_and_fails_the_task(
    stack: Provisioned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = tmp_path / "dying-claude"
    cli.write_text(DYING_CLI.format(python=sandbox.python_executable()))  # one the CLI's user can run
    cli.chmod(0o755)
    monkeypatch.setenv("CLAUDE_CLI_PATH", str(cli))
    monkeypatch.setenv("RUNNER_WORK_ROOT", str(tmp_path / "runner"))
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    settings = get_settings()
    attempts = settings.max_task_attempts
    assert attempts >= 2
    task = submit("this run never ends well")
    queue_arn = stack.resolver.attrs["TaskQueue.Arn"]

    for attempt in range(1, attempts + 1):
        messages = wait_for(
            lambda: receive(settings.task_queue_url, visibility=2),
            timeout=15,
            what=f"the task message (receive {attempt})",
        )
        assert json.loads(messages[0]["Body"])["task_id"] == task.task_id
        assert messages[0]["Attributes"]["ApproximateReceiveCount"] == str(attempt)
        event_path = tmp_path / f"event-{attempt}.json"
        event_path.write_text(json.dumps(sqs_event(messages, queue_arn)))
        with subprocess.Popen(
            [sys.executable, "-c", RUNNER_PROCESS, str(event_path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as runner:
            kill_when_streaming(runner, cli.name)
            stdout, stderr = runner.communicate(timeout=120)
        assert runner.returncode == -signal.SIGKILL, (runner.returncode, stdout[-2000:], stderr[-3000:])
        stored = tasks.get(task.task_id)
        assert stored is not None
        assert (stored.status.value, stored.attempt) == ("running", attempt), (stored.status, stored.attempt)
        time.sleep(1.1)  # let the dead runner's heartbeat go stale (STALE_AFTER_SECONDS = 1 in the runner)

    # The message has been received MAX_TASK_ATTEMPTS times: the next receive moves it to the dead-letter queue.
    time.sleep(1.5)
    assert receive(settings.task_queue_url, visibility=2, wait=2) == []
    dead = wait_for(lambda: receive(settings.task_dlq_url, visibility=30), timeout=10, what="the DLQ message")
    assert json.loads(dead[0]["Body"])["task_id"] == task.task_id

    result = dlq_handler.handler(
        sqs_event(dead, stack.resolver.attrs["TaskDeadLetterQueue.Arn"]),
        LambdaContext("DlqFunction", timeout_seconds=60),
    )
    assert result == {"batchItemFailures": []}
    failed = tasks.get(task.task_id)
    assert failed is not None
    assert failed.status.value == "failed" and failed.error_kind == "dead_letter", (failed.status, failed.error)
    assert failed.attempt == attempts
    # Every run's events are kept (each runner numbers after what the previous ones stored), and the failure
    # is the last event: a client that dedupes by (task_id, seq) sees all of it.
    events = output.read_events(task.task_id, 0)
    listing = [(e.seq, e.type.value, e.payload.get("kind")) for e in events]
    numbers = [e.seq for e in events]
    assert numbers == sorted(set(numbers)), listing
    assert [e.type.value for e in events].count("task.started") == attempts, listing
    assert events[-1].type.value == "task.failed", listing
    final = tasks.get(task.task_id)
    assert final is not None and final.last_seq == events[-1].seq, (final.last_seq if final else None, listing)
