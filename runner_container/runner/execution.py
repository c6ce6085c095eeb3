"""The CLI as a running process: spawn it, pump its stdout and stderr into the task's events until it exits, and
read what the run's state says about how it ended (a lost conversation, a result read before an interruption).

stdout is read line by line (runner.stream: bounded lines, redacted before anything parses them); each line feeds
the run's state (runner.results.RunState) and becomes a task.output event. stderr's lines are events too, and its
last lines are kept for the error of a failed run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import deque
from dataclasses import dataclass
from typing import Any

from agent_machine import redaction
from agent_machine.observability import get_logger

from runner import cli, config
from runner.controller import Controller
from runner.output import EventStream
from runner.results import RunState
from runner.stream import Parsed, RawLine, parse_line, read_lines, redact_raw


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
