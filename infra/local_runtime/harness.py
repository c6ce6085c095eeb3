"""Driving a local machine from outside, as the tests and the benchmarks do: `python -m local_runtime` started the way
`make run-local` starts it (a real child process, its own port, data folder and log), and a task's queue message
picked off the emulator's queue. Nothing here knows the tests' constants: callers pass the secrets and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_machine import aws
from agent_machine.settings import get_settings

from local_runtime.emulator import free_port
from local_runtime.template import ROOT


@dataclass
class RunningMachine:
    process: subprocess.Popen[bytes]
    port: int
    api_token: str
    data_dir: Path
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://localhost:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://localhost:{self.port}/ws"

    def api(self, method: str, path: str, body: object | None = None, token: str | None = None) -> tuple[int, object]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 (the machine's own http://localhost URL)
            f"{self.base_url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {token or self.api_token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 (its own localhost URL)
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


class PortTaken(RuntimeError):
    """The runtime could not listen on its port: another process took it between the check and the bind."""


def start_machine(
    tmp: Path,
    *,
    secrets: Mapping[str, str],
    cli_path: Path,
    port: int | None = None,
    extra_env: Mapping[str, str] | None = None,
    persist: bool = True,
) -> RunningMachine:
    """A healthy local machine keeping its data, log and task folders under `tmp`. `secrets` must hold API_TOKEN."""
    try:
        return _start(tmp, secrets=secrets, cli_path=cli_path, port=port, extra_env=extra_env, persist=persist)
    except PortTaken:
        if port is not None:
            raise
        # Another process took the free port between the check and the bind: a new port, once.
        return _start(tmp, secrets=secrets, cli_path=cli_path, port=None, extra_env=extra_env, persist=persist)


def _start(
    tmp: Path,
    *,
    secrets: Mapping[str, str],
    cli_path: Path,
    port: int | None,
    extra_env: Mapping[str, str] | None,
    persist: bool,
) -> RunningMachine:
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(secrets)
    env.update(
        {
            "PORT": str(port),
            "CLAUDE_CLI_PATH": str(cli_path),
            "LOG_JSON": "false",
            "LOG_LEVEL": "INFO",
            "MAX_CONCURRENT_TASKS": "3",
            "LOCAL_QUEUE_VISIBILITY_TIMEOUT": "20",
            "RUNNER_WORK_ROOT": str(tmp / "runner"),
        }
    )
    env.update(extra_env or {})
    log_path = tmp / f"local-runtime-{port}.log"
    args = [sys.executable, "-m", "local_runtime", "--port", str(port), "--data-dir", str(tmp / "data")]
    args += ["--env-file", str(tmp / "no.env")]
    if not persist:
        args.append("--no-persist")
    with log_path.open("ab") as log:
        process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    machine = RunningMachine(process, port, secrets["API_TOKEN"], tmp / "data", log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            logs = machine.logs()
            if "could not listen on port" in logs:
                raise PortTaken(f"port {port} was taken:\n{logs}")
            raise RuntimeError(f"local runtime exited early:\n{logs}")
        try:
            with urllib.request.urlopen(f"{machine.base_url}/api/health", timeout=2) as resp:  # noqa: S310
                if resp.status == 200:
                    return machine
        except OSError:
            time.sleep(0.2)
    machine.stop()
    raise RuntimeError(f"local runtime did not become healthy:\n{machine.logs()}")


def receive_task_message(task_id: str, *, timeout: float = 10.0) -> dict[str, Any]:
    """The queue message of a task (other messages — watchdog copies, other tasks' — are left alone)."""
    sqs = aws.sqs()
    url = get_settings().task_queue_url
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        resp = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, AttributeNames=["All"], VisibilityTimeout=30
        )
        for msg in resp.get("Messages", []):
            if json.loads(msg["Body"]).get("task_id") == task_id:
                return dict(msg)
            sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"], VisibilityTimeout=0)
    raise AssertionError(f"no queue message for task {task_id}")
