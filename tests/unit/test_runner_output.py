"""The event pipeline: numbering, coalescing into few deliveries, bounded memory and output, ordering."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from typing import Any

import pytest
from agent_machine import redaction
from agent_machine.domain.publishing import topics_for
from agent_machine.models import EventType, Task, TaskEvent
from agent_machine.push import Pusher
from agent_machine.redaction import MARK, Redactor
from agent_machine.store import connections
from runner import config
from runner.execution import pump_stdout
from runner.machine_mcp import Server
from runner.orchestrator import run_coroutine
from runner.output import Clock, Delivery, EventStream, encode_event
from runner.results import RunState


class Recorder(Delivery):
    """A Delivery that records batches instead of calling AWS (slow on purpose, like a real write). `gate`, when
    given, holds every store until it is set (a store that takes as long as the test wants); `push_gate` the
    same for every push."""

    def __init__(
        self,
        task: Task,
        delay: float = 0.01,
        gate: threading.Event | None = None,
        push_gate: threading.Event | None = None,
    ) -> None:
        super().__init__(task, pusher=None)  # type: ignore[arg-type]
        self.batches: list[list[TaskEvent]] = []
        self.pushed: list[list[TaskEvent]] = []
        self.texts: list[str] = []
        self.delay = delay
        self.gate = gate
        self.push_gate = push_gate
        self.storing = threading.Event()  # set once a store has started
        self.pushing = threading.Event()  # set once a push has started
        self.order: list[tuple[str, int]] = []  # ("store" | "push", first seq of the batch), as they finished

    def store(self, events: list[TaskEvent], size_hint: int | None = None, texts: list[str] | None = None) -> list[str]:
        assert texts is not None and len(texts) == len(events)  # encoded once, when emitted
        self.storing.set()
        if self.gate is not None:
            assert self.gate.wait(60)
        time.sleep(self.delay)
        self.batches.append(events)
        self.texts.extend(texts)
        self.stored_seq = events[-1].seq
        self.order.append(("store", events[0].seq))
        return texts

    def refresh_subscribers(self, *, ahead: float) -> None:
        pass

    def push(self, events: list[TaskEvent], texts: list[str] | None = None, *, fresh: bool = False) -> None:
        assert texts is not None and [json.loads(t) for t in texts] == [json.loads(encode_event(e)) for e in events]
        self.pushing.set()
        if self.push_gate is not None:
            assert self.push_gate.wait(60)
        time.sleep(self.delay)
        self.pushed.append(events)
        self.order.append(("push", events[0].seq))


def run_stream(
    fn: Any,
    *,
    start_seq: int = 0,
    delay: float = 0.01,
    gate: threading.Event | None = None,
    push_gate: threading.Event | None = None,
    task: Task | None = None,
) -> Recorder:
    task = task or Task(session_id="s", prompt="p")
    recorder = Recorder(task, delay, gate, push_gate)

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
    # Every event stored and pushed once, in order (the store may write several pushes' batches at once).
    assert [e.seq for batch in recorder.batches for e in batch] == list(range(8, 8 + 2002))
    assert [e.seq for batch in recorder.pushed for e in batch] == list(range(8, 8 + 2002))
    assert len(recorder.pushed) <= 2002 // config.FLUSH_MAX_EVENTS + 3
    assert len(recorder.batches) <= len(recorder.pushed)
    assert max(len(batch) for batch in recorder.pushed) <= config.FLUSH_MAX_EVENTS


async def wait_for(event: threading.Event) -> None:
    """Wait (without blocking the loop) until a worker thread sets `event`."""
    assert await asyncio.to_thread(event.wait, 60)


def test_output_emitted_during_a_push_goes_out_as_one_batch_after_it() -> None:
    """Coalescing: while a push is in flight, what the CLI prints waits for it and then goes in one push."""
    push_gate = threading.Event()

    async def during_a_slow_push(stream: EventStream) -> None:
        stream.emit_output({"kind": "text", "text": "first"}, 5)  # after an idle spell: taken at once
        await wait_for(recorder_of(stream).pushing)
        for i in range(50):
            stream.emit_output({"kind": "text", "text": f"line {i}"}, 6)
        push_gate.set()

    recorder = run_stream(during_a_slow_push, push_gate=push_gate)
    assert [len(batch) for batch in recorder.pushed] == [1, 50]
    assert [len(batch) for batch in recorder.batches] == [1, 50]


def test_what_is_taken_during_a_slow_store_is_pushed_and_then_stored_in_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A slow write paces neither the pushes nor its own calls: the batches pushed meanwhile go in one write."""
    monkeypatch.setattr(config, "FLUSH_MAX_EVENTS", 20)
    gate = threading.Event()

    async def slow_store(stream: EventStream) -> None:
        recorder = recorder_of(stream)
        stream.emit_output({"kind": "text", "text": "first"}, 5)
        await wait_for(recorder.storing)
        try:
            for i in range(60):
                stream.emit_output({"kind": "text", "text": f"line {i}"}, 6)
            async with asyncio.timeout(30):
                while len(recorder.pushed) < 4:  # all pushed while the first write is still held
                    await asyncio.sleep(0.001)
        finally:
            gate.set()

    recorder = run_stream(slow_store, gate=gate, delay=0)
    assert [len(batch) for batch in recorder.pushed] == [1, 20, 20, 20]
    assert [len(batch) for batch in recorder.batches] == [1, 60]
    assert [e.seq for batch in recorder.batches for e in batch] == list(range(1, 62))


def test_a_batch_is_pushed_without_waiting_for_its_store() -> None:
    """The stored copy is for replay: a live watcher's frame does not wait for the write of the same batch."""
    gate = threading.Event()
    pushed_while_storing: list[bool] = []

    async def slow_store(stream: EventStream) -> None:
        recorder = recorder_of(stream)
        stream.emit_output({"kind": "text", "text": "first"}, 5)
        await wait_for(recorder.storing)
        try:
            async with asyncio.timeout(30):
                while not recorder.pushed:  # the store is held by the gate until the push is seen
                    await asyncio.sleep(0.001)
            pushed_while_storing.append(not recorder.batches)
        finally:
            gate.set()

    recorder = run_stream(slow_store, gate=gate)
    assert pushed_while_storing == [True]
    assert recorder.batches == recorder.pushed and recorder.order[0] == ("push", 1)


def recorder_of(stream: EventStream) -> Recorder:
    assert isinstance(stream.delivery, Recorder)
    return stream.delivery


def test_a_backlog_goes_out_in_capped_batches_without_waiting_out_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Full batches are taken as soon as the push stage is free: with a window far longer than the test's
    timeout, the backlog still goes out (the window only paces batches that are not full)."""
    monkeypatch.setattr(config, "FLUSH_INTERVAL_SECONDS", 3600.0)
    monkeypatch.setattr(config, "FLUSH_MAX_EVENTS", 20)
    gate = threading.Event()

    async def backlog(stream: EventStream) -> None:
        stream.emit_output({"kind": "text", "text": "first"}, 5)
        await wait_for(recorder_of(stream).storing)
        for i in range(60):
            stream.emit_output({"kind": "text", "text": f"line {i}"}, 6)
        gate.set()
        await asyncio.wait_for(stream.flush(), 60)  # the 60 backlog events, in three full batches

    recorder = run_stream(backlog, gate=gate, delay=0)
    assert [len(batch) for batch in recorder.pushed] == [1, 20, 20, 20]
    assert [e.seq for batch in recorder.batches for e in batch] == list(range(1, 62))


def test_a_batch_is_capped_by_bytes_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "FLUSH_INTERVAL_SECONDS", 3600.0)
    monkeypatch.setattr(config, "FLUSH_MAX_BYTES", 10_000)
    gate = threading.Event()

    async def big_lines(stream: EventStream) -> None:
        stream.emit_output({"kind": "text", "text": "first"}, 5)
        await wait_for(recorder_of(stream).storing)
        for _ in range(7):
            stream.emit_output({"kind": "text", "text": "b" * 3000}, 3000)  # 3,256 counted each
        gate.set()
        await asyncio.wait_for(stream.flush(), 60)

    recorder = run_stream(big_lines, gate=gate, delay=0)
    assert [len(batch) for batch in recorder.pushed] == [1, 3, 3, 1]


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


def test_the_reader_waits_while_too_much_is_not_stored_and_resumes_once_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Memory stays bounded by what is not stored yet (taken and pushed or not): a write that hangs stops the
    reader (the CLI then waits on its pipe), not the pushes."""
    monkeypatch.setattr(config, "MAX_PENDING_BYTES", 2000)
    gate = threading.Event()
    seen: dict[str, bool] = {}

    async def fast_writer(stream: EventStream) -> None:
        recorder = recorder_of(stream)
        stream.emit_output({"kind": "text", "text": "first"}, 5)
        await wait_for(recorder.storing)  # the store stage is held
        try:
            for _ in range(4):
                stream.emit_output({"kind": "text", "text": "z"}, 300)  # 556 counted each: 2,224 > 2,000
            seen["blocked"] = not stream._room.is_set()
            waiting = asyncio.create_task(stream.wait_for_room())
            async with asyncio.timeout(30):
                while sum(len(batch) for batch in recorder.pushed) < 5:  # taken and pushed, not stored
                    await asyncio.sleep(0.001)
            seen["waiting"] = not waiting.done()
        finally:
            gate.set()  # the write ends: there is room again
        await asyncio.wait_for(waiting, 60)
        seen["resumed"] = stream._room.is_set()

    run_stream(fast_writer, gate=gate, delay=0)
    assert seen == {"blocked": True, "waiting": True, "resumed": True}


def test_the_push_and_store_threads_look_the_subscribers_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both threads find the list missing (or expiring) at once: one Query, whose answer both use."""
    looked_up: list[list[str]] = []
    inside = threading.Event()
    proceed = threading.Event()

    def slow_lookup(topics: list[str]) -> list[str]:
        looked_up.append(topics)
        inside.set()
        assert proceed.wait(60)
        return ["c1"]

    monkeypatch.setattr(connections, "subscribers", slow_lookup)
    task = Task(session_id="s", prompt="p")
    delivery = Delivery(task, pusher=Pusher(endpoint_url="http://127.0.0.1:9"))
    found: list[frozenset[str]] = []
    refresher = threading.Thread(target=delivery.refresh_subscribers, kwargs={"ahead": 0.04})
    refresher.start()
    assert inside.wait(60)  # the store thread's lookup is in flight
    pusher = threading.Thread(target=lambda: found.append(delivery.subscribers(topics_for(task))))
    pusher.start()
    proceed.set()
    refresher.join(60)
    pusher.join(60)
    assert found == [frozenset({"c1"})]
    assert looked_up == [topics_for(task)]


def test_event_timestamps_are_formatted_once_a_millisecond() -> None:
    now = [1_800_000_000.0001]
    clock = Clock(lambda: now[0])
    first = clock.iso()
    assert first == "2027-01-15T08:00:00.000100Z"
    now[0] += 0.0005
    assert clock.iso() == first  # the same millisecond: the same text
    now[0] += 0.0006
    assert clock.iso() == "2027-01-15T08:00:00.001200Z"
    now[0] -= 5  # the wall clock stepped back
    assert clock.iso() == "2027-01-15T07:59:55.001200Z"


# --------------------------------------------------------------------------------------- events of CLI lines

TOKEN = "ghp_Zq8wX2mN4bV6cR1tY3uI5oP7aS9dF0gH2jK4"


def assistant(text: str) -> dict[str, Any]:
    return {
        "type": "assistant",
        "session_id": "s1",
        "parent_tool_use_id": None,
        "message": {"id": "m1", "role": "assistant", "content": [{"type": "text", "text": text}]},
    }


# (name, the line as the CLI prints it)
LINES: list[tuple[str, bytes]] = [
    ("compact ASCII", json.dumps(assistant("plain text"), separators=(",", ":")).encode()),
    ("raw UTF-8", json.dumps(assistant("héllo 世界 🎉"), ensure_ascii=False).encode()),
    ("\\u escapes", json.dumps(assistant("héllo 世界 🎉")).encode()),  # 🎉 as a surrogate pair of escapes
    ("quotes, backslashes, controls", json.dumps(assistant('say "hi" \\ C:\\path\n\ttab \x01 \x7f')).encode()),
    (
        "escaped slash and line separators",
        b'{"type":"user","message":{"content":"a\\/b \\u2028 \\u2029 \xe2\x80\xa8"}}',
    ),
    ("a lone surrogate", b'{"type":"user","message":{"content":"half \\ud83d of it"},"session_id":"s1"}'),
    (
        "numbers and literals",
        b'{"type":"result","subtype":"success","total_cost_usd":1.5e-7,"n":12345678901234567890,'
        b'"z":-0.0,"e":1E+2,"ok":true,"no":false,"x":null,"duration_ms":5}',
    ),
    ("nesting, empty values", b'{"type":"system","subtype":"init","a":[[],{},"",[{"b":[1,[2,{"c":{}}]]}]]}'),
    ("spaces around", b'  {"type" : "rate_limit_event" , "info" : {"s" : "allowed"}}  \r'),
    ("an unknown type with odd fields", b'{"type":"x-new","session_id":5,"uuid":["u"]}'),
]


def not_json(name: str) -> Any:
    raise AssertionError(f"{name} is not JSON")


def pump(lines: list[bytes], monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """The lines through the runner's stdout pump (read, redact, parse, emit) into a recording delivery."""
    monkeypatch.setattr(redaction, "current", lambda: Redactor([TOKEN]))

    async def go(stream: EventStream) -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"".join(line + b"\n" for line in lines))
        reader.feed_eof()
        await pump_stdout(reader, RunState(), stream)

    return run_stream(go, delay=0)


@pytest.mark.parametrize(("name", "line"), LINES, ids=[name for name, _ in LINES])
def test_a_cli_lines_event_json_is_the_models_json(name: str, line: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """The event of a JSON line carries the line's own text; it means what the model's encoding means."""
    recorder = pump([line], monkeypatch)
    [event] = [e for batch in recorder.batches for e in batch]
    [text] = recorder.texts
    assert event.payload["data"] == json.loads(line)
    assert json.loads(text) == json.loads(encode_event(event))
    assert json.loads(text)["payload"]["data"] == json.loads(line)
    text.encode()  # UTF-8 as it is (a lone surrogate stays a \u escape)
    json.loads(text, parse_constant=not_json)  # standard JSON


def test_a_compact_line_gives_byte_for_byte_the_models_json(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = pump([LINES[0][1]], monkeypatch)
    [event] = recorder.batches[0]
    assert recorder.texts == [event.model_dump_json()]


def test_a_lone_surrogate_does_not_break_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model cannot write it as UTF-8; the line's text (and encode_event's fallback) keep it as an escape."""
    recorder = pump([LINES[5][1], LINES[0][1]], monkeypatch)
    [half, plain] = [e for batch in recorder.batches for e in batch]
    assert half.payload["data"]["message"]["content"] == "half \ud83d of it"
    assert "\\ud83d" in recorder.texts[0] and "\\ud83d" in encode_event(half)
    assert recorder.texts[1] == plain.model_dump_json()


def test_nan_and_infinity_are_not_passed_on_verbatim(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = pump([b'{"type":"x","v":NaN,"w":[-Infinity]}'], monkeypatch)
    [text] = recorder.texts
    assert json.loads(text, parse_constant=not_json)["payload"]["data"] == {"type": "x", "v": None, "w": [None]}


def test_a_secret_in_a_line_never_reaches_the_events_json(monkeypatch: pytest.MonkeyPatch) -> None:
    escaped = "".join(f"\\u{ord(c):04x}" for c in TOKEN[:8]) + TOKEN[8:]
    lines = [
        json.dumps(assistant(f"the key is {TOKEN}")).encode(),
        b'{"type":"user","message":{"content":"key ' + escaped.encode() + b'"}}',
        json.dumps({"type": "result", "subtype": "success", "result": f"{TOKEN}"}).encode(),
    ]
    recorder = pump(lines, monkeypatch)
    assert len(recorder.texts) == 3
    for text in recorder.texts:
        decoded = json.dumps(json.loads(text), ensure_ascii=False)
        assert TOKEN not in text and TOKEN not in decoded and MARK in decoded


def test_text_lines_and_oversized_lines_are_encoded_by_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "MAX_EVENT_BYTES", 100)
    big = json.dumps(assistant("x" * 200)).encode()
    recorder = pump([b"npm WARN something", big], monkeypatch)
    events = [e for batch in recorder.batches for e in batch]
    assert [e.payload["kind"] for e in events] == ["text", "assistant"]
    assert events[1].payload["truncated"] is True and "data" not in events[1].payload
    assert recorder.texts == [e.model_dump_json() for e in events]


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
