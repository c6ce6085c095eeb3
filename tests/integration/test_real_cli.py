"""The runner with the REAL `claude` binary (npm @anthropic-ai/claude-code@2.1.197) against a local stand-in for
the Anthropic API (fake_anthropic_api.py): chat, resume on a fresh runner folder, stop, max turns, and an
executor on Fargate (an ECS task of the emulator, run by the test) whose branch the runner pushes.

The binary: REAL_CLAUDE_PATH, else `node_modules/.bin/claude` under the repository (`make real-cli` installs it;
CI does), else `claude` on PATH. Missing, the tests fail: they must run in CI (`make real-cli` installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_machine.models import AgentSpec, PermissionMode, RepoContext, TaskStatus
from agent_machine.settings import get_settings
from agent_machine.store import output, registry, sessions, tasks
from local_runtime.emulator import free_port
from local_runtime.provision import Provisioned

from tests.conftest import ROOT, SHARED, reset_caches
from tests.fakes.fake_github_api import FakeApi
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

pytestmark = [pytest.mark.real_cli, pytest.mark.timeout(240)]

VERSION = "2.1.197"
INSTALL = f"cd {ROOT} && npm install --no-save @anthropic-ai/claude-code@{VERSION}   (or: make real-cli)"


def find_real_claude() -> str | None:
    candidates = [
        os.environ.get("REAL_CLAUDE_PATH"),
        str(ROOT / "node_modules" / ".bin" / "claude"),
        shutil.which("claude"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_fake_api() -> Path | None:
    candidates = [
        os.environ.get("FAKE_ANTHROPIC_API"),
        str(ROOT / "tests" / "fakes" / "fake_anthropic_api.py"),
        str(SHARED / "tools" / "fake_anthropic_api.py"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="module")
def claude_path() -> str:
    path = find_real_claude()
    if path is None:
        pytest.fail(f"the real claude CLI {VERSION} is not installed; install it with: {INSTALL} (or `make real-cli`)")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60).stdout
    assert version.startswith(VERSION), f"{path} is {version.strip()!r}, these tests pin {VERSION}"
    return path


@pytest.fixture(scope="module")
def fake_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    script = find_fake_api()
    assert script is not None, "fake_anthropic_api.py not found (set FAKE_ANTHROPIC_API to its path)"
    port = free_port()
    log = tmp_path_factory.mktemp("api") / "requests.jsonl"
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port", str(port), "--log", str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(url), timeout=20, interval=0.1)
        yield url, log
    finally:
        proc.terminate()
        proc.wait(10)


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/v1/models", timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def real(
    stack: Provisioned, claude_path: str, fake_api: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The runner configured for the real CLI; returns the runner's work root."""
    url, _ = fake_api
    root = tmp_path / "runner"
    monkeypatch.setenv("RUNNER_WORK_ROOT", str(root))
    monkeypatch.setenv("CLAUDE_CLI_PATH", claude_path)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("DISABLE_AUTOUPDATER", "1")
    monkeypatch.setenv("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
    if os.geteuid() == 0:
        monkeypatch.setenv("IS_SANDBOX", "1")
    get_settings.cache_clear()
    return root


def outputs(task_id: str) -> list[dict[str, Any]]:
    return [e.payload for e in output.read_events(task_id) if e.type.value == "task.output"]


def result_line(task_id: str) -> dict[str, Any]:
    lines: list[dict[str, Any]] = [p["data"] for p in outputs(task_id) if p["kind"] == "result"]
    assert len(lines) == 1
    return lines[0]


def init_line(task_id: str) -> dict[str, Any]:
    lines: list[dict[str, Any]] = [p["data"] for p in outputs(task_id) if p["kind"] == "system"]
    return next(line for line in lines if line.get("subtype") == "init")


def test_chat_with_the_real_cli(stack: Provisioned, real: Path) -> None:
    task = run_task(stack, "[[text]] hello real")
    assert task.status == TaskStatus.COMPLETED, task.error
    assert task.result == "All done: [[text]] hello real"
    final = result_line(task.task_id)
    assert final["subtype"] == "success" and final["total_cost_usd"] > 0
    assert task.cost_usd == pytest.approx(final["total_cost_usd"])
    assert sum(m.cost_usd for m in task.model_usage.values()) == pytest.approx(final["total_cost_usd"])
    assert task.num_turns == final["num_turns"] and task.usage.input_tokens == final["usage"]["input_tokens"]
    init = init_line(task.task_id)
    assert {"name": "machine", "status": "connected"} in init["mcp_servers"]  # our MCP server started
    assert "delegating-work" in init["skills"]  # the brain's tree is the cwd
    assert init["permissionMode"] == "dontAsk" and init["apiKeySource"] == "ANTHROPIC_API_KEY"
    session = sessions.get(task.session_id)
    assert session is not None and session.cli_session_id == init["session_id"]


def test_resume_on_a_fresh_runner_folder(stack: Provisioned, real: Path, fake_api: tuple[str, Path]) -> None:
    first = run_task(stack, "[[text]] the secret word is kiwi")
    assert first.status == TaskStatus.COMPLETED, first.error
    shutil.rmtree(real)  # another runner: an empty disk
    _, log = fake_api
    before = len(log.read_text().splitlines())
    second = run_task(stack, "and what was the word?", session_id=first.session_id)
    assert second.status == TaskStatus.COMPLETED, second.error
    assert second.cli_session_id == first.cli_session_id  # --resume continued the same CLI session
    requests = [json.loads(line) for line in log.read_text().splitlines()[before:]]
    main = [r for r in requests if "Bash" in r["tools"]]
    # The restored transcript went back to the API: the earlier exchange precedes the new message.
    assert main and main[0]["n_messages"] >= 3 and main[0]["prompt"].startswith("[[text]] the secret word")
    # 2.1.197 reports a resumed run's own cost in -p mode: the task gets exactly that; the session adds up.
    final = result_line(second.task_id)
    assert second.cost_usd == pytest.approx(final["total_cost_usd"]) and second.cost_usd > 0
    session = sessions.get(first.session_id)
    assert session is not None
    assert session.total_cost_usd == pytest.approx(first.cost_usd + second.cost_usd)
    assert session.cli_total_cost_usd == pytest.approx(first.cost_usd + second.cost_usd)


def test_stop_the_real_cli(stack: Provisioned, real: Path) -> None:
    task = submit("[[slow:60]] [[text]] take your time")
    message = receive(task.task_id)
    with in_background(lambda: invoke(stack, message)) as running:
        pgid = cli_pid(task.task_id, timeout=60)
        wait_until(lambda: any(p["kind"] == "system" for p in outputs(task.task_id)), timeout=60)
        asked = time.monotonic()
        tasks.request_stop(task.task_id)
        done = wait_until(lambda: (t := tasks.get(task.task_id)) and t.status.terminal and t, timeout=20)
        took = time.monotonic() - asked
        running.result(timeout=30)
    assert done.status == TaskStatus.STOPPED, done.error
    assert took < 2.0, f"stop took {took:.2f} s"
    final = result_line(task.task_id)  # SIGINT: the CLI still wrote its result
    assert final["subtype"] == "error_during_execution" and final.get("terminal_reason") == "aborted_streaming"
    wait_until(lambda: not group_alive(pgid), timeout=5)


def test_max_turns_with_the_real_cli(stack: Provisioned, real: Path) -> None:
    registry.put(
        "agent",
        AgentSpec(
            name="one-turn",
            description="test agent",
            allowed_tools=["Bash"],
            permission_mode=PermissionMode.DONT_ASK,
            max_turns=1,
        ),
        actor="test",
    )
    task = run_task(stack, "run the command please", agent="one-turn")
    assert task.status == TaskStatus.FAILED and task.error_kind == "error_max_turns", task.error
    assert "Reached maximum number of turns (1)" in (task.error or "")
    assert task.cost_usd == pytest.approx(result_line(task.task_id)["total_cost_usd"]) and task.cost_usd > 0


def test_executor_on_fargate_commits_and_the_runner_pushes(
    stack: Provisioned, ecs: Ecs, real: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The executor (a long run: an ECS task) commits through the real CLI's Bash tool with no GitHub credential;
    the Fargate runner pushes its claude/* branch to a git server that requires the token (FakeApi's git over
    HTTP) and opens the pull request."""
    token = "ghs_fargate_publish_0123456789abcdef"
    with FakeApi(github_token=token, git_root=tmp_path / "git") as github:
        monkeypatch.setenv("GITHUB_API_URL", github.url)
        monkeypatch.setenv("GITHUB_TOKEN", token)
        monkeypatch.setenv("REPORT_BACKOFF_SECONDS", "0")
        reset_caches()
        clone_url = github.create_repository("acme/app")
        executor = AgentSpec(
            name="executor",
            description="test copy",
            allowed_tools=["Read", "Edit", "Write", "Bash"],
            permission_mode=PermissionMode.ACCEPT_EDITS,
            max_turns=2,
            long_running=True,
        )
        registry.put("agent", executor, actor="test")
        command = "git checkout -q -b claude/7-demo && git commit -q --allow-empty -m 'Demo change'"
        task = submit(f"[[cmd:{command}]] implement the plan", agent="executor")
        tasks.set_fields(
            task.task_id, repo=RepoContext(full_name="acme/app", issue_number=7, clone_url=clone_url).model_dump()
        )
        invoke(stack, receive(task.task_id))
        assert ecs.run_started(task.task_id).wait(180) == 0
        done = wait_until(
            lambda: (t := tasks.get(task.task_id)) and t.status.terminal and t.report.get("pr_url") and t,
            timeout=120,
        )
        assert done.run_mode == "fargate", done
        assert done.status is TaskStatus.COMPLETED, done.error
        assert github.commit_subject("acme/app", "claude/7-demo") == "Demo change"
        assert [pull["head"]["ref"] for pull in github.pull_requests] == ["claude/7-demo"]
        assert all(request.authorized for request in github.git_requests)
