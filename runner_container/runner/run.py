"""One run of the CLI for a task this runner has claimed: prepare, spawn, stream, control, book.

Control: a watch loop beats the task's heartbeat every HEARTBEAT_SECONDS; the same write tells it whether a
stop was requested (or whether the task was taken from it). A stop, the deadline (task timeout, or Lambda's
remaining time minus a safety margin) or a shutdown sends SIGINT to the CLI's process group — the CLI then
writes a final result with the cost so far — and SIGKILL after STOP_GRACE_SECONDS. When the CLI has exited,
whatever is left of it is killed too: its process group, and every descendant, even one in a session of its own
(the real CLI runs each Bash command so). The runner is a child subreaper, so such orphans come back to it; they
are recognised by the run's marker in their environment (cli.RUN_MARKER) or by having been seen below the CLI.

Booking: the transcript goes to S3 first (what the next message resumes; not if the task was lost to another
runner), then the terminal event is stored, then `lifecycle.finish` books status, result, cost, usage and
last_seq (the terminal event's) in one conditional transaction (never twice), then the terminal event is pushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_machine import redaction, secrets
from agent_machine.domain import agents as agent_registry
from agent_machine.domain import lifecycle
from agent_machine.models import AgentSpec, EventType, Task, TaskStatus
from agent_machine.observability import get_logger, get_metrics
from agent_machine.settings import get_settings
from agent_machine.store import sessions, tasks
from aws_lambda_powertools.metrics import MetricUnit

from runner import cli, config, model_proxy, publish, sandbox, transcripts, workspace
from runner.delegation import Delegation
from runner.mcp_bridge import Bridge
from runner.output import EventStream
from runner.results import Interruption, Outcome, Prior, RunState, clip, decide, interruption_status
from runner.stream import Parsed, RawLine, parse_line, read_lines, redact_raw

MAX_PLAN_IN_PROMPT = 60 * 1024  # one argv string may not exceed 128 KB (Linux MAX_ARG_STRLEN)

TERMINAL_EVENT = {
    TaskStatus.COMPLETED: EventType.COMPLETED,
    TaskStatus.FAILED: EventType.FAILED,
    TaskStatus.TIMED_OUT: EventType.FAILED,
    TaskStatus.STOPPED: EventType.STOPPED,
}


@dataclass(frozen=True)
class RunOptions:
    runner_id: str
    run_mode: str
    deadline: float  # time.monotonic() by which the CLI is interrupted
    timeout_detail: str = ""


# --------------------------------------------------------------------------------------------------- control

_active: dict[str, Controller] = {}
_active_lock = threading.Lock()
_stopping: Interruption | None = None  # the process is shutting down: every run is interrupted, also later ones


def active_runs() -> dict[str, Controller]:
    with _active_lock:
        return dict(_active)


def stopping() -> Interruption | None:
    """Why this process is shutting down (interrupt_all), or None."""
    return _stopping


def interrupt_all(reason: Interruption) -> int:
    """Interrupt every run of this process (its CLI gets SIGINT, the run is booked as stopped with its cost), and
    every run that starts here from now on, before its CLI (the process is going away: SIGTERM). Safe in a signal
    handler (no lock is taken: it may interrupt the thread holding one). Returns how many runs were interrupted."""
    global _stopping
    _stopping = reason
    runs = list(_active.values())  # a copy made by one C call: atomic under the GIL
    for controller in runs:
        controller.request(reason)
    return len(runs)


class Controller:
    """Heartbeat, stop, deadline and signals for one run, from its claim to the CLI's exit.

    `request` may be called from any thread. Before the CLI is spawned an interruption sets `interrupted` (the
    preparation is cancelled); once it runs, SIGINT goes to its process group, SIGKILL after the grace period.
    """

    def __init__(self, task: Task, opts: RunOptions, events: EventStream) -> None:
        self.task = task
        self.opts = opts
        self.events = events
        self.loop = asyncio.get_running_loop()
        self.proc: asyncio.subprocess.Process | None = None
        self.interruption: Interruption | None = None
        self.interrupted = asyncio.Event()
        self.interrupted_at: float | None = None  # when SIGINT was sent
        self.interruption_requested_at: float | None = None
        self.killed = False
        self.heartbeats = 0
        self.lease_renew_at = time.monotonic()  # the first beat renews it (a takeover takes it there too)
        # What the CLI's environment carries (cli.RUN_MARKER): how what it left behind is recognised.
        self.run_marker = f"{cli.RUN_MARKER}={task.task_id}.{uuid.uuid4().hex[:12]}"
        self.seen_descendants: set[cli.ProcessId] = set()

    def request(self, reason: Interruption) -> None:
        self.loop.call_soon_threadsafe(self.interrupt, reason)

    def attach(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        if self.interruption is not None:
            self.interrupt(self.interruption)

    def interrupt(self, reason: Interruption) -> None:
        if self.interruption is None:
            self.interruption = reason
            self.interruption_requested_at = time.monotonic()
            self.interrupted.set()
            get_logger().info("interrupting the run", extra={"reason": reason, "task_id": self.task.task_id})
        if self.proc is not None and self.proc.returncode is None and self.interrupted_at is None:
            self.interrupted_at = time.monotonic()
            self.signal(signal.SIGINT)

    def signal(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)  # start_new_session: the process group id is the CLI's pid

    def kill_group(self) -> None:
        """SIGKILL the CLI's process group and every other descendant: the real CLI runs each Bash command in a
        session of its own, out of the group's reach (orphans are re-parented to this subreaper runner)."""
        if self.proc is None:
            return
        # Looked up before the group is killed: a killed process no longer shows its environment (the marker).
        left = cli.descendants(self.proc.pid, marker=self.run_marker, known=self.seen_descendants)
        self.signal(signal.SIGKILL)
        if left:
            killed = cli.kill_processes(left)
            if killed:
                get_logger().info("killed what the CLI left behind", extra={"processes": killed})

    def note_descendants(self) -> None:
        """Remember the CLI's descendants while it runs, so they are still found once it has exited."""
        if self.proc is not None and self.proc.returncode is None:
            self.seen_descendants |= cli.descendants(self.proc.pid)

    async def watch(self) -> None:
        """Runs until cancelled (once the CLI has exited): beats, enforces the deadline and the grace period."""
        next_beat = time.monotonic() + config.HEARTBEAT_SECONDS
        while True:
            now = time.monotonic()
            running = self.proc is not None and self.proc.returncode is None
            grace_over = self.interrupted_at is not None and now - self.interrupted_at >= config.STOP_GRACE_SECONDS
            if running and grace_over and not self.killed:
                get_logger().warning("the CLI ignored SIGINT: killing its process group")
                self.killed = True
                await asyncio.to_thread(self.kill_group)
            if now >= self.opts.deadline:
                self.interrupt("timeout")
            if now >= next_beat:
                next_beat = now + config.HEARTBEAT_SECONDS
                await self.beat()
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.note_descendants)
            await asyncio.sleep(min(0.1, max(0.01, next_beat - time.monotonic())))

    async def beat(self) -> None:
        try:
            current = await asyncio.to_thread(
                tasks.heartbeat, self.task.task_id, self.opts.runner_id, self.events.stored_seq
            )
        except Exception as exc:  # a blip must not end the run; the next beat tries again
            get_logger().warning("heartbeat failed", extra={"error": repr(exc)})
            return
        self.heartbeats += 1
        if current is None:
            get_logger().warning("the task is no longer ours (finished or taken over elsewhere)")
            self.interrupt("lost")
            return
        if current.stop_requested:
            self.interrupt("stop")
        if time.monotonic() >= self.lease_renew_at:
            await self.renew_lease()

    async def renew_lease(self) -> None:
        """Keep the session's lease (one running task per session) a few beats ahead of its expiry."""
        try:
            kept = await asyncio.to_thread(
                sessions.take_lease,
                self.task.session_id,
                self.task.task_id,
                self.opts.runner_id,
                seconds=config.SESSION_LEASE_SECONDS,
            )
        except Exception as exc:  # the next beat tries again, well before the lease expires
            get_logger().warning("could not renew the session's lease", extra={"error": repr(exc)})
            return
        self.lease_renew_at = time.monotonic() + config.SESSION_LEASE_RENEW_SECONDS
        if not kept:
            # Only after beats failed for the whole lease: another task of the session may be running now.
            get_logger().error("the session's lease passed to another task while this one ran")


# --------------------------------------------------------------------------------------------------- streaming


def output_payload(parsed: Parsed) -> dict[str, Any] | None:
    """A task.output payload: {"kind", "data"} for JSON lines, {"kind": "text", "text"} for others; lines too big
    for one stored event become a truncated preview."""
    raw = parsed.raw
    if parsed.obj is not None and raw.size <= config.MAX_EVENT_BYTES:
        return {"kind": parsed.kind, "data": parsed.obj}
    if parsed.obj is None and not raw.data.strip():
        return None
    if raw.size <= config.MAX_EVENT_BYTES and parsed.text is not None:
        return {"kind": "text", "text": parsed.text}
    preview = raw.data[: config.PREVIEW_BYTES].decode("utf-8", errors="ignore")
    return {"kind": parsed.kind, "text": preview, "truncated": True, "bytes": raw.size}


async def pump_stdout(stream: asyncio.StreamReader, state: RunState, events: EventStream) -> None:
    # Redacted as read: output, frames, the result and errors are all built from the redacted line.
    redactor = await asyncio.to_thread(redaction.current)
    async for raw in read_lines(stream):
        if redactor.age > redaction.MAX_AGE_SECONDS:
            redactor = await asyncio.to_thread(redaction.current)
        parsed = parse_line(raw, redactor)
        if parsed.line is not None:
            state.feed(parsed.line)
        else:
            state.text_lines += 1
        payload = output_payload(parsed)
        if payload is not None:
            # The line's own (redacted) JSON text goes into the event as is: it is not encoded a second time.
            data_json = parsed.json if "data" in payload else None
            events.emit_output(payload, raw.size, data_json=data_json)
        await events.wait_for_room()


async def pump_stderr(stream: asyncio.StreamReader, tail: deque[str], events: EventStream) -> None:
    redactor = await asyncio.to_thread(redaction.current)
    async for raw in read_lines(stream, max_line=config.STDERR_LINE_BYTES):
        if redactor.age > redaction.MAX_AGE_SECONDS:
            redactor = await asyncio.to_thread(redaction.current)
        text = _decode(redact_raw(raw, redactor))
        if not text.strip():
            continue
        tail.append(text)
        events.emit_output({"kind": "stderr", "text": text}, raw.size)
        await events.wait_for_room()


def _decode(raw: RawLine) -> str:
    text = raw.data.decode("utf-8", errors="replace").rstrip("\r")
    return text + " …" if raw.truncated else text


@dataclass
class Execution:
    exit_code: int | None
    stderr_tail: str


async def execute(inv: cli.Invocation, controller: Controller, state: RunState, events: EventStream) -> Execution:
    """Spawn the CLI and stream it until it exits (and its process group is gone)."""
    proc = await cli.spawn(inv)
    controller.attach(proc)
    assert proc.stdout is not None and proc.stderr is not None
    tail: deque[str] = deque(maxlen=config.STDERR_TAIL_LINES)
    readers = {
        asyncio.create_task(pump_stdout(proc.stdout, state, events)),
        asyncio.create_task(pump_stderr(proc.stderr, tail, events)),
    }
    try:
        code = await exited(proc)
        _done, pending = await asyncio.wait(readers, timeout=config.DRAIN_SECONDS)
        # whatever the run left behind (background commands, MCP servers)
        await asyncio.to_thread(controller.kill_group)
        if pending:
            _done, pending = await asyncio.wait(pending, timeout=1.0)
            for task in pending:
                task.cancel()
        for task in readers:
            if task.done() and not task.cancelled() and task.exception() is not None:
                get_logger().error("reading the CLI's output failed", exc_info=task.exception())
    finally:
        if proc.returncode is None:
            controller.kill_group()
        with contextlib.suppress(TimeoutError):  # pipes held by a process that left the group: do not hang
            await asyncio.wait_for(proc.wait(), 1.0)
    return Execution(code, "\n".join(tail))


async def exited(proc: asyncio.subprocess.Process) -> int:
    """The CLI's exit code as soon as it exits. Not `proc.wait()`: on Python 3.11 that also waits until every
    process holding its stdout/stderr (a background command it started) has closed them."""
    while proc.returncode is None:  # noqa: ASYNC110 - asyncio offers no exit event short of a custom protocol
        await asyncio.sleep(0.02)
    return proc.returncode


def lost_conversation(state: RunState) -> bool:
    """The CLI's answer to a --resume of a conversation it cannot find (claude-cli-protocol.md, Invocation)."""
    result = state.result
    return (
        result is not None
        and result.subtype == "error_during_execution"
        and result.num_turns == 0
        and "No conversation found" in result.error_text()
    )


def without_resume(inv: cli.Invocation) -> cli.Invocation:
    """The same invocation as a fresh conversation (the prompt after `--` is left alone)."""
    end = inv.args.index("--") if "--" in inv.args else len(inv.args)
    args = list(inv.args)
    for i in range(end - 1):
        if args[i] == "--resume":
            del args[i : i + 2]
            break
    return dataclasses.replace(inv, args=args, resume=None)


# --------------------------------------------------------------------------------------------------- the run


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


MAX_CONTEXT_VALUE_CHARS = 300
_LINE_BREAKING = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def one_line(value: object, max_chars: int = MAX_CONTEXT_VALUE_CHARS) -> str:
    """A value from a webhook as one bounded line of the system prompt: control characters and line breaks
    become spaces, so a crafted value cannot start a heading or an instruction of its own."""
    text = " ".join(_LINE_BREAKING.sub(" ", str(value)).split())
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def task_context(task: Task) -> str:
    lines = [
        "## This task on the agent machine",
        f"- task id: {task.task_id} (agent: {task.agent}, source: {task.source.value}"
        + (f" / {one_line(task.source_name)}" if task.source_name else "")
        + ")",
    ]
    if task.parent_task_id:
        lines.append(f"- delegated by task {task.parent_task_id} (depth {task.depth})")
    repo = task.repo
    if repo is not None:
        if repo.full_name:
            lines.append(
                f"- repository: {one_line(repo.full_name)}"
                + (f" at {one_line(repo.ref)}" if repo.ref else "")
                + (" (cloned into the current folder)" if repo.clone_url else "")
            )
        for label, value in (
            ("issue", repo.issue_number),
            ("pull request", repo.pr_number),
            ("issue URL", repo.issue_url),
            ("Jira issue", repo.jira_issue_key),
            ("Sentry issue", repo.sentry_url or repo.sentry_issue_id),
        ):
            if value:
                lines.append(f"- {label}: {one_line(value)}")
    text = "\n".join(lines)
    if task.plan and task.agent != agent_registry.PLANNING and task.plan.strip() not in task.prompt:
        text += "\n\n## The approved plan for this task\n\n" + (clip(task.plan, MAX_PLAN_IN_PROMPT) or "")
    return text


def system_prompt_addition(task: Task, agent: AgentSpec) -> str:
    parts = [agent.instructions.strip()] if agent.instructions.strip() else []
    parts.append(task_context(task))
    return "\n\n".join(parts)


def read_plan(ws: workspace.Workspace, *, written_since: float) -> str | None:
    """A PLAN.md the run wrote: modified since `written_since` (wall clock) and not tracked by git (a cloned
    repository's own PLAN.md is checked out before the CLI starts, but tracked)."""
    for folder in (ws.cwd, ws.agent_dir):
        path = folder / "PLAN.md"
        try:
            if not path.is_file() or path.stat().st_mtime < written_since - 1.0 or tracked_by_git(path):
                continue
            return sandbox.read_owned_text(path, config.MAX_PLAN_BYTES)  # not through a link the CLI made
        except OSError:
            continue
    return None


def tracked_by_git(path: Path) -> bool:
    try:
        done = subprocess.run(
            ["git", "-c", "core.fsmonitor=false", "ls-files", "--error-unmatch", "--", path.name],
            cwd=path.parent,
            capture_output=True,
            timeout=10,
            check=False,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_CONFIG_NOSYSTEM": "1", "LANG": "C.UTF-8"},
            **sandbox.subprocess_options(),  # as the clone's owner: git refuses another user's repository
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def finished_before(state: RunState, requested_at: float | None) -> bool:
    """A successful result was read before the interruption was asked for: the run had finished."""
    result_at = state.result_read_at
    return (
        requested_at is not None
        and result_at is not None
        and result_at <= requested_at
        and state.result is not None
        and state.result.succeeded
    )


class TaskRun:
    """Everything between a claimed task and its booked end."""

    def __init__(self, task: Task, agent: AgentSpec, opts: RunOptions) -> None:
        self.task = task
        self.agent = agent
        self.opts = opts
        self.events = EventStream(task, start_seq=task.last_seq)
        self.controller = Controller(task, opts, self.events)
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
        with _active_lock:
            _active[self.task.task_id] = self.controller
        if _stopping is not None:  # claimed while the process was being shut down: stopped before its CLI
            self.controller.interrupt(_stopping)
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
            self.report_start = asyncio.create_task(asyncio.to_thread(report_back, self.task, started=True))
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
            await self._report_finished(outcome if booked else None)
            return outcome if booked else None
        finally:
            if self.model_proxy is not None:
                self.model_proxy.stop()
            with _active_lock:
                _active.pop(self.task.task_id, None)
            if self.bridge is not None:
                await self.bridge.close()
            await self.events.close()
            if self.ws is not None:
                await asyncio.to_thread(self.ws.cleanup)

    async def _report_finished(self, outcome: Outcome | None) -> None:
        """The sticky comment's last edit, after the start report (it made the comment) has finished."""
        if self.report_start is not None:
            with contextlib.suppress(Exception):
                await self.report_start
        try:
            if outcome is None:
                return  # not ours to book: not ours to publish either
            published: dict[str, str] = {}
            if self.publisher is not None:
                # What the agent committed and did not push is pushed now, before the workspace goes. The pull
                # request shown is only one the runner opened, never a link the agent wrote.
                published = await asyncio.to_thread(
                    self.publisher.finish, completed=outcome.status == TaskStatus.COMPLETED, result=outcome.result
                )
                pr_url = published.get("pr_url")
            else:
                pr_url = find_pull_request(outcome.result) if outcome.result else None
            await asyncio.to_thread(report_back, self.task, started=False, pr_url=pr_url, extra=published)
        finally:
            if self.publisher is not None:
                self.publisher.close()

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
        task = self.task
        if outcome.duration_ms == 0:
            outcome.duration_ms = int((time.monotonic() - self.started) * 1000)
        if self.controller.interruption == "lost":
            get_logger().warning("the task was taken from this runner: not booking it")
            return False
        proxy_cost: float | None = None
        if self.model_proxy is not None:
            proxy_cost = round(self.model_proxy.cost_usd, 10)
            # The proxy's figure, metered at the wire, is booked when it is the larger: a CLI killed before its
            # result, or a tool that called the model with the token, spent what the CLI did not count.
            outcome.cost_usd = max(outcome.cost_usd, proxy_cost)
            if self.model_proxy.meter.refused and outcome.status == TaskStatus.FAILED:
                outcome.error_kind = "budget"  # the proxy refused a request over the task's or the day's cap
        payload = outcome.event_payload()
        if proxy_cost is not None:
            payload["proxy_cost_usd"] = proxy_cost
        if self.events.dropped_lines:
            payload["output_dropped_lines"] = self.events.dropped_lines
        # Stored first, then booked, then pushed: a task read as finished always has its terminal event stored,
        # and a watcher that gets the event finds the task finished. The task's last_seq is that event's.
        terminal = await self.events.emit_terminal(TERMINAL_EVENT[outcome.status], payload)
        extra: dict[str, Any] = {
            "last_seq": terminal.seq,
            "num_turns": outcome.num_turns,
            "duration_ms": outcome.duration_ms,
            "model_usage": {name: usage.model_dump() for name, usage in outcome.model_usage.items()},
            "proxy_cost_usd": proxy_cost,
        }
        if outcome.plan is not None:
            extra["plan"] = outcome.plan
        try:
            booked = await asyncio.to_thread(
                lifecycle.finish,
                task,
                outcome.status,
                runner_id=self.opts.runner_id,
                result=outcome.result,
                error=outcome.error,
                error_kind=outcome.error_kind,
                cost_usd=outcome.cost_usd,
                usage=outcome.usage,
                extra=extra,
                cli_session_id=outcome.cli_session_id,
                cli_total_cost_usd=outcome.cli_total_cost_usd,
            )
        finally:
            self.events.release()
        if not booked:
            get_logger().warning("the task was finished elsewhere: not booking it")
            return False
        self.booked_at = time.monotonic()
        record_metrics(task, outcome)
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


PULL_REQUEST_URL = re.compile(r"https://[^\s/]+/[\w.-]+/[\w.-]+/pull/\d+")


def find_pull_request(text: str) -> str | None:
    found = PULL_REQUEST_URL.search(text)
    return found.group(0) if found else None


def report_back(task: Task, *, started: bool, pr_url: str | None = None, extra: dict[str, str] | None = None) -> None:
    """Tell the task's source (GitHub, Jira, Sentry) where it stands; failures stay on the task's report.
    `pr_url` and `extra` (the runner's publishing: branch, publish_error) are kept in the task's report."""
    from agent_machine.domain import reporting

    try:
        current = tasks.get(task.task_id) or task  # the stored report (comment id) and the booked result
        added = {**(extra or {}), **({"pr_url": pr_url} if pr_url else {})}
        if added:
            current = current.model_copy(update={"report": {**current.report, **added}})
        report = reporting.report_started(current) if started else reporting.report_finished(current)
        if report != task.report or added:
            tasks.set_fields(task.task_id, report=report)
    except Exception:
        get_logger().exception("could not report back to the task's source")


async def run_task(task: Task, agent: AgentSpec, opts: RunOptions) -> Outcome | None:
    """Run a claimed task to its booked end (None: it was not ours to book)."""
    return await TaskRun(task, agent, opts).run()


def record_metrics(task: Task, outcome: Outcome) -> None:
    metrics = get_metrics()
    name = {
        TaskStatus.COMPLETED: "TasksCompleted",
        TaskStatus.STOPPED: "TasksStopped",
        TaskStatus.TIMED_OUT: "TasksTimedOut",
    }.get(outcome.status, "TasksFailed")
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="TaskCostUsd", unit=MetricUnit.NoUnit, value=outcome.cost_usd)
    metrics.add_metric(name="TaskDuration", unit=MetricUnit.Milliseconds, value=outcome.duration_ms)
