"""`local_machine`: the local runtime started the way `make run-local` starts it, as a real child process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from local_runtime.emulator import free_port

from tests.conftest import FAKE_CLAUDE, ROOT, TEST_SECRETS


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
        request = urllib.request.Request(
            f"{self.base_url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {token or self.api_token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
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


def start_machine(
    tmp: Path, *, port: int | None = None, extra_env: dict[str, str] | None = None, persist: bool = True
) -> RunningMachine:
    try:
        return _start_machine(tmp, port=port, extra_env=extra_env, persist=persist)
    except PortTaken:
        if port is not None:
            raise
        # Another process took the free port between the check and the bind: a new port, once.
        return _start_machine(tmp, port=None, extra_env=extra_env, persist=persist)


class PortTaken(RuntimeError):
    pass


def _start_machine(tmp: Path, *, port: int | None, extra_env: dict[str, str] | None, persist: bool) -> RunningMachine:
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(TEST_SECRETS)
    env.update(
        {
            "PORT": str(port),
            "CLAUDE_CLI_PATH": str(FAKE_CLAUDE),
            "LOG_JSON": "false",
            "LOG_LEVEL": "INFO",
            "MAX_CONCURRENT_TASKS": "3",
            "LOCAL_QUEUE_VISIBILITY_TIMEOUT": "20",
            "RUNNER_WORK_ROOT": str(tmp / "runner"),
        }
    )
    env.update(extra_env or {})
    log_path = tmp / f"local-runtime-{port}.log"
    args = [
        sys.executable,
        "-m",
        "local_runtime",
        "--port",
        str(port),
        "--data-dir",
        str(tmp / "data"),
        "--env-file",
        str(tmp / "no.env"),
    ]
    if not persist:
        args.append("--no-persist")
    with log_path.open("ab") as log:
        process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    machine = RunningMachine(process, port, TEST_SECRETS["API_TOKEN"], tmp / "data", log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            logs = machine.logs()
            if "could not listen on port" in logs:
                raise PortTaken(f"port {port} was taken:\n{logs}")
            raise RuntimeError(f"local runtime exited early:\n{logs}")
        try:
            with urllib.request.urlopen(f"{machine.base_url}/api/health", timeout=2) as resp:
                if resp.status == 200:
                    return machine
        except OSError:
            time.sleep(0.2)
    machine.stop()
    raise RuntimeError(f"local runtime did not become healthy:\n{machine.logs()}")


@pytest.fixture
def local_machine(tmp_path: Path) -> Iterator[RunningMachine]:
    machine = start_machine(tmp_path)
    yield machine
    machine.stop()
