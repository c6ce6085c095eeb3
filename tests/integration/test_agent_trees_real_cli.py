"""Each agent's run sees its own instructions only: the REAL `claude` CLI against a stand-in API that records
every request body, for a planning run and a brain run of the same machine.

The CLI loads CLAUDE.md from the cwd and every ancestor folder; the agents' folders are siblings (w/brain,
w/planning, ...), so a planning run must not carry the brain's CLAUDE.md ("You never change a repository
yourself") nor the brain's skills, and the other way round.
"""

from __future__ import annotations

import importlib
import io
import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from agent_machine.models import TaskStatus
from agent_machine.settings import get_settings
from local_runtime.provision import Provisioned

from tests.integration.runner_support import run_task
from tests.integration.test_real_cli import claude_path, init_line  # noqa: F401 - a fixture, used by name

pytestmark = [pytest.mark.real_cli, pytest.mark.timeout(240)]

# Loaded by name: the stand-in is vendored as shipped and left out of type checking (pyproject's mypy exclude).
fake_anthropic_api: Any = importlib.import_module("tests.fakes.fake_anthropic_api")

BRAIN_MARK = "Brain: the agent machine's front desk"
PLANNING_MARK = "Planning: find the cause, write the plan, change nothing"


class Recorder:
    def __init__(self) -> None:
        self.bodies: list[str] = []
        self.lock = threading.Lock()

    def main_requests(self) -> list[str]:
        """The agent loop's requests (those offering tools), as raw JSON text."""
        with self.lock:
            return [b for b in self.bodies if '"tools"' in b and '"messages"' in b]

    def clear(self) -> None:
        with self.lock:
            self.bodies.clear()


@pytest.fixture
def recording_api() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()

    class Handler(fake_anthropic_api.Handler):  # type: ignore[misc]
        def do_POST(self) -> None:
            handler: Any = self  # (the base class is untyped)
            raw: bytes = handler.rfile.read(int(handler.headers.get("content-length") or 0))
            with recorder.lock:
                recorder.bodies.append(raw.decode("utf-8", errors="replace"))
            handler.rfile = io.BytesIO(raw)  # the stand-in reads the body again
            super().do_POST()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", recorder
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def real_recorded(
    stack: Provisioned,
    claude_path: str,  # noqa: F811
    recording_api: tuple[str, Recorder],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Recorder:
    import os

    url, recorder = recording_api
    monkeypatch.setenv("RUNNER_WORK_ROOT", str(tmp_path / "runner"))
    monkeypatch.setenv("CLAUDE_CLI_PATH", claude_path)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("DISABLE_AUTOUPDATER", "1")
    monkeypatch.setenv("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
    if os.geteuid() == 0:
        monkeypatch.setenv("IS_SANDBOX", "1")
    get_settings.cache_clear()
    return recorder


def _texts(body: str) -> str:
    """Everything the model is sent in one request (system prompt and messages), as one string."""
    req: dict[str, Any] = json.loads(body)
    return json.dumps({"system": req.get("system"), "messages": req.get("messages")})


def test_planning_run_gets_the_planning_instructions_not_the_brains(
    stack: Provisioned, real_recorded: Recorder
) -> None:
    planning = run_task(stack, "[[text]] plan something", agent="planning")
    assert planning.status == TaskStatus.COMPLETED, planning.error
    sent = real_recorded.main_requests()
    assert sent, "the CLI made no agent-loop request"
    first = _texts(sent[0])
    assert PLANNING_MARK in first
    assert BRAIN_MARK not in first and "You never change a repository yourself" not in first
    init = init_line(planning.task_id)
    assert "writing-a-plan" in init["skills"] and "delegating-work" not in init["skills"]
    assert init["cwd"].endswith("/w/planning")

    real_recorded.clear()
    brain = run_task(stack, "[[text]] hello")
    assert brain.status == TaskStatus.COMPLETED, brain.error
    first = _texts(real_recorded.main_requests()[0])
    assert BRAIN_MARK in first and PLANNING_MARK not in first
    init = init_line(brain.task_id)
    assert init["cwd"].endswith("/w/brain")
    assert "delegating-work" in init["skills"] and "writing-a-plan" not in init["skills"]


def _tool_results(task_id: str) -> list[dict[str, Any]]:
    from agent_machine.store import output

    results: list[dict[str, Any]] = []
    for event in output.read_events(task_id):
        payload = event.payload
        if payload.get("kind") == "user":
            content = payload["data"]["message"]["content"]
            results += [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
    return results


@pytest.mark.parametrize(("command", "allowed"), [("ls -a .claude", True), ("touch made-by-planning", False)])
def test_planning_runs_read_only_commands_only(
    stack: Provisioned, real_recorded: Recorder, command: str, allowed: bool
) -> None:
    """Bash is no longer disallowed for planning, so its read-only allow rules work; anything else is denied."""
    from agent_machine.domain.agents import BUILTIN_AGENTS
    from agent_machine.store import registry

    registry.put("agent", BUILTIN_AGENTS["planning"].model_copy(update={"max_turns": 2}), actor="test")
    task = run_task(stack, f"[[cmd:{command}]] look around", agent="planning")
    # (The stand-in may ask for the command again on every turn under plan mode: only the first result counts.)
    results = _tool_results(task.task_id)
    assert results, (task.status, task.error)
    text = json.dumps(results[0].get("content"))
    if allowed:
        assert results[0].get("is_error") is not True and "CLAUDE.md" in text, results
    else:
        assert results[0].get("is_error") is True, results
