"""The event pipeline: numbering, coalescing into few deliveries, bounded memory and output, ordering."""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

import pytest
from agent_machine.models import EventType, Task, TaskEvent
from runner import config
from runner.machine_mcp import Server
from runner.orchestrator import run_coroutine
from runner.output import Delivery, EventStream


class Recorder(Delivery):
    """A Delivery that records batches instead of calling AWS (slow on purpose, like a real write)."""

    def __init__(self, task: Task, delay: float = 0.01) -> None:
        super().__init__(task, pusher=None)  # type: ignore[arg-type]
        self.batches: list[list[TaskEvent]] = []
        self.pushed: list[list[TaskEvent]] = []
        self.delay = delay

    def store(self, events: list[TaskEvent], size_hint: int | None = None) -> list[str]:
        time.sleep(self.delay)
        self.batches.append(events)
        self.stored_seq = events[-1].seq
        return [e.model_dump_json() for e in events]

    def refresh_subscribers(self, *, ahead: float) -> None:
        pass

    def push(self, events: list[TaskEvent], texts: list[str] | None = None, *, fresh: bool = False) -> None:
        assert texts == [e.model_dump_json() for e in events]
        time.sleep(self.delay)
        self.pushed.append(events)


def run_stream(fn: Any, *, start_seq: int = 0, delay: float = 0.01) -> Recorder:
    task = Task(session_id="s", prompt="p")
    recorder = Recorder(task, delay)

    async def go() -> None:
        stream = EventStream(task, start_seq=start_seq, delivery=recorder)
        await fn(stream)
        await stream.close()

    run_coroutine(go())  # not asyncio.run: it leaves the thread without an event loop
    return recorder


def test_a_burst_becomes_a_few_ordered_batches() -> None:
    async def burst(stream: EventStream) -> None:
        stream.emit(EventType.STARTED, {})
        for i in range(2000):
            stream.emit_output({"kind": "text", "text": f"line {i}"}, 10)
            if i % 100 == 0:
                await asyncio.sleep(0)
        stream.emit(EventType.COMPLETED, {})

    recorder = run_stream(burst, start_seq=7)
    seqs = [e.seq for batch in recorder.batches for e in batch]
    assert seqs == list(range(8, 8 + 2002))
    assert recorder.pushed == recorder.batches  # every batch pushed, in order, after it was stored
    assert len(recorder.batches) <= 2002 // config.FLUSH_MAX_EVENTS + 3


def test_a_trickle_is_flushed_within_the_interval() -> None:
    latencies: list[float] = []

    async def trickle(stream: EventStream) -> None:
        for _ in range(5):
            sent = time.monotonic()
            stream.emit_output({"kind": "text", "text": "x"}, 1)
            await stream.flush()
            latencies.append(time.monotonic() - sent)
            await asyncio.sleep(0.12)

    recorder = run_stream(trickle)
    assert len(recorder.batches) == 5
    assert max(latencies) < config.FLUSH_INTERVAL_SECONDS + 0.2


def test_output_beyond_the_cap_is_counted_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "MAX_OUTPUT_BYTES", 1000)
    counts: dict[str, int] = {}

    async def flood(stream: EventStream) -> None:
        for _ in range(50):
            stream.emit_output({"kind": "text", "text": "y" * 100}, 100)
        counts["dropped"] = stream.dropped_lines

    recorder = run_stream(flood, delay=0)
    events = [e for batch in recorder.batches for e in batch]
    assert len(events) == 11 and events[-1].payload["kind"] == "notice"
    assert counts["dropped"] == 40


def test_the_reader_waits_when_too_much_is_pending(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "MAX_PENDING_BYTES", 1000)
    waited: list[bool] = []

    async def fast_writer(stream: EventStream) -> None:
        for _ in range(20):
            stream.emit_output({"kind": "text", "text": "z"}, 200)
            blocked = not stream._room.is_set()
            await stream.wait_for_room()
            waited.append(blocked)

    run_stream(fast_writer, delay=0.02)
    assert any(waited)


def test_mcp_server_reports_an_unreachable_runner_as_a_tool_error() -> None:
    out = io.StringIO()
    server = Server(out, "/nonexistent/bridge.sock", "token")
    thread = server.handle(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "get_task", "arguments": {"task_id": "x"}},
        }
    )
    assert thread is not None
    thread.join(5)
    reply = json.loads(out.getvalue())
    assert reply["id"] == 1 and reply["result"]["isError"] is True
    assert "the runner is not reachable" in reply["result"]["content"][0]["text"]
    out.truncate(0)
    out.seek(0)
    assert server.handle({"jsonrpc": "2.0", "method": "notifications/initialized"}) is None
    assert out.getvalue() == ""
    server.handle({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "rm_rf"}})
    assert json.loads(out.getvalue())["error"]["code"] == -32602
