"""The brain and planning stay read-only whatever the registry holds: a planning agent saved through the REST
API with acceptEdits, write tools allowed and nothing disallowed still runs with the write tools disallowed,
a read-only permission mode and only read-only Bash rules (the runner's real argument builder, and a real run
of the fake CLI that tries to write)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from agent_machine.domain import agents
from agent_machine.models import AgentSpec, PermissionMode, TaskStatus
from agent_machine.store import output
from local_runtime.provision import Provisioned
from runner import cli, orchestrator

from tests.integration.runner_support import run_task, submit
from tests.integration.test_api_registry import send

pytestmark = pytest.mark.timeout(90)

WRITES = {"Edit", "Write", "MultiEdit", "NotebookEdit"}


def flag_values(args: list[str], flag: str) -> list[str]:
    """The values after a variadic flag, up to the next flag."""
    if flag not in args:
        return []
    out: list[str] = []
    for arg in args[args.index(flag) + 1 :]:
        if arg.startswith("-"):
            break
        out.append(arg)
    return out


def resolved_args(agent_name: str) -> list[str]:
    task = submit("plan it", agent=agent_name)
    agent = orchestrator.resolve_agent(task)
    assert agent is not None
    return cli.build_args(
        task.prompt, agent, max_budget_usd=1.0, resume=None, append_system_prompt=None, mcp_config=None
    )


@pytest.fixture(autouse=True)
def work_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_WORK_ROOT", str(tmp_path / "runner"))


def test_a_registry_edited_planning_agent_still_cannot_write(stack: Provisioned) -> None:
    edited: dict[str, Any] = {
        "description": "edited to write",
        "allowed_tools": ["Read", "Write", "Edit", "Bash", "Bash(git log:*)", "Bash(rm -rf:*)", "Bash(ls:*)"],
        "disallowed_tools": [],
        "permission_mode": "acceptEdits",
    }
    status, saved = send("PUT", "/api/agents/planning", edited)
    assert status == 200, saved

    args = resolved_args("planning")
    mode = args[args.index("--permission-mode") + 1]
    assert mode in ("plan", "dontAsk")
    allowed = flag_values(args, "--allowedTools")
    disallowed = flag_values(args, "--disallowedTools")
    assert set(disallowed) >= WRITES
    assert "Bash" not in disallowed  # Bash stays a tool, so its read-only allow rules work
    assert not WRITES & set(allowed)
    assert "Bash" not in allowed and "Bash(rm -rf:*)" not in allowed
    assert {"Read", "Bash(git log:*)", "Bash(ls:*)"} <= set(allowed)

    # A real run (the fake CLI applies the flags as the real one does): the write is denied.
    task = run_task(stack, "[[write:PLAN-TRY.md:nope]]", agent="planning")
    assert task.status == TaskStatus.COMPLETED, task.error
    assert task.result == "I could not write PLAN-TRY.md: permission denied."
    init = next(e.payload["data"] for e in output.read_events(task.task_id) if e.payload.get("kind") == "system")
    assert init["permissionMode"] in ("plan", "dontAsk")


def test_the_default_planning_agent_can_use_its_git_rules(stack: Provisioned) -> None:
    args = resolved_args("planning")
    assert "Bash" not in flag_values(args, "--disallowedTools")
    assert "Bash(git log:*)" in flag_values(args, "--allowedTools")
    assert set(flag_values(args, "--disallowedTools")) >= WRITES


def test_the_brain_never_gets_write_tools(stack: Provisioned) -> None:
    status, saved = send(
        "PUT",
        "/api/agents/brain",
        {"allowed_tools": ["Read", "Write", "Bash"], "disallowed_tools": [], "permission_mode": "bypassPermissions"},
    )
    assert status == 200, saved
    args = resolved_args("brain")
    assert args[args.index("--permission-mode") + 1] == "dontAsk"
    assert set(flag_values(args, "--disallowedTools")) >= WRITES
    assert not {"Write", "Bash"} & set(flag_values(args, "--allowedTools"))


def test_other_agents_are_left_as_defined() -> None:
    spec = AgentSpec(name="writer", allowed_tools=["Write", "Bash"], permission_mode=PermissionMode.ACCEPT_EDITS)
    assert agents.enforce(spec) == spec
    assert agents.is_read_only_bash_rule("Bash(git log:*)") and agents.is_read_only_bash_rule("Bash(ls *)")
    assert not agents.is_read_only_bash_rule("Bash(git log; rm -rf x:*)")
    assert not agents.is_read_only_bash_rule("Bash(*)") and not agents.is_read_only_bash_rule("Bash")
    json.dumps(spec.model_dump(mode="json"))
