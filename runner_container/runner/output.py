"""A task's events: numbered, coalesced, stored for replay and pushed to the WebSocket clients subscribed.

A chatty CLI must not become thousands of API calls: after an idle spell the first event goes out at once (a
chat's first words are not held back); while output keeps coming, flushes are at most one per
FLUSH_INTERVAL_SECONDS (sooner when FLUSH_MAX_EVENTS / FLUSH_MAX_BYTES are waiting, and never more than those in
one flush). A flush is one frame (or a few, each under 128 KB) per subscribed connection; the output is written
in one PutItem per chunk (`store.output.put_chunk`), a write taking everything flushed since the previous one.

Each event is encoded once, when emitted: a CLI line's event carries the line's own JSON text (read, redacted,
parsed: stream.Parsed.json) inside its envelope (OutputEnvelope), other events are encoded by the model. The
store and every push use that text.

Two stages, each in its own worker thread. The push stage takes a batch when it is due and pushes it; the next
batch is taken once that push is done. The store stage writes, in order, everything taken since its last write
(the copy a replay reads), beside the pushes: a line's frame never waits for a PutItem, and a slow write
makes fewer, bigger writes instead of slowing the pushes. (A store that fails is logged and the batch is pushed
anyway, as before; a reconnecting client holding more than was stored keeps what it has.) The terminal event is
the exception: stored before the task is booked, pushed only after. Who gets what (topics, fan-out) is
`agent_machine.domain.publishing.publish`, given this module's cached subscriber lookup: the list is cached
for at most SUBSCRIBER_CACHE_SECONDS and read only when there is something to push.
Connections that answer 410 are dropped (push.Pusher). Reading the CLI never waits on AWS, unless
MAX_PENDING_BYTES are waiting (not taken yet, or not stored yet: then the CLI's pipe fills and it waits: memory
stays bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent_machine.domain import publishing
from agent_machine.domain.publishing import topics_for
from agent_machine.models import EventType, Task, TaskEvent, iso
from agent_machine.observability import get_logger
from agent_machine.push import Pusher
from agent_machine.store import connections, output
from pydantic_core import PydanticSerializationError

from runner import config

# Below this many bytes (the lines' sizes, with room for the event envelopes) a flush is one item: no need to
# serialise it twice to find out how to split it.
_ONE_CHUNK_BYTES = output.MAX_CHUNK_BYTES // 2


def encode_event(event: TaskEvent) -> str:
    """The event's JSON. A payload string holding a lone surrogate (a `\\ud83d` escape in a CLI line) cannot be
    UTF-8: it is written as a JSON escape instead (the same value)."""
    try:
        return event.model_dump_json()
    except PydanticSerializationError:
        return json.dumps(event.model_dump(mode="json"), separators=(",", ":"))


class OutputEnvelope:
    """A task.output event's JSON built around a payload's `data` given as JSON text (a CLI line, as read and
    redacted): the line is not encoded again. The result is the JSON `TaskEvent.model_dump_json` writes for the
    same event (same fields, in the same order, the same values)."""

    def __init__(self, task: Task) -> None:
        self._head = (
            '{"type":'
            + json.dumps(EventType.OUTPUT.value)
            + ',"task_id":'
            + json.dumps(task.task_id, ensure_ascii=False)
            + ',"session_id":'
            + json.dumps(task.session_id, ensure_ascii=False)
            + ',"seq":'
        )
        self._kinds: dict[str, str] = {}

    def text(self, seq: int, ts: str, kind: str, data_json: str) -> str:
        kind_json = self._kinds.get(kind)
        if kind_json is None:
            kind_json = self._kinds[kind] = json.dumps(kind, ensure_ascii=False)
        return f'{self._head}{seq},"ts":"{ts}","payload":{{"kind":{kind_json},"data":{data_json}}}}}'


class Clock:
    """Event timestamps (ISO-8601, UTC), formatted at most once a millisecond: a burst's lines share them."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self._at = -1.0
        self._text = ""

    def iso(self) -> str:
        now = self._now()
        if not 0 <= now - self._at < 0.001:
            self._at = now
            self._text = iso(datetime.fromtimestamp(now, UTC))
        return self._text


@dataclass
class Delivery:
    """Stores and pushes batches of one task's events (blocking calls; `store` and `push` run in two threads at
    once, each called in order)."""

    task: Task
    pusher: Pusher = field(default_factory=Pusher)
    clock: Callable[[], float] = time.monotonic
    _cache: dict[str, tuple[float, frozenset[str]]] = field(default_factory=dict)
    # The push and store threads may both find the list expiring: one looks it up, the other uses its answer.
    _lookup: threading.Lock = field(default_factory=threading.Lock)
    stored_seq: int = 0
    posts: int = 0
    failures: int = 0

    def _expires_within(self, key: str, ahead: float) -> bool:
        cached = self._cache.get(key)
        return cached is None or self.clock() - cached[0] > config.SUBSCRIBER_CACHE_SECONDS - ahead

    def _look_up(self, topics: Sequence[str], key: str) -> None:
        self._cache[key] = (self.clock(), frozenset(connections.subscribers(list(topics))))

    def subscribers(self, topics: Sequence[str], *, fresh: bool = False) -> frozenset[str]:
        key = ",".join(topics)
        if fresh or self._expires_within(key, 0.0):
            with self._lookup:
                if fresh or self._expires_within(key, 0.0):
                    self._look_up(topics, key)
        return self._cache[key][1] - self.pusher.gone

    def refresh_subscribers(self, *, ahead: float) -> None:
        """Re-read the watchers now if the cached list expires within `ahead` seconds (run beside a push, so the
        next push does not wait for the lookup)."""
        if not self.pusher.endpoint_url:
            return
        topics = topics_for(self.task)
        key = ",".join(topics)
        if self._expires_within(key, ahead):
            with self._lookup:
                if self._expires_within(key, ahead):
                    try:
                        self._look_up(topics, key)
                    except Exception:
                        get_logger().exception("could not look up subscribers")

    def deliver(self, events: list[TaskEvent], size_hint: int | None = None) -> None:
        """Store, then push (both stages at once)."""
        self.push(events, self.store(events, size_hint))

    def store(self, events: list[TaskEvent], size_hint: int | None = None, texts: list[str] | None = None) -> list[str]:
        """Store a batch; returns the events' JSON (each event is encoded once, for the store and every push;
        `texts` when the caller has encoded them already)."""
        if texts is None:
            texts = [encode_event(e) for e in events]
        if not events:
            return texts
        try:
            if size_hint is not None and size_hint < _ONE_CHUNK_BYTES:
                written = output.put_chunk(self.task.task_id, events, texts)
            else:
                written = all(
                    [output.put_chunk(self.task.task_id, c, t) for c, t in output.chunk_events(events, texts)]
                )
            if not written:  # seqs already taken: the task went to another runner (or a retry had landed)
                get_logger().warning("task output already stored at these seqs", extra={"first_seq": events[0].seq})
            self.stored_seq = events[-1].seq
        except Exception:
            self.failures += 1
            get_logger().exception("could not store task output", extra={"first_seq": events[0].seq})
        return texts

    def push(self, events: list[TaskEvent], texts: list[str] | None = None, *, fresh: bool = False) -> None:
        """`fresh`: look the subscribers up now, not from the cache (the last push: whoever subscribed in the
        last second gets the end too)."""
        sent = publishing.publish(
            self.task,
            events,
            texts=texts,
            pusher=self.pusher,
            lookup=lambda topics: self.subscribers(topics, fresh=fresh),
        )
        self.posts += sent.posts
        self.failures += sent.failures


class EventStream:
    """The per-run event pipeline: `emit` numbers events; the push stage coalesces them into batches and pushes
    them, the store stage writes them beside it; each in order."""

    def __init__(self, task: Task, *, start_seq: int, delivery: Delivery | None = None) -> None:
        self.task = task
        self.delivery = delivery or Delivery(task)
        self.delivery.stored_seq = start_seq
        self.seq = start_seq
        self.output_bytes = 0
        self.dropped_lines = 0
        self.flushes = 0
        self.first_emit_at: dict[int, float] = {}  # seq -> monotonic time (benchmarks only; off by default)
        self.track_latency = False
        self.handled_seq = start_seq  # pushed, or given up on (a failed write is logged, not retried forever)
        self.store_handled_seq = start_seq  # through the store stage (stored, or given up on)
        self._held_seq: int | None = None  # the terminal event: pushed only once released (booked)
        self._released = asyncio.Event()
        self._store_progress = asyncio.Event()  # set after each batch through the store stage
        self._clock = Clock()
        self._envelope = OutputEnvelope(task)
        # Emitted, not yet taken by the flusher: the events, their JSON, their sizes (the line's bytes + room for
        # the envelope).
        self._pending: list[TaskEvent] = []
        self._pending_texts: list[str] = []
        self._pending_sizes: list[int] = []
        self._pending_bytes = 0
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False
        # Taken and pushed (or being pushed), not yet stored: the store stage writes them all at its next turn.
        self._to_store: list[tuple[list[TaskEvent], list[str], int]] = []
        self._unstored_bytes = 0
        self._store_wake = asyncio.Event()
        self._store_closed = False
        self._push_task = asyncio.create_task(self._flusher(), name=f"push-{task.task_id}")
        self._store_task = asyncio.create_task(self._storer(), name=f"store-{task.task_id}")

    @property
    def stored_seq(self) -> int:
        return self.delivery.stored_seq

    def emit(
        self, type_: EventType, payload: dict[str, Any], *, size: int | None = None, data_json: str | None = None
    ) -> TaskEvent:
        """Number an event and queue it. `data_json`: a task.output payload's `data` as JSON text (the parsed
        line's own text), put in the event's JSON as is."""
        self.seq += 1
        ts = self._clock.iso()
        # Built without validation: thousands a second under a burst, and the fields are already typed (the
        # payload is parsed JSON).
        event = TaskEvent.model_construct(
            type=type_, task_id=self.task.task_id, session_id=self.task.session_id, seq=self.seq, ts=ts, payload=payload
        )
        if data_json is not None and type_ is EventType.OUTPUT:
            text = self._envelope.text(self.seq, ts, str(payload["kind"]), data_json)
        else:
            text = encode_event(event)
        n = (size if size is not None else 256) + 256
        self._pending.append(event)
        self._pending_texts.append(text)
        self._pending_sizes.append(n)
        self._pending_bytes += n
        if self.track_latency:
            self.first_emit_at[event.seq] = time.monotonic()
        self._wake.set()
        if len(self._pending) >= config.FLUSH_MAX_EVENTS or self._pending_bytes >= config.FLUSH_MAX_BYTES:
            self._urgent.set()
        if self._pending_bytes + self._unstored_bytes >= config.MAX_PENDING_BYTES:
            self._room.clear()
        return event

    def emit_output(self, payload: dict[str, Any], size: int, *, data_json: str | None = None) -> TaskEvent | None:
        """A task.output event, unless the task's output cap is reached (then counted and dropped)."""
        if self.output_bytes >= config.MAX_OUTPUT_BYTES:
            self.dropped_lines += 1
            return None
        self.output_bytes += size
        if self.output_bytes >= config.MAX_OUTPUT_BYTES:
            self.emit(EventType.OUTPUT, payload, size=size, data_json=data_json)
            return self.emit(
                EventType.OUTPUT,
                {
                    "kind": "notice",
                    "text": f"output limit reached ({config.MAX_OUTPUT_BYTES} bytes): later lines are not stored "
                    "or shown; the run goes on and its result is kept",
                },
            )
        return self.emit(EventType.OUTPUT, payload, size=size, data_json=data_json)

    def reserve_seq(self) -> int:
        """The sequence number the next event will get."""
        return self.seq + 1

    async def emit_terminal(self, type_: EventType, payload: dict[str, Any]) -> TaskEvent:
        """The terminal event, stored before the task is booked terminal (whoever reads a finished task can
        replay its end); its push waits for `release` (once booked), and looks the subscribers up afresh."""
        event = self.emit(type_, payload)
        self._held_seq = event.seq
        self._urgent.set()
        with contextlib.suppress(TimeoutError):  # a store that hangs must not keep the run from being booked
            async with asyncio.timeout(config.TERMINAL_STORE_WAIT_SECONDS):
                while self.store_handled_seq < event.seq and not self._store_task.done():
                    self._store_progress.clear()
                    await self._store_progress.wait()
        return event

    def release(self) -> None:
        """Let the terminal event's push go (the booking is done, or did not happen)."""
        self._released.set()

    async def wait_for_room(self) -> None:
        await self._room.wait()

    def _take(self) -> tuple[list[TaskEvent], list[str], int]:
        """The next batch: what is pending, up to FLUSH_MAX_EVENTS events and FLUSH_MAX_BYTES (at least one
        event). What is left over is a full batch already: it is taken as soon as the store stage is free."""
        count = min(len(self._pending), config.FLUSH_MAX_EVENTS)
        size = 0
        for i in range(count):
            if i and size + self._pending_sizes[i] > config.FLUSH_MAX_BYTES:
                count = i
                break
            size += self._pending_sizes[i]
        events, texts = self._pending[:count], self._pending_texts[:count]
        del self._pending[:count], self._pending_texts[:count], self._pending_sizes[:count]
        self._pending_bytes -= size
        if self._pending:
            self._wake.set()
            self._urgent.set()
        else:
            self._wake.clear()
            self._urgent.clear()
        self._unstored_bytes += size
        self._update_room()
        return events, texts, size

    def _update_room(self) -> None:
        if self._pending_bytes + self._unstored_bytes < config.MAX_PENDING_BYTES:
            self._room.set()

    async def _flusher(self) -> None:
        """The push stage: take a batch when it is due, hand it to the store stage and push it; the next batch is
        taken once this push is done (batches grow while a round trip is slow: few calls). Due: at once after an
        idle spell, else FLUSH_INTERVAL_SECONDS after the previous take (at once if the push took longer), or as
        soon as a full batch is waiting. The terminal event's batch is pushed once released (the task booked),
        to the subscribers looked up afresh."""
        last = -1.0e9
        try:
            while True:
                await self._wake.wait()
                delay = config.FLUSH_INTERVAL_SECONDS - (time.monotonic() - last)
                if delay > 0 and not self._closing and not self._urgent.is_set():
                    # Output keeps coming: wait out the window (less if a batch fills up or the stream closes).
                    urgent = asyncio.create_task(self._urgent.wait())
                    await asyncio.wait([urgent], timeout=delay)
                    urgent.cancel()
                events, texts, size = self._take()
                last = time.monotonic()
                if events:
                    self.flushes += 1
                    self._to_store.append((events, texts, size))
                    self._store_wake.set()
                    final = self._held_seq is not None and events[-1].seq >= self._held_seq
                    if final:
                        await self._released.wait()
                    # Submitted to a worker thread in this step: no other turn of the loop before the push starts.
                    await asyncio.to_thread(self.delivery.push, events, texts, fresh=final)
                    self.handled_seq = events[-1].seq
                if self._closing and not self._pending:
                    return
        finally:
            self._store_closed = True
            self._store_wake.set()

    async def _storer(self) -> None:
        """The store stage: writes everything taken since its last write (in order, beside the pushes: the
        copy a replay reads). A write slower than the pushes is not waited for by the next push; what waits for
        it is bounded by MAX_PENDING_BYTES with what was not taken yet."""
        while True:
            while not self._to_store:
                if self._store_closed:
                    return
                self._store_wake.clear()
                await self._store_wake.wait()
            batches, self._to_store = self._to_store, []
            if len(batches) == 1:
                events, texts, size = batches[0]
            else:
                events = [e for batch in batches for e in batch[0]]
                texts = [t for batch in batches for t in batch[1]]
                size = sum(batch[2] for batch in batches)
            await asyncio.to_thread(self._store, events, texts, size)
            self.store_handled_seq = events[-1].seq
            self._unstored_bytes -= size
            self._update_room()
            self._store_progress.set()

    def _store(self, events: list[TaskEvent], texts: list[str], size: int) -> None:
        self.delivery.store(events, size, texts)
        # Re-read the watchers now if they expire before the next push would (off the push's path).
        self.delivery.refresh_subscribers(ahead=4 * config.FLUSH_INTERVAL_SECONDS)

    async def flush(self) -> None:
        """Deliver everything emitted so far (and keep the stages running)."""
        target = self.seq
        while self.handled_seq < target and not self._push_task.done():
            self._urgent.set()
            self._wake.set()
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        """Deliver what is pending and stop both stages."""
        self._closing = True
        self._released.set()
        self._wake.set()
        self._urgent.set()
        await self._push_task
        await self._store_task


def publish(task: Task, events: list[TaskEvent]) -> None:
    """Store and push events outside a run (a refused or dead-lettered task): one batch, no flusher."""
    Delivery(task).deliver(events)


def last_stored_seq(task: Task) -> int:
    """The highest sequence number stored for the task. A runner that died may have stored events after the
    `last_seq` of its last heartbeat; numbering on from there would overwrite them (chunks are keyed by seq)."""
    stored = output.read_events(task.task_id, after_seq=task.last_seq)
    return max([task.last_seq, *(e.seq for e in stored)])


def lifecycle_event(task: Task, type_: EventType, payload: dict[str, Any], *, seq: int | None = None) -> TaskEvent:
    """A lifecycle event outside a run, numbered after everything stored unless `seq` is given."""
    return TaskEvent(
        type=type_,
        task_id=task.task_id,
        session_id=task.session_id,
        seq=seq if seq is not None else last_stored_seq(task) + 1,
        payload=payload,
    )
