"""Delegation: the runner's side of the machine tools an agent gets (runner/machine_mcp.py is the CLI's side).

Per run, the runner listens on a Unix socket in a private temporary folder; the MCP server the CLI starts
forwards each tool call there with a per-run token. The runner answers with its own credentials, so the CLI's
process tree never holds AWS credentials, and every rule is applied here, next to the task it concerns:

- a child task is created through `agent_machine.domain.submission` (the same path as chat and webhooks) as a
  child of the running task (`parent_task_id`, `depth + 1`), in its own session, source "agent";
- depth and fan-out are capped (config.MAX_DELEGATION_DEPTH, MAX_CHILDREN_PER_TASK), and the daily cap is
  checked before a child is created (it counts against the same budget);
- fan-out and budget are *reserved* on the parent's task item, in the same DynamoDB transaction that creates the
  child (`submission.submit(..., extra=[reservation])`): the parent item's `children_count` is ADDed one under
  the condition `attribute_not_exists(children_count) OR children_count < :max`, and its
  `children_budget_usd` is ADDed the child's cap under the condition that it is still the value read (optimistic
  concurrency, retried). Concurrent create_task calls can therefore never pass the cap, and a reservation
  exists exactly when its child does (when the child cannot be queued and the submission takes it back, the
  reservation is released: `release`, ADD -1 / -cap). Reservations are kept: a
  finished child still counts against its parent's fan-out, and against its budget for what it spent;
- a child's cap is the smallest of what was asked, the agent's own cap, and what is left of the parent's cap
  after what its other children have spent or may still spend: `remaining = parent cap - children_budget_usd
  (the caps reserved) + what finished children left unspent of their caps` (a running child counts for its
  whole cap, a finished one for its cost plus what it reserved for its own children);
  with less than MIN_CHILD_BUDGET_USD left, create_task is refused. The parent's own run is capped apart, by
  its own --max-budget-usd; grandchildren reserve from their own parent's (the child's) cap, so a whole tree
  below a task never gets more than that task's cap;
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

import asyncio
import contextlib
import hmac
import json
import random
import secrets as pysecrets
import shutil
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_machine import aws
from agent_machine.domain import agents as agent_registry
from agent_machine.domain import budgets, submission
from agent_machine.models import Task, TaskSource, TaskStatus
from agent_machine.observability import get_logger
from agent_machine.settings import get_settings
from agent_machine.store import costs, tasks
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runner import config, sandbox
from runner.cli import MCP_SERVER_NAME
from runner.publish import Publisher, PublishError
from runner.results import clip

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

VIEW_TEXT_BYTES = 16 * 1024
MAX_TREE_WALK = 10  # parent links followed to find a tree's root (depth is capped far below this)
MIN_CHILD_BUDGET_USD = 0.01  # less than this left of the parent's cap: no more children
RESERVE_ATTEMPTS = 40  # optimistic retries of a reservation that raced another one


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


def task_budget(task: Task) -> float:
    """The task's spending cap as its run applies it (run.TaskRun.budget): the task's, the agent's, the default."""
    if task.max_budget_usd:
        return task.max_budget_usd
    try:
        agent_cap = agent_registry.get_agent(task.agent).max_budget_usd
    except agent_registry.UnknownAgent:
        agent_cap = None
    return agent_cap or get_settings().task_budget_usd


def _not_a_plan(task: Task) -> str | None:
    """Why a task cannot give an executor its plan (None: it can)."""
    if task.agent != agent_registry.PLANNING:
        return f"is a {task.agent} task, not a planning task"
    if task.status != TaskStatus.COMPLETED:
        return f"is {task.status.value}, not completed"
    if not (task.plan or "").strip():
        return "has no plan"
    return None


def reservation(task_id: str) -> tuple[int, Decimal]:
    """What a task has reserved for its children: how many, and how much of its cap (read consistently)."""
    resp = aws.dynamodb().get_item(
        TableName=tasks.table(),
        Key={"task_id": {"S": task_id}},
        ConsistentRead=True,
        ProjectionExpression="children_count, children_budget_usd",
    )
    item = resp.get("Item") or {}
    count = int(item.get("children_count", {}).get("N", "0"))
    reserved = Decimal(item.get("children_budget_usd", {}).get("N", "0"))
    return count, reserved


def unspent_by_finished_children(task_id: str) -> Decimal:
    """What the task's finished children left unused of their caps (handed back to the parent's budget): cap -
    own cost - what each reserved for its own children. Read through the by_parent index: a child that just
    finished may not be there yet, which only delays this."""
    unspent = Decimal(0)
    for child in tasks.list_tasks(parent_task_id=task_id, limit=config.MAX_CHILDREN_PER_TASK + 50).items:
        if child.status.terminal and child.max_budget_usd:
            # What the child reserved for its own children is counted as spent (their refunds stay its own).
            _count, reserved_below = reservation(child.task_id)
            left = Decimal(repr(child.max_budget_usd)) - Decimal(repr(child.cost_usd)) - reserved_below
            unspent += max(Decimal(0), left)
    return unspent


def reserve_item(task_id: str, seen_reserved: Decimal, cap: float) -> TransactWriteItemTypeDef:
    """The transaction part that reserves one child slot and `cap` dollars on the parent's task item."""
    return {
        "Update": {
            "TableName": tasks.table(),
            "Key": {"task_id": {"S": task_id}},
            "UpdateExpression": "ADD children_count :one, children_budget_usd :cap",
            "ConditionExpression": "attribute_exists(task_id)"
            " AND (attribute_not_exists(children_count) OR children_count < :max)"
            " AND (attribute_not_exists(children_budget_usd) OR children_budget_usd = :seen)",
            "ExpressionAttributeValues": {
                ":one": {"N": "1"},
                ":cap": {"N": f"{cap:.6f}"},
                ":max": {"N": str(config.MAX_CHILDREN_PER_TASK)},
                ":seen": {"N": str(seen_reserved)},
            },
        }
    }


def release(task_id: str, cap: float) -> None:
    """Give back one child slot and its cap (a child whose creation was undone). Best effort: a failure only
    leaves the parent with less room, never more."""
    try:
        aws.dynamodb().update_item(
            TableName=tasks.table(),
            Key={"task_id": {"S": task_id}},
            UpdateExpression="ADD children_count :minus, children_budget_usd :cap",
            ConditionExpression="children_count > :zero",
            ExpressionAttributeValues={":minus": {"N": "-1"}, ":cap": {"N": f"{-cap:.6f}"}, ":zero": {"N": "0"}},
        )
    except ClientError:
        get_logger().warning("could not release a child's reservation", extra={"task_id": task_id})


def _transaction_cancelled(exc: ClientError) -> bool:
    """A transaction cancelled by a condition or a conflicting transaction (both: read again and retry)."""
    return exc.response.get("Error", {}).get("Code") in ("TransactionCanceledException", "TransactionConflict")


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
        for attempt in range(RESERVE_ATTEMPTS):
            count, reserved = reservation(parent.task_id)
            if count >= config.MAX_CHILDREN_PER_TASK:
                raise Refused(f"this task already has {count} children, the most it may start.")
            committed = reserved - unspent_by_finished_children(parent.task_id)
            remaining = float(Decimal(repr(task_budget(parent))) - committed)
            if remaining < MIN_CHILD_BUDGET_USD:
                raise Refused(
                    f"no budget left for another child: this task's cap is ${task_budget(parent):.2f} and "
                    f"${float(committed):.2f} of it is spent or reserved by its children."
                )
            cap = round(min(args.max_budget_usd or agent.max_budget_usd or remaining, remaining), 6)
            if cap < MIN_CHILD_BUDGET_USD:
                raise Refused(f"a child's max_budget_usd must be at least ${MIN_CHILD_BUDGET_USD}")
            task, session = submission.new_task(
                args.prompt,
                agent=agent.name,
                source=TaskSource.AGENT,
                source_name=parent.agent,
                title=args.title,
                parent=parent,
                max_budget_usd=cap,
            )
            update: dict[str, Any] = {}
            if args.with_repository and parent.repo is not None:
                update["repo"] = parent.repo
            if plan_task is not None:
                update["plan"] = plan_task.plan
            if update:
                task = task.model_copy(update=update)
            try:
                submission.submit(task, session, extra=[reserve_item(parent.task_id, reserved, cap)])
            except submission.EnqueueFailed:
                # The submission took the task back (or failed it); the reservation it made goes back too.
                release(parent.task_id, cap)
                raise Refused("the child could not be queued (the queue is unreachable); try again later") from None
            except (submission.AlreadyRecorded, ClientError) as exc:
                if isinstance(exc, ClientError) and not _transaction_cancelled(exc):
                    raise
                # Another child was reserved meanwhile: read again (the count may be full now).
                time.sleep(random.uniform(0.005, 0.05) * min(attempt + 1, 5))
                continue
            break
        else:
            raise Refused("the machine is busy creating other children of this task; try again")
        get_logger().info(
            "delegated a task",
            extra={"task_id": parent.task_id, "child_task_id": task.task_id, "child_agent": agent.name},
        )
        created: dict[str, Any] = {
            "task_id": task.task_id,
            "session_id": task.session_id,
            "agent": agent.name,
            "status": "queued",
            "max_budget_usd": cap,
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
        children = tasks.list_tasks(parent_task_id=task.task_id, limit=50).items
        return task_view(task, children=children)

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
        children = tasks.list_tasks(parent_task_id=self.parent.task_id, limit=50).items
        _count, reserved = reservation(self.parent.task_id)
        committed = reserved - unspent_by_finished_children(self.parent.task_id)
        return {
            "task": {
                "task_id": self.parent.task_id,
                "agent": self.parent.agent,
                "depth": self.parent.depth,
                "max_budget_usd": task_budget(self.parent),
                "children_budget_left_usd": round(max(0.0, task_budget(self.parent) - float(committed)), 6),
                "children": [{"task_id": c.task_id, "agent": c.agent, "status": c.status.value} for c in children],
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


class Bridge:
    """The Unix-socket server one run's MCP server talks to."""

    def __init__(self, delegation: Delegation) -> None:
        self.delegation = delegation
        self.token = pysecrets.token_urlsafe(32)
        self.folder = Path(tempfile.mkdtemp(prefix="amb-", dir="/tmp" if Path("/tmp").is_dir() else None))  # noqa: S108 - short path for the socket (108-byte limit); mkdtemp makes it 0700
        self.path = self.folder / "bridge.sock"
        self._server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._accept, path=str(self.path), limit=1024 * 1024)
        self.path.chmod(0o600)
        # Reachable by the CLI's user only (a root runner runs the CLI as another user: runner/sandbox.py).
        sandbox.give(self.folder)
        sandbox.give(self.path)

    def mcp_config(self) -> dict[str, Any]:
        return {
            "mcpServers": {
                MCP_SERVER_NAME: {
                    "type": "stdio",
                    "command": sandbox.python_executable(),  # one the CLI's user can run
                    "args": ["-m", "runner.machine_mcp"],
                    "env": {
                        "PYTHONPATH": str(config.code_root()),
                        "MACHINE_BRIDGE": str(self.path),
                        "MACHINE_BRIDGE_TOKEN": self.token,
                        "PYTHONDONTWRITEBYTECODE": "1",
                        # The publishing tools are listed only where the runner will carry them out.
                        "MACHINE_PUBLISH": "1" if self.delegation.publisher is not None else "0",
                    },
                }
            }
        }

    def write_mcp_config(self, folder: Path) -> Path:
        path = folder / "mcp.json"
        path.write_text(json.dumps(self.mcp_config()), encoding="utf-8")
        path.chmod(0o600)
        return path

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        current = asyncio.current_task()
        if current is not None:
            self._handlers.add(current)
        try:
            while line := await reader.readline():
                reply = await self._answer(line)
                writer.write(json.dumps(reply, default=str).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            if current is not None:
                self._handlers.discard(current)
            writer.close()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError:
            return {"error": "bad request"}
        if not isinstance(request, dict) or not hmac.compare_digest(str(request.get("token", "")), self.token):
            return {"error": "not authorised"}
        method = str(request.get("method", ""))
        raw_params = request.get("params")
        params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
        try:
            result = await asyncio.to_thread(self.delegation.call, method, params)
        except Refused as exc:
            return {"error": str(exc)}
        except Exception as exc:
            get_logger().exception("machine tool failed", extra={"tool": method})
            return {"error": f"{method} failed on the machine: {type(exc).__name__}"}
        return {"result": result}

    async def close(self) -> None:
        self.delegation.closed.set()
        if self._server is not None:
            self._server.close()
            for handler in list(self._handlers):
                handler.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        shutil.rmtree(self.folder, ignore_errors=True)
