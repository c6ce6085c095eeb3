"""The WebSocket path through `python -m local_runtime` with real sockets: big emoji/ASCII events arrive whole in
frames under API Gateway's 128 KB, and a subscriber that arrives near a task's end still gets its tail."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest

from tests.e2e.conftest import RunningMachine
from tests.e2e.wsclient import EventClient

pytestmark = pytest.mark.e2e

TERMINAL_EVENTS = ("task.completed", "task.failed", "task.stopped")


def _task(machine: RunningMachine, task_id: str) -> dict[str, Any]:
    status, detail = machine.api("GET", f"/api/tasks/{task_id}?limit=1")
    assert status == 200 and isinstance(detail, dict)
    task: dict[str, Any] = detail["task"]
    return task


def _chat(machine: RunningMachine, message: str) -> str:
    status, accepted = machine.api("POST", "/api/chat", {"message": message})
    assert status == 202 and isinstance(accepted, dict), accepted
    return str(accepted["task_id"])


class SizeCheckingClient(EventClient):
    def _take(self, raw: str | bytes) -> None:
        size = len(raw.encode() if isinstance(raw, str) else raw)
        assert size <= 128 * 1024, f"a frame of {size} bytes"
        super()._take(raw)


# The runner keeps CLI lines up to 200 KB whole (the fake CLI escapes an emoji as 12 bytes): 15,000 emoji is the most
# that stays one event; the 45,000-emoji event is tested at the handler (tests/unit/test_ws_push_failures.py).
HUGE = ("abcdefghijklmnopqrstuvwxyz" * 7000)[:180_000]


@pytest.mark.parametrize(("prompt", "text"), [(f"[[text:{'😀' * 15_000}]]", "😀" * 15_000), ("[[huge:180000]]", HUGE)])
def test_big_events_arrive_whole_in_frames_under_128_kb(local_machine: RunningMachine, prompt: str, text: str) -> None:
    task_id = _chat(local_machine, prompt)
    client = SizeCheckingClient(local_machine.ws_url, local_machine.api_token)
    try:
        client.send({"action": "subscribe", "task_id": task_id, "last_seq": 0, "id": "s"})
        client.wait_for(lambda e: e.get("task_id") == task_id and e.get("type") in TERMINAL_EVENTS, timeout=60)
        # Subscribed to a task that already runs, a client may miss live pushes (the runner caches its subscriber
        # list for a second): it asks for the hole again with the last seq it holds in a row, as live.js does.
        held = {e["seq"] for e in client.task_events(task_id)}
        released = 0
        while released + 1 in held:
            released += 1
        if released < max(held):
            client.send({"action": "subscribe", "task_id": task_id, "last_seq": released, "id": "again"})
            client.wait_for(lambda m: m.get("id") == "again", timeout=30)
        outputs = [e for e in client.task_events(task_id) if e["type"] == "task.output"]
        # the assistant line carrying the text, rebuilt exactly from its parts (a stream-json object)
        assert any(text in json.dumps(e["payload"], ensure_ascii=False) for e in outputs)
        assert [e["seq"] for e in client.task_events(task_id)] == list(
            range(1, _task(local_machine, task_id)["last_seq"] + 1)
        )
        if text.isascii():  # 180 KB: more than one frame
            assert any(m.get("type") == "event_part" for m in client.messages)
        assert not [m for m in client.messages if m.get("type") == "error"]
    finally:
        client.close()


def _ended(client: EventClient, task_id: str) -> bool:
    return any(e["type"] in TERMINAL_EVENTS for e in client.task_events(task_id))


def _late_subscriber(machine: RunningMachine, rng: random.Random) -> tuple[bool, dict[str, Any]]:
    """One trial of /tmp/audit56/ws_race.py, with the client doing what live.js does after `subscribed`."""
    task_id = _chat(machine, "[[lines:4:250]] go")
    for _ in range(200):
        if _task(machine, task_id)["status"] != "queued":
            break
        time.sleep(0.05)
    time.sleep(rng.uniform(0.4, 1.3))  # arrive near the end (4 lines x 250 ms)
    client = EventClient(machine.ws_url, machine.api_token)
    try:
        sub: dict[str, Any] = {}
        for attempt in range(5):
            # live.js re-subscribes with `released`: every seq up to it is held (a hole is asked for again)
            held = {e["seq"] for e in client.task_events(task_id)}
            released = 0
            while released + 1 in held:
                released += 1
            if attempt and released == max(held, default=0) and _ended(client, task_id):
                break
            client.send({"action": "subscribe", "task_id": task_id, "last_seq": released, "id": f"s{attempt}"})
            sub = client.wait_for(lambda m, a=attempt: m.get("id") == f"s{a}", timeout=20)
            assert sub["type"] == "subscribed", sub
            try:
                client.wait_for(
                    lambda e: e.get("task_id") == task_id and e.get("type") in TERMINAL_EVENTS,
                    timeout=0.2 if sub["status"] not in ("queued", "running") else 2.5,
                )
            except AssertionError:
                continue  # live.js: behind, or no end within the settle time -> subscribe again with last_seq
            time.sleep(1.2)  # live.js: a hole left after the end is asked for after GAP_RETRY_MS
        seqs = [e["seq"] for e in client.task_events(task_id)]
        final = _task(machine, task_id)
        got_end = any(e["type"] in TERMINAL_EVENTS for e in client.task_events(task_id))
        complete = got_end and seqs == list(range(1, final["last_seq"] + 1))
        return complete, {"sub": sub, "seqs": seqs, "final_last_seq": final["last_seq"], "status": final["status"]}
    finally:
        client.close()


def test_late_subscribers_get_the_tail_of_the_task(local_machine: RunningMachine) -> None:
    rng = random.Random(56)
    misses = []
    for _ in range(10):
        ok, info = _late_subscriber(local_machine, rng)
        if not ok:
            misses.append(info)
    assert not misses, misses


def test_subscribed_reports_the_tasks_known_last_seq(local_machine: RunningMachine) -> None:
    task_id = _chat(local_machine, "[[lines:5]]")
    for _ in range(300):
        if _task(local_machine, task_id)["status"] == "completed":
            break
        time.sleep(0.1)
    client = EventClient(local_machine.ws_url, local_machine.api_token)
    try:
        client.send({"action": "subscribe", "task_id": task_id, "last_seq": 2, "id": "s"})
        sub = client.wait_for(lambda m: m.get("id") == "s")
        final = _task(local_machine, task_id)
        assert sub["task_last_seq"] == final["last_seq"] == sub["last_seq"]
        assert [e["seq"] for e in client.task_events(task_id)] == list(range(3, final["last_seq"] + 1))
    finally:
        client.close()
