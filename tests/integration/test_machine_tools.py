"""The brain's machine tools over the real MCP server (`python -m runner.machine_mcp` as a child process) and a
run's bridge: list_tasks and costs read what the REST API reads; get_task keeps to the task's own tree, except
for the brain asking for a task by its id."""

from __future__ import annotations

from typing import Any

import pytest
from agent_machine.domain import submission
from agent_machine.models import TaskStatus
from agent_machine.store import tasks
from local_runtime.provision import Provisioned

from tests.integration.test_delegation_caps import finish
from tests.integration.test_runner_delegation import Mcp, bridge_for, parent_task  # noqa: F401 - a fixture

pytestmark = pytest.mark.timeout(90)


def other_task(agent: str = "brain") -> str:
    task, session = submission.new_task("someone else's chat", agent=agent)
    submission.submit(task, session)
    return task.task_id


def test_list_tasks_and_costs(stack: Provisioned, bridge_for: Any) -> None:  # noqa: F811
    done_brain = other_task()
    done_planning = other_task(agent="planning")
    finish(done_brain, cost=0.25)
    finish(done_planning, cost=0.5)
    queued = other_task()
    parent = parent_task()
    mcp = Mcp(bridge_for(parent).mcp_config()["mcpServers"]["machine"])
    try:
        error, listed = mcp.call("list_tasks")
        assert not error, listed
        ids = [t["task_id"] for t in listed["tasks"]]
        assert ids[:2] == [parent.task_id, queued]  # newest first
        assert {done_brain, done_planning} <= set(ids)
        by_id = {t["task_id"]: t for t in listed["tasks"]}
        assert by_id[done_planning]["agent"] == "planning" and by_id[done_planning]["cost_usd"] == 0.5
        assert by_id[done_planning]["status"] == "completed"

        error, completed = mcp.call("list_tasks", status="completed")
        assert not error and {t["task_id"] for t in completed["tasks"]} == {done_brain, done_planning}
        error, planning = mcp.call("list_tasks", status="completed", agent="planning", limit=5)
        assert not error and [t["task_id"] for t in planning["tasks"]] == [done_planning]
        error, text = mcp.call("list_tasks", status="nonsense")
        assert error and "invalid arguments" in text

        error, spent = mcp.call("costs")
        assert not error, spent
        assert spent["today"]["cost_usd"] == pytest.approx(0.75) and spent["today"]["tasks"] == 2
        assert spent["today"]["by_agent"]["planning"]["cost_usd"] == pytest.approx(0.5)
        assert spent["today"]["by_agent"]["brain"]["cost_usd"] == pytest.approx(0.25)
        assert spent["month"]["cost_usd"] == pytest.approx(0.75)
        assert spent["daily_cap_usd"] == 50.0
    finally:
        mcp.close()


def test_get_task_keeps_to_the_tree_except_for_the_brain(stack: Provisioned, bridge_for: Any) -> None:  # noqa: F811
    stranger = other_task()
    root = parent_task()
    brain = Mcp(bridge_for(root).mcp_config()["mcpServers"]["machine"])
    try:
        error, child = brain.call("create_task", agent="planning", prompt="p", max_budget_usd=0.5)
        assert not error, child
        error, sibling = brain.call("create_task", agent="planning", prompt="q", max_budget_usd=0.5)
        assert not error, sibling
        error, seen = brain.call("get_task", task_id=stranger)  # the brain may look up any task by id
        assert not error and seen["task_id"] == stranger
    finally:
        brain.close()

    planning = tasks.get(child["task_id"])
    assert planning is not None and planning.status == TaskStatus.QUEUED
    mcp = Mcp(bridge_for(planning).mcp_config()["mcpServers"]["machine"])
    try:
        for in_tree in (root.task_id, sibling["task_id"], planning.task_id):
            error, view = mcp.call("get_task", task_id=in_tree)
            assert not error and view["task_id"] == in_tree
        error, text = mcp.call("get_task", task_id=stranger)
        assert error and "not in this task's tree" in text
        error, text = mcp.call("wait_for_task", task_id=stranger, timeout_seconds=1)
        assert error and "not in this task's tree" in text
    finally:
        mcp.close()
