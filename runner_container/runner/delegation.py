"""Delegation: the runner's side of the machine tools an agent gets (runner/machine_mcp.py is the CLI's side; the
socket between them is runner/mcp_bridge.py).

The runner answers each tool call with its own credentials, so the CLI's process tree never holds AWS
credentials, and every rule is applied here, next to the task it concerns:

- a child task is created by `agent_machine.domain.children` (which reserves its slot and its share of this
  task's cap on this task's item, in the transaction that creates it: see there); depth and fan-out are capped
  (config.MAX_DELEGATION_DEPTH, MAX_CHILDREN_PER_TASK), and the daily cap is checked before a child is created (it
  counts against the same budget). The parent's own run is capped apart, by its own --max-budget-usd;
- an executor child needs a completed planning task with a plan (`plan_task_id`, or the newest one among this
  task's children and siblings); that plan goes to the executor task (`plan`, shown as "the approved plan");
- recent tasks (`list_tasks`) and today's / this month's spending by agent (`costs`) are read through the same
  store code as the REST API (GET /api/tasks, GET /api/costs);
- tasks can be looked up and waited for (bounded by the parent's own deadline); `get_task` answers for this
  task's tree (itself, its ancestors and descendants), and for any other task asked for by its exact id;
- `push_branch` and `open_pull_request` exist only for a run with a Publisher (an agent that may push, on a
  task with a repository): the runner pushes the agent's `claude/...` branch and opens the pull request with
  its own GitHub token (runner/publish.py), which the CLI never has.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from agent_machine.domain import agents as agent_registry
from agent_machine.domain import budgets, children
from agent_machine.models import Task, TaskStatus
from agent_machine.observability import get_logger
from agent_machine.store import costs, tasks
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runner import config
from runner.publish import Publisher, PublishError
from runner.results import clip

VIEW_TEXT_BYTES = 16 * 1024
MAX_TREE_WALK = 10  # parent links followed to find a tree's root (depth is capped far below this)


class Refused(Exception):
    """A tool call the rules do not allow; the message is shown to the agent."""


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateArgs(_Args):
    agent: str
    prompt: str = Field(min_length=1, max_length=100_000)
    title: str | None = Field(None, max_length=200)
    with_repository: bool = True
    max_budget_usd: float | None = Field(None, gt=0)
    plan_task_id: str | None = Field(None, min_length=1, max_length=100)


class TaskArgs(_Args):
    task_id: str = Field(min_length=1, max_length=100)


class WaitArgs(TaskArgs):
    timeout_seconds: float = Field(600.0, ge=1)


class NoArgs(_Args):
    pass


class ListArgs(_Args):
    status: TaskStatus | None = None
    agent: str | None = Field(None, max_length=63)
    limit: int = Field(20, ge=1, le=100)


class PushArgs(_Args):
    branch: str | None = Field(None, min_length=1, max_length=200)


class PullRequestArgs(_Args):
    title: str = Field(min_length=1, max_length=256)
    body: str = Field("", max_length=65_536)
    branch: str | None = Field(None, min_length=1, max_length=200)
    base: str | None = Field(None, min_length=1, max_length=200)
    draft: bool = False


def task_view(task: Task, *, children: list[Task] | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "task_id": task.task_id,
        "agent": task.agent,
        "status": task.status.value,
        "title": task.title,
        "session_id": task.session_id,
        "parent_task_id": task.parent_task_id,
        "depth": task.depth,
        "cost_usd": task.cost_usd,
        "num_turns": task.num_turns,
        "created_at": task.created_at.isoformat(),
        "finished_at": task.finished_at.isoformat() if task.finished_at else None,
    }
    for name in ("result", "plan", "error", "error_kind"):
        value = getattr(task, name)
        if value is not None:
            view[name] = clip(value, VIEW_TEXT_BYTES)
    if task.repo and task.repo.full_name:
        view["repository"] = task.repo.full_name
    if children is not None:
        view["children"] = [
            {"task_id": c.task_id, "agent": c.agent, "status": c.status.value, "title": c.title} for c in children
        ]
    return view


def _not_a_plan(task: Task) -> str | None:
    """Why a task cannot give an executor its plan (None: it can)."""
    if task.agent != agent_registry.PLANNING:
        return f"is a {task.agent} task, not a planning task"
    if task.status != TaskStatus.COMPLETED:
        return f"is {task.status.value}, not completed"
    if not (task.plan or "").strip():
        return "has no plan"
    return None


class Delegation:
    """The tool implementations for one running task (blocking; the bridge runs them in threads)."""

    def __init__(self, parent: Task, *, deadline: float, publisher: Publisher | None = None) -> None:
        self.parent = parent
        self.deadline = deadline  # time.monotonic() by which the parent run ends
        self.closed = threading.Event()  # the parent run ended: waits end too
        self.publisher = publisher  # only for an agent that may push, on a task with a repository

    def create_task(self, args: CreateArgs) -> dict[str, Any]:
        parent = self.parent
        if parent.depth + 1 > config.MAX_DELEGATION_DEPTH:
            raise Refused(
                f"delegation depth limit reached: this task is at depth {parent.depth}, children may go "
                f"to depth {config.MAX_DELEGATION_DEPTH} at most. Do the work yourself or report back."
            )
        try:
            agent = agent_registry.get_agent(args.agent)
        except agent_registry.UnknownAgent:
            names = ", ".join(a.name for a in agent_registry.list_agents())
            raise Refused(f"there is no agent {args.agent!r}; agents: {names}") from None
        plan_task = self.approved_plan(args.plan_task_id) if agent.name == agent_registry.EXECUTOR else None
        check = budgets.check_daily()
        if not check.allowed:
            raise Refused(check.reason)
        request = children.ChildRequest(
            prompt=args.prompt,
            agent=agent.name,
            title=args.title,
            wanted_usd=args.max_budget_usd or agent.max_budget_usd,
            repo=parent.repo if args.with_repository else None,
            plan=plan_task.plan if plan_task is not None else None,
        )
        try:
            task = children.create(parent, request, max_children=config.MAX_CHILDREN_PER_TASK)
        except children.ChildRefused as exc:
            raise Refused(str(exc)) from None
        get_logger().info(
            "delegated a task",
            extra={"task_id": parent.task_id, "child_task_id": task.task_id, "child_agent": agent.name},
        )
        created: dict[str, Any] = {
            "task_id": task.task_id,
            "session_id": task.session_id,
            "agent": agent.name,
            "status": "queued",
            "max_budget_usd": task.max_budget_usd,
            "depth": task.depth,
            "note": "the child runs on its own runner; use wait_for_task or get_task for its result",
        }
        if plan_task is not None:
            created["plan_task_id"] = plan_task.task_id
        return created

    def approved_plan(self, plan_task_id: str | None) -> Task:
        """The planning task whose plan an executor child carries out: the one named, else the newest completed
        planning task with a plan among this task's children (and its siblings). Refused when there is none."""
        if plan_task_id:
            found = tasks.get(plan_task_id)
            if found is None:
                raise Refused(f"no task {plan_task_id}")
            problem = _not_a_plan(found)
            if problem:
                raise Refused(f"task {plan_task_id} {problem}; an executor needs a completed planning task's plan.")
            return found
        parents = [self.parent.task_id] + ([self.parent.parent_task_id] if self.parent.parent_task_id else [])
        for parent_id in parents:
            for candidate in tasks.list_tasks(parent_task_id=parent_id, limit=50).items:
                if not _not_a_plan(candidate):
                    return candidate
        raise Refused(
            "an executor only carries out an approved plan: create a planning task first, wait for it to complete, "
            "then create the executor with plan_task_id set to that planning task's id."
        )

    def root_of(self, task: Task) -> str:
        """The id of the task at the top of a task's tree (following parent_task_id, bounded)."""
        current = task
        for _ in range(MAX_TREE_WALK):
            if not current.parent_task_id:
                break
            parent = self.parent if current.parent_task_id == self.parent.task_id else tasks.get(current.parent_task_id)
            if parent is None:
                break
            current = parent
        return current.task_id

    def visible(self, task_id: str) -> Task:
        """A task this run may look at: one in its own tree (same root), or for the brain any task named by its
        exact id. Refused otherwise (and when there is no such task)."""
        task = tasks.get(task_id)
        if task is None:
            raise Refused(f"no task {task_id}")
        if self.parent.agent == agent_registry.BRAIN:
            return task
        if self.root_of(task) != self.root_of(self.parent):
            raise Refused(f"task {task_id} is not in this task's tree; only tasks of this tree can be looked up.")
        return task

    def get_task(self, args: TaskArgs) -> dict[str, Any]:
        task = self.visible(args.task_id)
        below = tasks.list_tasks(parent_task_id=task.task_id, limit=50).items
        return task_view(task, children=below)

    def wait_for_task(self, args: WaitArgs) -> dict[str, Any]:
        # Leave the parent time to use the answer before its own deadline.
        budget = min(args.timeout_seconds, config.MAX_WAIT_SECONDS, self.deadline - time.monotonic() - 60)
        end = time.monotonic() + max(0.0, budget)
        start = time.monotonic()
        self.visible(args.task_id)
        while True:
            task = tasks.get(args.task_id)
            if task is None:
                raise Refused(f"no task {args.task_id}")
            if task.status.terminal or time.monotonic() >= end or self.closed.is_set():
                view = task_view(task)
                view["finished"] = task.status.terminal
                view["waited_seconds"] = round(time.monotonic() - start, 1)
                if not task.status.terminal:
                    view["note"] = "still running; wait again or check back later with get_task"
                return view
            self.closed.wait(min(config.WAIT_POLL_SECONDS, max(0.05, end - time.monotonic())))

    def list_agents(self, args: NoArgs) -> dict[str, Any]:
        return {
            "agents": [
                {"name": a.name, "description": a.description, "long_running": a.long_running, "builtin": a.builtin}
                for a in agent_registry.list_agents()
            ]
        }

    def list_tasks(self, args: ListArgs) -> dict[str, Any]:
        """Recent tasks, newest first (the store query the REST API's GET /api/tasks uses)."""
        page = tasks.list_tasks(status=args.status, agent=args.agent, limit=args.limit)
        return {
            "tasks": [
                {
                    "task_id": t.task_id,
                    "agent": t.agent,
                    "status": t.status.value,
                    "title": t.title,
                    "source": t.source.value,
                    "parent_task_id": t.parent_task_id,
                    "cost_usd": round(t.cost_usd, 6),
                    "created_at": t.created_at.isoformat(),
                    "finished_at": t.finished_at.isoformat() if t.finished_at else None,
                }
                for t in page.items
            ],
            "more": page.cursor is not None,
        }

    def costs(self, args: NoArgs) -> dict[str, Any]:
        """Today's and this month's spending, in all and by agent (the Costs table, as GET /api/costs reads it)."""
        today = costs.today()
        month_days = [d for d in costs.days_back(int(today[8:10])) if d.startswith(today[:7])]
        totals = {"today": {"cost_usd": 0.0, "tasks": 0}, "month": {"cost_usd": 0.0, "tasks": 0}}
        by_agent: dict[str, dict[str, dict[str, Any]]] = {"today": {}, "month": {}}
        for day in month_days:
            spans = ("today", "month") if day == today else ("month",)
            for record in costs.day_records(day):
                kind, _, name = record.key.partition("#")
                for span in spans:
                    if record.key == "TOTAL":
                        bucket = totals[span]
                    elif kind == "AGENT":
                        bucket = by_agent[span].setdefault(name, {"cost_usd": 0.0, "tasks": 0})
                    else:
                        continue
                    bucket["cost_usd"] = round(bucket["cost_usd"] + record.cost_usd, 6)
                    bucket["tasks"] += record.tasks
        check = budgets.check_daily()
        return {
            "today": {**totals["today"], "day": today, "by_agent": by_agent["today"]},
            "month": {**totals["month"], "month": today[:7], "by_agent": by_agent["month"]},
            "daily_cap_usd": check.daily_cap,
            "allowed": check.allowed,
        }

    def machine_status(self, args: NoArgs) -> dict[str, Any]:
        check = budgets.check_daily()
        listed = tasks.list_tasks(parent_task_id=self.parent.task_id, limit=50).items
        left = children.budget_left(self.parent, max_children=config.MAX_CHILDREN_PER_TASK)
        return {
            "task": {
                "task_id": self.parent.task_id,
                "agent": self.parent.agent,
                "depth": self.parent.depth,
                "max_budget_usd": children.task_budget(self.parent),
                "children_budget_left_usd": left,
                "children": [{"task_id": c.task_id, "agent": c.agent, "status": c.status.value} for c in listed],
            },
            "limits": {"max_depth": config.MAX_DELEGATION_DEPTH, "max_children": config.MAX_CHILDREN_PER_TASK},
            "today": {
                "spent_usd": round(check.spent_today, 6),
                "daily_cap_usd": check.daily_cap,
                "allowed": check.allowed,
            },
        }

    def _publisher(self) -> Publisher:
        if self.publisher is None:
            raise Refused(
                "this task cannot push or open pull requests: only the executor can, on a task with a repository"
            )
        return self.publisher

    def push_branch(self, args: PushArgs) -> dict[str, Any]:
        try:
            return self._publisher().push_branch(args.branch)
        except PublishError as exc:
            raise Refused(str(exc)) from None

    def open_pull_request(self, args: PullRequestArgs) -> dict[str, Any]:
        try:
            return self._publisher().open_pull_request(
                title=args.title, body=args.body, branch=args.branch, base=args.base, draft=args.draft
            )
        except PublishError as exc:
            raise Refused(str(exc)) from None

    def call(self, method: str, params: dict[str, Any]) -> Any:
        handlers: dict[str, tuple[type[_Args], Any]] = {
            "create_task": (CreateArgs, self.create_task),
            "get_task": (TaskArgs, self.get_task),
            "wait_for_task": (WaitArgs, self.wait_for_task),
            "list_agents": (NoArgs, self.list_agents),
            "machine_status": (NoArgs, self.machine_status),
            "list_tasks": (ListArgs, self.list_tasks),
            "costs": (NoArgs, self.costs),
            "push_branch": (PushArgs, self.push_branch),
            "open_pull_request": (PullRequestArgs, self.open_pull_request),
        }
        if method not in handlers:
            raise Refused(f"unknown tool {method}")
        model, fn = handlers[method]
        try:
            args = model.model_validate(params)
        except ValidationError as exc:
            raise Refused(f"invalid arguments: {exc.errors(include_url=False)}") from None
        return fn(args)
