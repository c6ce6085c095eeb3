"""Control of a run: stop, timeout, redelivery, stale takeover, one task per session at a time, the DLQ, long
runs handed to an ECS task (the emulator's; the test runs it), and SIGTERM to a Lambda environment or an ECS task."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from agent_machine import aws
from agent_machine.models import EventType, TaskStatus, iso, utcnow
from agent_machine.settings import get_settings
from agent_machine.store import output, tasks
from local_runtime.events import LambdaContext, sqs_event
from local_runtime.provision import Provisioned
from runner import cli, config, controller, dlq_handler, orchestrator
from runner.output import lifecycle_event

from tests.fakes.fake_claude import COST_PER_RESPONSE_USD as COST
from tests.integration.fargate_support import Ecs
from tests.integration.runner_support import (
    cli_pid,
    group_alive,
    in_background,
    invoke,
    receive,
    run_task,
    submit,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(autouse=True)
def work_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "runner"
    monkeypatch.setenv("RUNNER_WORK_ROOT", str(root))
    yield root


def test_stop_is_noticed_within_two_seconds_and_leaves_no_process(stack: Provisioned) -> None:
    task = submit("[[hang]] wait for me")
    message = receive(task.task_id)
    with in_background(lambda: invoke(stack, message)) as running:
        pgid = cli_pid(task.task_id)
        wait_until(lambda: any(e.type.value == "task.output" for e in output.read_events(task.task_id)))
        asked = time.monotonic()
        assert tasks.request_stop(task.task_id) is not None
        stopped = wait_until(lambda: (t := tasks.get(task.task_id)) and t.status.terminal and t, timeout=10)
        took = time.monotonic() - asked
        running.result(timeout=10)
    assert stopped.status == TaskStatus.STOPPED and stopped.error_kind == "stopped"
    assert took < 2.0, f"stop took {took:.2f} s"
    assert stopped.cost_usd == pytest.approx(COST)  # the CLI's result after SIGINT carries the cost so far
    assert not group_alive(pgid), "the CLI's process group outlived the run"
    events = output.read_events(task.task_id)
    assert events[-1].type.value == "task.stopped" and events[-1].payload["cost_usd"] == pytest.approx(COST)


def test_lambda_time_limit_interrupts_and_records_timed_out(
    stack: Provisioned, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "LAMBDA_SAFETY_MARGIN_SECONDS", 20.0)
    task = submit("[[hang]] forever")
    started = time.monotonic()
    invoke(stack, receive(task.task_id), timeout_seconds=26)  # 6 s for the run
    elapsed = time.monotonic() - started
    done = tasks.get(task.task_id)
    assert done is not None and done.status == TaskStatus.TIMED_OUT and done.error_kind == "timed_out"
    assert "Lambda's time limit" in (done.error or "")
    assert done.cost_usd == pytest.approx(COST)
    assert 5 < elapsed < 15


def test_a_cli_that_ignores_sigint_is_killed_after_the_grace_period(
    stack: Provisioned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stubborn = tmp_path / "stubborn-claude"
    stubborn.write_text(
        "#!/usr/bin/env python3\nimport signal, sys, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        'print(\'{"type":"system","subtype":"init","session_id":"s"}\', flush=True)\n'
        "time.sleep(120)\n"
    )
    stubborn.chmod(0o755)
    monkeypatch.setenv("CLAUDE_CLI_PATH", str(stubborn))
    monkeypatch.setattr(config, "STOP_GRACE_SECONDS", 1.0)
    get_settings.cache_clear()
    task = submit("anything")
    message = receive(task.task_id)
    with in_background(lambda: invoke(stack, message)) as running:
        pgid = cli_pid(task.task_id)
        time.sleep(0.3)
        tasks.request_stop(task.task_id)
        running.result(timeout=15)
    done = tasks.get(task.task_id)
    assert done is not None and done.status == TaskStatus.STOPPED
    assert "cost so far is unknown" in (done.error or "")
    assert not group_alive(pgid)


def test_redelivery_of_a_running_or_finished_task_does_nothing(stack: Provisioned) -> None:
    finished = run_task(stack, "[[text]] once")
    assert finished.status == TaskStatus.COMPLETED
    aws.sqs().send_message(
        QueueUrl=get_settings().task_queue_url, MessageBody=json.dumps({"task_id": finished.task_id})
    )
    result = invoke(stack, receive(finished.task_id))
    assert result == {"batchItemFailures": []}
    again = tasks.get(finished.task_id)
    assert again is not None and again.attempt == 1 and again.cost_usd == finished.cost_usd

    task = submit("[[hang]] busy")
    message = receive(task.task_id)
    with in_background(lambda: invoke(stack, message)) as running:
        cli_pid(task.task_id)
        aws.sqs().send_message(
            QueueUrl=get_settings().task_queue_url, MessageBody=json.dumps({"task_id": task.task_id})
        )
        duplicate = receive(task.task_id)
        started = time.monotonic()
        assert invoke(stack, duplicate) == {"batchItemFailures": []}
        assert time.monotonic() - started < 3  # acknowledged at once, no second CLI
        current = tasks.get(task.task_id)
        assert current is not None and current.status == TaskStatus.RUNNING and current.attempt == 1
        tasks.request_stop(task.task_id)
        running.result(timeout=10)


def test_a_stale_run_is_taken_over_and_numbering_continues(stack: Provisioned) -> None:
    task = submit("[[text:second try]] hello")
    runner_id = "lambda:dead-runner"
    claimed = tasks.start(task.task_id, runner_id, "lambda")
    assert claimed is not None
    # The dead runner had stored a few events and then stopped beating.
    dead = lifecycle_event(claimed, EventType.STARTED, {}, seq=1)
    output.put_chunk(task.task_id, [dead, dead.model_copy(update={"seq": 2})])
    tasks.set_fields(task.task_id, heartbeat_at=iso(utcnow() - timedelta(seconds=120)), last_seq=1)
    invoke(stack, receive(task.task_id))
    done = tasks.get(task.task_id)
    assert done is not None and done.status == TaskStatus.COMPLETED and done.result == "second try"
    assert done.attempt == 2 and done.runner_id != runner_id
    seqs = [e.seq for e in output.read_events(task.task_id)]
    assert seqs[:3] == [1, 2, 3] and seqs == sorted(set(seqs))


def test_a_stale_run_past_its_attempts_is_failed(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_TASK_ATTEMPTS", "1")
    get_settings.cache_clear()
    task = submit("[[text]] never again")
    tasks.start(task.task_id, "lambda:dead", "lambda")
    tasks.set_fields(task.task_id, heartbeat_at=iso(utcnow() - timedelta(seconds=120)))
    invoke(stack, receive(task.task_id))
    done = tasks.get(task.task_id)
    assert done is not None and done.status == TaskStatus.FAILED and done.error_kind == "runner_lost"


def test_one_task_per_session_at_a_time(stack: Provisioned) -> None:
    first = submit("[[hang]] first")
    first_msg = receive(first.task_id)
    with in_background(lambda: invoke(stack, first_msg)) as running:
        cli_pid(first.task_id)
        second = submit("[[text]] second", session_id=first.session_id)
        message = receive(second.task_id)
        result = invoke(stack, message)
        assert result == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
        waiting = tasks.get(second.task_id)
        assert waiting is not None and waiting.status == TaskStatus.QUEUED
        # It comes back after SESSION_BUSY_DELAY_SECONDS, not after the queue's visibility timeout.
        back = time.monotonic()
        tasks.request_stop(first.task_id)
        running.result(timeout=10)
        again = receive(second.task_id, timeout=config.SESSION_BUSY_DELAY_SECONDS + 5)
        assert time.monotonic() - back < config.SESSION_BUSY_DELAY_SECONDS + 3
    invoke(stack, again)
    done = tasks.get(second.task_id)
    assert done is not None and done.status == TaskStatus.COMPLETED


def test_session_busy_near_the_attempt_limit_requeues_a_fresh_message(stack: Provisioned) -> None:
    first = submit("[[hang]] first")
    first_msg = receive(first.task_id)
    with in_background(lambda: invoke(stack, first_msg)) as running:
        cli_pid(first.task_id)
        second = submit("[[text]] second", session_id=first.session_id)
        message = receive(second.task_id)
        message["Attributes"]["ApproximateReceiveCount"] = str(get_settings().max_task_attempts)
        assert invoke(stack, message) == {"batchItemFailures": []}  # acknowledged: a delayed copy replaces it
        fresh = receive(second.task_id, timeout=config.SESSION_BUSY_DELAY_SECONDS + 5)
        assert fresh["Attributes"]["ApproximateReceiveCount"] == "1"
        tasks.request_stop(first.task_id)
        running.result(timeout=10)


def test_dead_lettered_task_is_failed_with_a_reason(stack: Provisioned) -> None:
    task = submit("[[text]] unlucky")
    tasks.start(task.task_id, "lambda:gone", "lambda")
    event = sqs_event(
        [
            {
                "MessageId": "m1",
                "ReceiptHandle": "r1",
                "Body": json.dumps({"task_id": task.task_id}),
                "Attributes": {"ApproximateReceiveCount": "3"},
            }
        ],
        stack.resolver.attrs["TaskDeadLetterQueue.Arn"],
    )
    assert dlq_handler.handler(event, LambdaContext("DlqFunction", 60)) == {"batchItemFailures": []}
    done = tasks.get(task.task_id)
    assert done is not None and done.status == TaskStatus.FAILED and done.error_kind == "dead_letter"
    assert "gave up after 3 deliveries" in (done.error or "")
    assert output.read_events(task.task_id)[-1].type.value == "task.failed"
    # Again (an SQS duplicate): nothing changes.
    assert dlq_handler.handler(event, LambdaContext("DlqFunction", 60)) == {"batchItemFailures": []}


def run_processes(task_id: str) -> list[int]:
    """Processes left of a run: the runner marks its CLI's environment (cli.RUN_MARKER) with the task id."""
    marker = f"{cli.RUN_MARKER}={task_id}.".encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_a_long_run_is_handed_to_an_ecs_task_that_runs_it(stack: Provisioned, ecs: Ecs) -> None:
    task = submit("[[text:done on fargate]] implement it", agent="executor")
    assert invoke(stack, receive(task.task_id)) == {"batchItemFailures": []}
    queued = tasks.get(task.task_id)
    assert queued is not None and queued.status == TaskStatus.QUEUED  # the Lambda only started the ECS task
    started = ecs.started(task.task_id)
    assert started["taskDefinitionArn"] == ecs.task_definition and started["desiredStatus"] == "RUNNING"
    assert started["overrides"]["containerOverrides"] == [
        {"name": "runner", "environment": [{"name": "TASK_ID", "value": task.task_id}]}
    ]
    assert {t["key"]: t["value"] for t in started["tags"]} == {"task_id": task.task_id, "agent": "executor"}
    fargate = ecs.run(started)
    assert fargate.wait() == 0
    done = tasks.get(task.task_id)
    assert done is not None and done.status == TaskStatus.COMPLETED and done.result == "done on fargate"
    assert done.run_mode == "fargate" and done.runner_id == f"fargate:{started['taskArn']}"
    assert done.cost_usd == pytest.approx(COST)
    # The watchdog copy of the message is in the queue (delayed), and would find the task finished.
    attrs = aws.sqs().get_queue_attributes(
        QueueUrl=get_settings().task_queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert attrs["ApproximateNumberOfMessagesDelayed"] == "1"


def test_ecs_stopping_the_task_books_its_run_stopped_with_its_cost(stack: Provisioned, ecs: Ecs) -> None:
    """ecs:StopTask sends SIGTERM: the CLI is interrupted, writes its result, the run is booked with its cost."""
    task = submit("[[hang]] on fargate", agent="executor")
    invoke(stack, receive(task.task_id))
    fargate = ecs.run_started(task.task_id)
    wait_until(lambda: any(e.payload.get("kind") == "assistant" for e in output.read_events(task.task_id)), timeout=60)
    fargate.terminate()
    assert fargate.wait(60) == 0
    done = tasks.get(task.task_id)
    assert done is not None and done.status == TaskStatus.STOPPED and done.error_kind == "terminated", done
    assert done.cost_usd == pytest.approx(COST)
    assert output.read_events(task.task_id)[-1].type.value == "task.stopped"
    assert run_processes(task.task_id) == []


LAMBDA_RUNNER = """
import json, sys, time
from local_runtime.events import LambdaContext, sqs_event
from runner import lambda_handler
message, queue_arn = json.loads(sys.argv[1]), sys.argv[2]
print("ready", flush=True)
if not message:
    time.sleep(600)
result = lambda_handler.handler(sqs_event([message], queue_arn), LambdaContext("RunnerFunction", timeout_seconds=300))
print("result " + json.dumps(result), flush=True)
"""


def lambda_runner(stack: Provisioned, message: dict[str, object] | None) -> subprocess.Popen[str]:
    """An execution environment of the runner function: a process that imports the handler and runs one invocation
    (none: it stays idle)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", LAMBDA_RUNNER, json.dumps(message), stack.resolver.attrs["TaskQueue.Arn"]],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def test_sigterm_to_a_lambda_environment_books_its_run_stopped_with_its_cost(stack: Provisioned) -> None:
    """Lambda sends SIGTERM before it shuts an environment down: the run in progress ends `stopped`, with its
    cost, and the invocation still returns."""
    task = submit("[[hang]] on lambda")
    runner = lambda_runner(stack, receive(task.task_id))
    try:
        wait_until(
            lambda: any(e.payload.get("kind") == "assistant" for e in output.read_events(task.task_id)), timeout=60
        )
        runner.send_signal(signal.SIGTERM)
        out, _ = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert runner.returncode == 0
    [result] = [line for line in out.splitlines() if line.startswith("result ")]
    assert json.loads(result.removeprefix("result ")) == {"batchItemFailures": []}
    done = tasks.get(task.task_id)
    assert done is not None and done.status == TaskStatus.STOPPED and done.error_kind == "shutdown", done
    assert done.cost_usd == pytest.approx(COST)
    assert run_processes(task.task_id) == []


def test_sigterm_to_an_idle_lambda_environment_ends_it() -> None:
    runner = subprocess.Popen(
        [sys.executable, "-c", "from runner import lambda_handler; print('ready', flush=True); input()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert runner.stdout is not None and runner.stdout.readline() == "ready\n"
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(60) == -signal.SIGTERM
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()


def test_a_runner_shutting_down_starts_nothing_new(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> None:
    """After SIGTERM (interrupt_all), a message is handed back and a run claimed in the meantime is stopped
    before its CLI starts."""
    monkeypatch.setattr(controller, "_stopping", None)  # restored after the test: this process is not shutting down
    controller.interrupt_all("shutdown")
    task = submit("[[text]] too late")
    message = receive(task.task_id)
    assert invoke(stack, message) == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
    assert (queued := tasks.get(task.task_id)) is not None and queued.status == TaskStatus.QUEUED
    assert orchestrator.run_by_id(task.task_id, run_mode="fargate") == 0
    done = tasks.get(task.task_id)
    assert done is not None and done.status == TaskStatus.STOPPED and done.error_kind == "shutdown", done
    assert done.cost_usd == 0 and "before the CLI started" in (done.error or "")


def test_a_stop_during_a_slow_clone_is_honoured(stack: Provisioned) -> None:
    """The heartbeat runs from the claim on: a stop during preparation cancels it (the git process too)."""
    import socket

    from agent_machine.models import RepoContext

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)  # accepts connections, never answers: the clone hangs
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/acme/app.git"
        task = submit("[[text]] never runs", repo=RepoContext(full_name="acme/app", clone_url=url))
        message = receive(task.task_id)
        with in_background(lambda: invoke(stack, message)) as running:
            wait_until(lambda: (t := tasks.get(task.task_id)) and t.status == TaskStatus.RUNNING)
            time.sleep(1.5)  # beats while cloning
            assert (current := tasks.get(task.task_id)) and not orchestrator.is_stale(current)
            asked = time.monotonic()
            tasks.request_stop(task.task_id)
            done = wait_until(lambda: (t := tasks.get(task.task_id)) and t.status.terminal and t, timeout=10)
            took = time.monotonic() - asked
            running.result(timeout=10)
    finally:
        silent.close()
    assert done.status == TaskStatus.STOPPED and took < 2.0
    assert done.error == "stopped by request (before the CLI started)" and done.cost_usd == 0


def test_a_background_process_holding_the_pipes_neither_hangs_the_run_nor_survives_it(
    stack: Provisioned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = tmp_path / "claude-with-a-daemon"
    cli.write_text(
        "#!/bin/sh\nsleep 300 &\n"
        'echo \'{"type":"result","subtype":"success","is_error":false,"result":"ok","session_id":"s",'
        '"total_cost_usd":0.01}\'\n'
    )
    cli.chmod(0o755)
    monkeypatch.setenv("CLAUDE_CLI_PATH", str(cli))
    get_settings.cache_clear()
    task = submit("hello")
    message = receive(task.task_id)
    started = time.monotonic()
    with in_background(lambda: invoke(stack, message)) as running:
        pgid = cli_pid(task.task_id)
        running.result(timeout=20)
    assert time.monotonic() - started < config.DRAIN_SECONDS + 5
    done = tasks.get(task.task_id)
    assert done is not None and done.status == TaskStatus.COMPLETED and done.cost_usd == pytest.approx(0.01)
    wait_until(lambda: not group_alive(pgid), timeout=5)
