"""One run of the CLI for a task this runner has claimed, from its claim to its booked end: prepare (workspace,
clone, the session's transcript, the model proxy, the machine's MCP bridge), spawn and stream the CLI
(runner/execution.py) under the run's controller (runner/controller.py: heartbeat, stop, deadline, signals),
decide the outcome (runner/results.py), save the transcript, then book it and report it (runner/booking.py).

The transcript goes to S3 first (what the next message resumes; not if the task was lost to another runner), then
the run is booked; a run lost to another runner, or finished elsewhere, is neither booked nor reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass

from agent_machine import secrets
from agent_machine.domain import agents as agent_registry
from agent_machine.models import AgentSpec, EventType, Task, TaskStatus
from agent_machine.observability import get_logger
from agent_machine.settings import get_settings
from agent_machine.store import sessions

from runner import booking, cli, config, controller, model_proxy, publish, sandbox, transcripts, workspace
from runner.controller import Controller
from runner.delegation import Delegation
from runner.execution import execute, finished_before, lost_conversation, without_resume
from runner.mcp_bridge import Bridge
from runner.output import EventStream
from runner.plan_file import read_plan
from runner.prompting import system_prompt_addition
from runner.results import Outcome, Prior, RunState, clip, decide, interruption_status


@dataclass(frozen=True)
class RunOptions:
    runner_id: str
    run_mode: str
    deadline: float  # time.monotonic() by which the CLI is interrupted
    timeout_detail: str = ""


def anthropic_key() -> str | None:
    """The runner's Anthropic key (its environment, else Secrets Manager): for the model proxy, never the CLI."""
    if cli.is_true(os.environ.get("CLAUDE_CODE_USE_BEDROCK")):
        return None  # Bedrock: the proxy signs with the runner's AWS credentials instead
    return secrets.get_secret("anthropic_api_key")


def start_model_proxy(cap_usd: float) -> model_proxy.ModelProxy:
    """The task's model proxy (runner/model_proxy.py): the CLI's only way to the model, metered and capped."""
    return model_proxy.for_task(cap_usd, anthropic_key())


def can_push(agent: AgentSpec) -> bool:
    """Agents with unrestricted Bash that may edit (the executor) get their `claude/...` branch pushed and a pull
    request opened by the runner (runner/publish.py); no agent ever gets a GitHub credential."""
    return "Bash" in agent.allowed_tools and agent.permission_mode.value != "plan"


class TaskRun:
    """Everything between a claimed task and its booked end."""

    def __init__(self, task: Task, agent: AgentSpec, opts: RunOptions) -> None:
        self.task = task
        self.agent = agent
        self.opts = opts
        self.events = EventStream(task, start_seq=task.last_seq)
        self.controller = Controller(task, self.events, runner_id=opts.runner_id, deadline=opts.deadline)
        self.state = RunState()
        self.ws: workspace.Workspace | None = None
        self.bridge: Bridge | None = None
        self.model_proxy: model_proxy.ModelProxy | None = None
        self.publisher: publish.Publisher | None = None  # pushes the agent's branch and opens its PR
        self.resumed: str | None = None
        self.prior: Prior | None = None
        self.started = time.monotonic()
        self.spawned_at: float | None = None
        self.spawned_wall = time.time()  # (reset when the CLI starts) for PLAN.md's modification time
        self.exited_at: float | None = None
        self.booked_at: float | None = None
        self.report_start: asyncio.Task[None] | None = None

    async def run(self) -> Outcome | None:
        log = get_logger()
        controller.register(self.controller)  # (interrupted at once if the process is shutting down)
        try:
            self.events.emit(
                EventType.STARTED,
                {
                    "status": "running",
                    "agent": self.agent.name,
                    "attempt": self.task.attempt,
                    "run_mode": self.opts.run_mode,
                    "runner_id": self.opts.runner_id,
                    "model": self.agent.model,
                    "max_budget_usd": self.budget(),
                },
            )
            # Reporting back to the source runs beside the CLI: a slow or failing GitHub never delays or fails it.
            self.report_start = asyncio.create_task(asyncio.to_thread(booking.report_back, self.task, started=True))
            watcher = asyncio.create_task(self.controller.watch())
            try:
                outcome = await self._run_cli()
            except cli.CliNotFound as exc:
                outcome = Outcome(TaskStatus.FAILED, error=str(exc), error_kind="cli_missing")
            except workspace.WorkspaceError as exc:
                outcome = Outcome(
                    TaskStatus.FAILED, error=clip(str(exc), config.MAX_ERROR_BYTES), error_kind="workspace"
                )
            except Exception as exc:
                log.exception("the run failed")
                outcome = Outcome(
                    TaskStatus.FAILED,
                    error=f"the runner failed: {type(exc).__name__}: {exc}",
                    error_kind="runner_error",
                )
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
                if self.model_proxy is not None:
                    self.model_proxy.stop()  # the CLI has exited: its cost is final
            booked = await self._book(outcome)
            await booking.report_finished(
                self.task, outcome if booked else None, self.publisher, report_start=self.report_start
            )
            return outcome if booked else None
        finally:
            if self.model_proxy is not None:
                self.model_proxy.stop()
            controller.unregister(self.controller)
            if self.bridge is not None:
                await self.bridge.close()
            await self.events.close()
            if self.ws is not None:
                await asyncio.to_thread(self.ws.cleanup)

    def budget(self) -> float:
        return self.task.max_budget_usd or self.agent.max_budget_usd or get_settings().task_budget_usd

    async def _prepare(self, executable: str) -> cli.Invocation:
        task, agent = self.task, self.agent
        skills = await asyncio.to_thread(agent_registry.skills_for, agent.name)
        ws = self.ws = await asyncio.to_thread(workspace.prepare, task, agent, skills)
        if ws.repo_dir is not None and task.repo is not None:
            # The token is only in the runner's git (the clone's .git/config and the CLI never see it).
            github_token = await asyncio.to_thread(secrets.get_secret, "github_token")
            base_commit = await workspace.clone_repository(ws, task.repo, github_token)
            if can_push(agent):
                self.publisher = publish.for_task(task, ws.repo_dir, base_commit=base_commit)
        await self._restore_session(ws)
        self.model_proxy = await asyncio.to_thread(start_model_proxy, self.budget())
        self.bridge = Bridge(Delegation(task, deadline=self.opts.deadline, publisher=self.publisher))
        await self.bridge.start()
        marker_name, _, marker_value = self.controller.run_marker.partition("=")
        extra: dict[str, str] = {marker_name: marker_value}
        inv = cli.Invocation(
            executable=executable,
            args=cli.build_args(
                task.prompt,
                publish.with_tools(agent) if self.publisher is not None else agent,
                max_budget_usd=self.budget(),
                resume=self.resumed,
                append_system_prompt=system_prompt_addition(task, agent),
                mcp_config=self.bridge.write_mcp_config(ws.task_dir),
            ),
            env=cli.build_env(ws, model_env=self.model_proxy.cli_env(), extra=extra),
            cwd=ws.cwd,
            resume=self.resumed,
        )
        # Everything is laid out (clone, transcript, mcp.json): the folders go to the CLI's own user.
        await asyncio.to_thread(sandbox.hand_over, ws)
        return inv

    async def _run_cli(self) -> Outcome:
        task, agent = self.task, self.agent
        executable = cli.resolve_executable(get_settings().claude_cli_path)
        # Preparing (clone, restore) can take a while: a stop or the deadline cancels it.
        preparing = asyncio.create_task(self._prepare(executable))
        interrupted = asyncio.create_task(self.controller.interrupted.wait())
        await asyncio.wait({preparing, interrupted}, return_when=asyncio.FIRST_COMPLETED)
        interrupted.cancel()
        if not preparing.done():
            preparing.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await preparing  # (its error, if any, is the interruption's to report, or raised just below)
        reason = self.controller.interruption
        if reason == "lost":
            return Outcome(TaskStatus.FAILED, error="the task was taken from this runner", error_kind="lost")
        if reason is not None:
            status, kind, message = interruption_status(reason)
            return Outcome(status, error=f"{message} (before the CLI started)", error_kind=kind)
        inv = preparing.result()
        ws = self.ws
        assert ws is not None
        get_logger().info("starting the CLI", extra={"cli_args": inv.describe(), "cwd": str(ws.cwd)})
        self.spawned_at = time.monotonic()
        self.spawned_wall = time.time()
        execution = await execute(inv, self.controller, self.state, self.events)
        if self.resumed is not None and lost_conversation(self.state) and self.controller.interruption is None:
            # The CLI could not find the conversation (and keeps its id in the result): without a retry the
            # session would fail the same way at every message. Start a fresh conversation once.
            get_logger().warning("the CLI found no conversation to resume: starting a new one")
            self.events.emit_output(
                {
                    "kind": "notice",
                    "text": "the previous conversation of this session could not be resumed; "
                    "this message starts a new one",
                },
                0,
            )
            inv = without_resume(inv)
            self.resumed, self.prior, self.state = None, None, RunState()
            execution = await execute(inv, self.controller, self.state, self.events)
        self.exited_at = time.monotonic()
        outcome = decide(
            self.state,
            exit_code=execution.exit_code,
            interruption=self.controller.interruption,
            stderr_tail=execution.stderr_tail,
            resumed_cli_session=self.resumed,
            prior=self.prior,
            timeout_detail=self.opts.timeout_detail,
            finished_before_interruption=finished_before(self.state, self.controller.interruption_requested_at),
        )
        # The agent's own plan first; a PLAN.md only if this run wrote it (not one that came with the repository).
        plan = outcome.plan or await asyncio.to_thread(read_plan, ws, written_since=self.spawned_wall)
        if plan is None and agent.name == agent_registry.PLANNING and outcome.status == TaskStatus.COMPLETED:
            plan = outcome.result
        outcome.plan = clip(plan, config.MAX_PLAN_BYTES)
        if outcome.cli_session_id and self.controller.interruption == "lost":
            # The task belongs to another runner now: its conversation in S3 is not this run's to overwrite.
            get_logger().warning("the task was taken from this runner: not saving its transcript")
        elif outcome.cli_session_id:
            # Without a result (killed) the totals are unknown: keep the ones the run started from.
            known = outcome.cli_total_cost_usd is not None
            prior = self.prior or Prior()
            try:
                await asyncio.to_thread(
                    transcripts.save,
                    ws,
                    task.session_id,
                    outcome.cli_session_id,
                    total_cost_usd=outcome.cli_total_cost_usd if known else prior.total_cost_usd,
                    model_usage=outcome.cumulative_model_usage if known else prior.model_usage,
                )
            except Exception:
                get_logger().exception("could not save the session transcript")
        return outcome

    async def _restore_session(self, ws: workspace.Workspace) -> None:
        task = self.task
        resume = task.resume_cli_session_id
        if resume is None:
            session = await asyncio.to_thread(sessions.get, task.session_id)
            resume = session.cli_session_id if session else None
        if resume is None:
            return
        prior = await asyncio.to_thread(transcripts.restore, ws, task.session_id, resume)
        if prior is None:
            self.events.emit_output(
                {
                    "kind": "notice",
                    "text": "the previous conversation of this session could "
                    "not be found; this message starts a new one",
                },
                0,
            )
            get_logger().warning("no stored transcript to resume", extra={"cli_session_id": resume})
            return
        self.resumed, self.prior = resume, prior

    async def _book(self, outcome: Outcome) -> bool:
        if outcome.duration_ms == 0:
            outcome.duration_ms = int((time.monotonic() - self.started) * 1000)
        if self.controller.interruption == "lost":
            get_logger().warning("the task was taken from this runner: not booking it")
            return False
        booked = await booking.book(
            self.task, outcome, runner_id=self.opts.runner_id, events=self.events, proxy=self.model_proxy
        )
        if not booked:
            return False  # finished elsewhere
        self.booked_at = time.monotonic()
        get_logger().info(
            "task finished",
            extra={
                "status": outcome.status.value,
                "cost_usd": outcome.cost_usd,
                "error_kind": outcome.error_kind,
                "num_turns": outcome.num_turns,
                "exit_code": outcome.exit_code,
                "json_lines": self.state.json_lines,
                "text_lines": self.state.text_lines,
                "events": self.events.seq - self.task.last_seq,
                "flushes": self.events.flushes,
                "posts": self.events.delivery.posts,
                "heartbeats": self.controller.heartbeats,
                "dropped_lines": self.events.dropped_lines,
            },
        )
        return True


async def run_task(task: Task, agent: AgentSpec, opts: RunOptions) -> Outcome | None:
    """Run a claimed task to its booked end (None: it was not ours to book)."""
    return await TaskRun(task, agent, opts).run()
