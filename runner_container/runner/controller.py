"""Control of the runs of this process: heartbeat, stop, deadline, lease renewal and signals for each run.

A watch loop beats the task's heartbeat every HEARTBEAT_SECONDS; the same write tells it whether a stop was
requested (or whether the task was taken from it). A stop, the deadline (task timeout, or Lambda's remaining time
minus a safety margin) or a shutdown sends SIGINT to the CLI's process group — the CLI then writes a final result
with the cost so far — and SIGKILL after STOP_GRACE_SECONDS. When the CLI has exited, whatever is left of it is
killed too: its process group, and every descendant, even one in a session of its own (the real CLI runs each Bash
command so). The runner is a child subreaper, so such orphans come back to it; they are recognised by the run's
marker in their environment (cli.RUN_MARKER) or by having been seen below the CLI.

The runs of the process are registered here (`register`/`unregister`), so a shutdown (`interrupt_all`, from a
signal handler) reaches every one of them, and every run that starts after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
import uuid

from agent_machine.models import Task
from agent_machine.observability import get_logger
from agent_machine.store import sessions, tasks

from runner import cli, config
from runner.output import EventStream
from runner.results import Interruption

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


def register(controller: Controller) -> None:
    """A run of this process from its claim on: reached by interrupt_all. One claimed while the process was being
    shut down is interrupted at once (stopped before its CLI)."""
    with _active_lock:
        _active[controller.task.task_id] = controller
    if _stopping is not None:
        controller.interrupt(_stopping)


def unregister(controller: Controller) -> None:
    with _active_lock:
        _active.pop(controller.task.task_id, None)


class Controller:
    """Heartbeat, stop, deadline and signals for one run, from its claim to the CLI's exit.

    `request` may be called from any thread. Before the CLI is spawned an interruption sets `interrupted` (the
    preparation is cancelled); once it runs, SIGINT goes to its process group, SIGKILL after the grace period.
    """

    def __init__(self, task: Task, events: EventStream, *, runner_id: str, deadline: float) -> None:
        self.task = task
        self.runner_id = runner_id
        self.deadline = deadline  # time.monotonic() by which the CLI is interrupted
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
            if now >= self.deadline:
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
                tasks.heartbeat, self.task.task_id, self.runner_id, self.events.stored_seq
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
                self.runner_id,
                seconds=config.SESSION_LEASE_SECONDS,
            )
        except Exception as exc:  # the next beat tries again, well before the lease expires
            get_logger().warning("could not renew the session's lease", extra={"error": repr(exc)})
            return
        self.lease_renew_at = time.monotonic() + config.SESSION_LEASE_RENEW_SECONDS
        if not kept:
            # Only after beats failed for the whole lease: another task of the session may be running now.
            get_logger().error("the session's lease passed to another task while this one ran")
