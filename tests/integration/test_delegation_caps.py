"""Delegation caps against the moto server: the fan-out cap holds under concurrent create_task calls (the slot
is reserved on the parent's item in the transaction that creates the child), children's budgets come out of
the parent's cap, and an executor child needs a completed planning task's plan."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from agent_machine.domain import lifecycle, submission
from agent_machine.models import RepoContext, Task, TaskStatus
from agent_machine.settings import get_settings
from agent_machine.store import tasks
from local_runtime.provision import Provisioned
from runner import config
from runner.delegation import CreateArgs, Delegation, NoArgs, Refused

pytestmark = pytest.mark.timeout(120)


def parent_task(budget: float = 2.0) -> Task:
    task, session = submission.new_task("fix acme/app#7", max_budget_usd=budget)
    task = task.model_copy(update={"repo": RepoContext(full_name="acme/app", issue_number=7)})
    submission.submit(task, session)
    return task


def delegation(parent: Task) -> Delegation:
    return Delegation(parent, deadline=time.monotonic() + 600)


def create(d: Delegation, **kwargs: Any) -> dict[str, Any]:
    return d.create_task(CreateArgs.model_validate({"agent": "planning", "prompt": "p", **kwargs}))


def finish(task_id: str, *, cost: float, plan: str | None = None) -> None:
    task = tasks.get(task_id)
    assert task is not None
    tasks.start(task_id, "lambda:x", "lambda")
    extra = {"plan": plan} if plan else None
    assert lifecycle.finish(
        task, TaskStatus.COMPLETED, runner_id="lambda:x", result=plan or "done", cost_usd=cost, extra=extra
    )


def test_concurrent_create_task_calls_never_pass_the_fan_out_cap(
    stack: Provisioned, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "MAX_CHILDREN_PER_TASK", 5)
    parent = parent_task(budget=3.0)
    d = delegation(parent)
    barrier = threading.Barrier(12)

    def attempt(_: int) -> str:
        barrier.wait()
        try:
            return str(create(d, max_budget_usd=0.1)["task_id"])
        except Refused as exc:
            return f"refused: {exc}"

    with ThreadPoolExecutor(max_workers=12) as pool:
        outcomes = list(pool.map(attempt, range(12)))
    created = [o for o in outcomes if not o.startswith("refused")]
    refused = [o for o in outcomes if o.startswith("refused")]
    assert len(created) == 5, outcomes
    assert all("already has 5 children" in r for r in refused), refused
    children = tasks.list_tasks(parent_task_id=parent.task_id, limit=50).items
    assert sorted(c.task_id for c in children) == sorted(created)
    count, reserved = tasks.children_reserved(parent.task_id)
    assert count == 5 and float(reserved) == pytest.approx(0.5)


def test_children_share_the_parents_cap(stack: Provisioned) -> None:
    parent = parent_task(budget=2.0)
    d = delegation(parent)
    first = create(d, max_budget_usd=1.5)
    assert first["max_budget_usd"] == 1.5
    second = create(d, max_budget_usd=1.0)  # only $0.50 of the parent's $2 is left
    assert second["max_budget_usd"] == pytest.approx(0.5)
    stored = tasks.get(second["task_id"])
    assert stored is not None and stored.max_budget_usd == pytest.approx(0.5)
    with pytest.raises(Refused, match="no budget left"):
        create(d)
    # The first child finishes having spent $0.30 of its $1.50: the rest is the parent's again.
    finish(first["task_id"], cost=0.3)
    assert d.machine_status(NoArgs())["task"]["children_budget_left_usd"] == pytest.approx(1.2)
    third = create(d)
    assert third["max_budget_usd"] == pytest.approx(1.2)
    with pytest.raises(Refused, match="no budget left"):
        create(d, max_budget_usd=0.1)


def test_an_executor_needs_a_completed_plan(stack: Provisioned) -> None:
    parent = parent_task()
    d = delegation(parent)
    with pytest.raises(Refused, match="only carries out an approved plan"):
        d.create_task(CreateArgs(agent="executor", prompt="just change the code"))
    planning = create(d, max_budget_usd=0.5)
    with pytest.raises(Refused, match="not completed"):
        d.create_task(CreateArgs(agent="executor", prompt="go", plan_task_id=planning["task_id"]))
    with pytest.raises(Refused, match="only carries out an approved plan"):  # nor a running one, implicitly
        d.create_task(CreateArgs(agent="executor", prompt="go"))
    with pytest.raises(Refused, match="not a planning task"):
        d.create_task(CreateArgs(agent="executor", prompt="go", plan_task_id=parent.task_id))
    finish(planning["task_id"], cost=0.1, plan="# Plan: fix the null check in app.py")

    made = d.create_task(
        CreateArgs(agent="executor", prompt="implement it", plan_task_id=planning["task_id"], max_budget_usd=0.5)
    )
    assert made["plan_task_id"] == planning["task_id"]
    executor = tasks.get(made["task_id"])
    assert executor is not None and executor.agent == "executor"
    assert executor.plan == "# Plan: fix the null check in app.py"

    # Without plan_task_id: the newest completed plan among the task's children.
    implicit = d.create_task(CreateArgs(agent="executor", prompt="implement it", max_budget_usd=0.1))
    assert implicit["plan_task_id"] == planning["task_id"]
    assert tasks.get(implicit["task_id"]).plan == "# Plan: fix the null check in app.py"  # type: ignore[union-attr]


def test_a_child_that_cannot_be_queued_gives_its_reservation_back(
    stack: Provisioned, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = parent_task(budget=2.0)
    d = delegation(parent)
    create(d, max_budget_usd=0.5)
    url = get_settings().task_queue_url
    monkeypatch.setenv("TASK_QUEUE_URL", url.rsplit("/", 1)[0] + "/no-such-queue")
    get_settings.cache_clear()
    try:
        with pytest.raises(Refused, match="could not be queued"):
            create(d, max_budget_usd=1.0)
    finally:
        monkeypatch.setenv("TASK_QUEUE_URL", url)
        get_settings.cache_clear()
    count, reserved = tasks.children_reserved(parent.task_id)
    assert count == 1 and float(reserved) == pytest.approx(0.5)
    assert create(d)["max_budget_usd"] == pytest.approx(1.5)


def test_what_grandchildren_reserved_is_not_handed_back(stack: Provisioned) -> None:
    root = parent_task(budget=2.0)
    d = delegation(root)
    child = create(d, max_budget_usd=1.5)
    child_task = tasks.get(child["task_id"])
    assert child_task is not None
    grandchild = create(delegation(child_task), max_budget_usd=5.0)  # at most the child's own cap
    assert grandchild["max_budget_usd"] == pytest.approx(1.5)
    finish(child["task_id"], cost=0.2)
    # The child spent $0.20 and its own child may still spend $1.50: nothing of its cap comes back.
    assert d.machine_status(NoArgs())["task"]["children_budget_left_usd"] == pytest.approx(0.5)
