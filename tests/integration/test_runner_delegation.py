"""Delegation: the `machine` MCP server (a real `python -m runner.machine_mcp` over stdio) talking to a run's
bridge, which creates child tasks through the domain with parent linkage and caps."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from agent_machine.domain import submission
from agent_machine.models import RepoContext, Task, TaskSource, TaskStatus
from agent_machine.store import sessions, tasks
from local_runtime.provision import Provisioned
from runner import config
from runner.delegation import Delegation
from runner.machine_mcp import TOOLS, call_bridge
from runner.mcp_bridge import Bridge

pytestmark = pytest.mark.timeout(60)


class Mcp:
    """The MCP server as the CLI runs it: a child process spoken to in JSON-RPC lines."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [spec["command"], *spec["args"]], env=spec["env"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.next_id = 0

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.next_id += 1
        self.proc.stdin.write(
            json.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params or {}}) + "\n"
        )
        self.proc.stdin.flush()
        reply: dict[str, Any] = json.loads(self.proc.stdout.readline())
        assert reply["id"] == self.next_id
        return reply

    def notify(self, method: str) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", "method": method}) + "\n")
        self.proc.stdin.flush()

    def call(self, tool: str, **arguments: Any) -> tuple[bool, Any]:
        result = self.request("tools/call", {"name": tool, "arguments": arguments})["result"]
        text = result["content"][0]["text"]
        return result["isError"], (text if result["isError"] else json.loads(text))

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(5)


def parent_task(depth: int = 0) -> Task:
    task, session = submission.new_task("fix the bug in acme/app#7", max_budget_usd=2.0)
    task = task.model_copy(
        update={
            "depth": depth,
            "repo": RepoContext(full_name="acme/app", issue_number=7, clone_url="https://github.com/acme/app.git"),
        }
    )
    submission.submit(task, session)
    return task


@pytest.fixture
def bridge_for(stack: Provisioned) -> Iterator[Any]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    started: list[Bridge] = []

    def make(task: Task, deadline_in: float = 600.0) -> Bridge:
        bridge = Bridge(Delegation(task, deadline=time.monotonic() + deadline_in))
        asyncio.run_coroutine_threadsafe(bridge.start(), loop).result(5)
        started.append(bridge)
        return bridge

    yield make
    for bridge in started:
        asyncio.run_coroutine_threadsafe(bridge.close(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_mcp_handshake_and_tool_list(bridge_for: Any) -> None:
    bridge = bridge_for(parent_task())
    mcp = Mcp(bridge.mcp_config()["mcpServers"]["machine"])
    try:
        init = mcp.request(
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "claude-code", "version": "2.1.197"},
            },
        )
        assert init["result"]["protocolVersion"] == "2025-06-18"
        assert init["result"]["capabilities"] == {"tools": {"listChanged": False}}
        mcp.notify("notifications/initialized")
        tools = mcp.request("tools/list")["result"]["tools"]
        assert [t["name"] for t in tools] == [
            "create_task",
            "get_task",
            "wait_for_task",
            "list_agents",
            "machine_status",
            "list_tasks",
            "costs",
        ]
        assert mcp.request("ping")["result"] == {}
        assert mcp.request("resources/list")["error"]["code"] == -32601
        error, agents = mcp.call("list_agents")
        assert not error and {"brain", "planning", "executor"} <= {a["name"] for a in agents["agents"]}
    finally:
        mcp.close()


def test_create_a_child_task_and_look_it_up(bridge_for: Any) -> None:
    parent = parent_task()
    mcp = Mcp(bridge_for(parent).mcp_config()["mcpServers"]["machine"])
    try:
        error, created = mcp.call(
            "create_task", agent="planning", prompt="Plan a fix for acme/app#7: ...", title="Plan #7", max_budget_usd=10
        )
        assert not error, created
        child = tasks.get(created["task_id"])
        assert child is not None and child.status == TaskStatus.QUEUED
        assert child.parent_task_id == parent.task_id and child.depth == 1
        assert child.source == TaskSource.AGENT and child.source_name == "brain" and child.agent == "planning"
        assert child.session_id != parent.session_id and sessions.get(child.session_id) is not None
        assert child.repo is not None and child.repo.full_name == "acme/app" and child.repo.issue_number == 7
        assert child.max_budget_usd == 2.0  # never more than the parent's own cap
        assert child.title == "Plan #7"

        error, view = mcp.call("get_task", task_id=parent.task_id)
        assert not error and [c["task_id"] for c in view["children"]] == [child.task_id]
        started = time.monotonic()
        error, waited = mcp.call("wait_for_task", task_id=child.task_id, timeout_seconds=1)
        assert not error and waited["finished"] is False and time.monotonic() - started < 5
        error, status = mcp.call("machine_status")
        assert not error and status["task"]["children"][0]["task_id"] == child.task_id
        assert status["today"]["daily_cap_usd"] == 50.0
    finally:
        mcp.close()


def test_wait_returns_when_the_child_finishes(bridge_for: Any) -> None:
    parent = parent_task()
    bridge = bridge_for(parent)
    token, path = bridge.token, str(bridge.path)
    child = call_bridge(
        "create_task", {"agent": "planning", "prompt": "p", "with_repository": False}, path=path, token=token
    )

    def finish_soon() -> None:
        time.sleep(1.0)
        from agent_machine.domain import lifecycle

        task = tasks.get(child["task_id"])
        assert task is not None
        tasks.start(task.task_id, "lambda:x", "lambda")
        lifecycle.finish(task, TaskStatus.COMPLETED, runner_id="lambda:x", result="# Plan: done", cost_usd=0.1)

    threading.Thread(target=finish_soon, daemon=True).start()
    waited = call_bridge("wait_for_task", {"task_id": child["task_id"], "timeout_seconds": 30}, path=path, token=token)
    assert waited["finished"] is True and waited["result"] == "# Plan: done" and waited["cost_usd"] == 0.1
    assert waited["waited_seconds"] < 5
    assert tasks.get(child["task_id"]).repo is None  # type: ignore[union-attr]


def test_caps_and_refusals(bridge_for: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "MAX_CHILDREN_PER_TASK", 2)
    parent = parent_task()
    mcp = Mcp(bridge_for(parent).mcp_config()["mcpServers"]["machine"])
    try:
        error, text = mcp.call("create_task", agent="nobody", prompt="p")
        assert error and "there is no agent 'nobody'" in text
        error, text = mcp.call("create_task", agent="planning")
        assert error and "invalid arguments" in text
        for _ in range(2):  # (each child asks for part of the parent's $2: a child's cap is reserved)
            assert mcp.call("create_task", agent="planning", prompt="p", max_budget_usd=0.5)[0] is False
        error, text = mcp.call("create_task", agent="planning", prompt="p", max_budget_usd=0.5)
        assert error and "already has 2 children" in text
        error, text = mcp.call("get_task", task_id="missing")
        assert error and "no task missing" in text
    finally:
        mcp.close()

    deep = parent_task(depth=config.MAX_DELEGATION_DEPTH)
    bridge = bridge_for(deep)
    with pytest.raises(Exception, match="delegation depth limit"):
        call_bridge("create_task", {"agent": "planning", "prompt": "p"}, path=str(bridge.path), token=bridge.token)
    with pytest.raises(Exception, match="not authorised"):
        call_bridge("list_agents", {}, path=str(bridge.path), token="wrong")


def test_tool_schemas_are_valid_json_schema_objects() -> None:
    for tool in TOOLS:
        schema = tool["inputSchema"]
        assert schema["type"] == "object" and isinstance(schema["properties"], dict)
        assert set(schema.get("required", [])) <= set(schema["properties"])
