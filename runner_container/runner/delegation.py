"""Delegation: the runner's side of the machine tools an agent gets (runner/machine_mcp.py is the CLI's side).

Per run, the runner listens on a Unix socket in a private temporary folder; the MCP server the CLI starts
forwards each tool call there with a per-run token. The runner answers with its own credentials, so the CLI's
process tree never holds AWS credentials, and every rule is applied here, next to the task it concerns:

- a child task is created through `agent_machine.domain.submission` (the same path as chat and webhooks) as a
  child of the running task (`parent_task_id`, `depth + 1`), in its own session, source "agent";
- depth and fan-out are capped (config.MAX_DELEGATION_DEPTH, MAX_CHILDREN_PER_TASK); a child's spending cap is
  at most its parent's, and the daily cap is checked before it is created (it counts against the same budget);
- tasks can be looked up and waited for (bounded by the parent's own deadline).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets as pysecrets
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agent_machine.domain import agents as agent_registry
from agent_machine.domain import budgets, submission
from agent_machine.models import Task, TaskSource
from agent_machine.observability import get_logger
from agent_machine.settings import get_settings
from agent_machine.store import tasks
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runner import config
from runner.cli import MCP_SERVER_NAME
from runner.results import clip

VIEW_TEXT_BYTES = 16 * 1024


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


class TaskArgs(_Args):
    task_id: str = Field(min_length=1, max_length=100)


class WaitArgs(TaskArgs):
    timeout_seconds: float = Field(600.0, ge=1)


class NoArgs(_Args):
    pass


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
    return task.max_budget_usd or get_settings().task_budget_usd


class Delegation:
    """The tool implementations for one running task (blocking; the bridge runs them in threads)."""

    def __init__(self, parent: Task, *, deadline: float) -> None:
        self.parent = parent
        self.deadline = deadline  # time.monotonic() by which the parent run ends
        self.closed = threading.Event()  # the parent run ended: waits end too

    def create_task(self, args: CreateArgs) -> dict[str, Any]:
        parent = self.parent
        if parent.depth + 1 > config.MAX_DELEGATION_DEPTH:
            raise Refused(
                f"delegation depth limit reached: this task is at depth {parent.depth}, children may go "
                f"to depth {config.MAX_DELEGATION_DEPTH} at most. Do the work yourself or report back."
            )
        children = tasks.list_tasks(parent_task_id=parent.task_id, limit=config.MAX_CHILDREN_PER_TASK + 1).items
        if len(children) >= config.MAX_CHILDREN_PER_TASK:
            raise Refused(f"this task already has {len(children)} children, the most it may start.")
        try:
            agent = agent_registry.get_agent(args.agent)
        except agent_registry.UnknownAgent:
            names = ", ".join(a.name for a in agent_registry.list_agents())
            raise Refused(f"there is no agent {args.agent!r}; agents: {names}") from None
        check = budgets.check_daily()
        if not check.allowed:
            raise Refused(check.reason)
        cap = min(args.max_budget_usd or agent.max_budget_usd or task_budget(parent), task_budget(parent))
        task, session = submission.new_task(
            args.prompt,
            agent=agent.name,
            source=TaskSource.AGENT,
            source_name=parent.agent,
            title=args.title,
            parent=parent,
            max_budget_usd=cap,
        )
        if args.with_repository and parent.repo is not None:
            task = task.model_copy(update={"repo": parent.repo})
        submission.submit(task, session)
        get_logger().info(
            "delegated a task",
            extra={"task_id": parent.task_id, "child_task_id": task.task_id, "child_agent": agent.name},
        )
        return {
            "task_id": task.task_id,
            "session_id": task.session_id,
            "agent": agent.name,
            "status": "queued",
            "max_budget_usd": cap,
            "depth": task.depth,
            "note": "the child runs on its own runner; use wait_for_task or get_task for its result",
        }

    def get_task(self, args: TaskArgs) -> dict[str, Any]:
        task = tasks.get(args.task_id)
        if task is None:
            raise Refused(f"no task {args.task_id}")
        children = tasks.list_tasks(parent_task_id=task.task_id, limit=50).items
        return task_view(task, children=children)

    def wait_for_task(self, args: WaitArgs) -> dict[str, Any]:
        # Leave the parent time to use the answer before its own deadline.
        budget = min(args.timeout_seconds, config.MAX_WAIT_SECONDS, self.deadline - time.monotonic() - 60)
        end = time.monotonic() + max(0.0, budget)
        start = time.monotonic()
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

    def machine_status(self, args: NoArgs) -> dict[str, Any]:
        check = budgets.check_daily()
        children = tasks.list_tasks(parent_task_id=self.parent.task_id, limit=50).items
        return {
            "task": {
                "task_id": self.parent.task_id,
                "agent": self.parent.agent,
                "depth": self.parent.depth,
                "max_budget_usd": task_budget(self.parent),
                "children": [{"task_id": c.task_id, "agent": c.agent, "status": c.status.value} for c in children],
            },
            "limits": {"max_depth": config.MAX_DELEGATION_DEPTH, "max_children": config.MAX_CHILDREN_PER_TASK},
            "today": {
                "spent_usd": round(check.spent_today, 6),
                "daily_cap_usd": check.daily_cap,
                "allowed": check.allowed,
            },
        }

    def call(self, method: str, params: dict[str, Any]) -> Any:
        handlers: dict[str, tuple[type[_Args], Any]] = {
            "create_task": (CreateArgs, self.create_task),
            "get_task": (TaskArgs, self.get_task),
            "wait_for_task": (WaitArgs, self.wait_for_task),
            "list_agents": (NoArgs, self.list_agents),
            "machine_status": (NoArgs, self.machine_status),
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

    def mcp_config(self) -> dict[str, Any]:
        return {
            "mcpServers": {
                MCP_SERVER_NAME: {
                    "type": "stdio",
                    "command": sys.executable,
                    "args": ["-m", "runner.machine_mcp"],
                    "env": {
                        "PYTHONPATH": str(config.code_root()),
                        "MACHINE_BRIDGE": str(self.path),
                        "MACHINE_BRIDGE_TOKEN": self.token,
                        "PYTHONDONTWRITEBYTECODE": "1",
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
