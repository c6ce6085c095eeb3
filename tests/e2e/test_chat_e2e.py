"""One chat through the whole machine: HTTP -> SQS -> runner -> CLI (the fake) -> WebSocket."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import RunningMachine
from tests.e2e.wsclient import EventClient
from tests.fakes.fake_claude import COST_PER_RESPONSE_USD

pytestmark = pytest.mark.e2e


@pytest.fixture
def client(local_machine: RunningMachine) -> Iterator[EventClient]:
    ws = EventClient(local_machine.ws_url, local_machine.api_token)
    yield ws
    ws.close()


def chat(machine: RunningMachine, message: str, session_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"message": message}
    if session_id:
        body["session_id"] = session_id
    status, created = machine.api("POST", "/api/chat", body)
    assert status == 202, created
    assert isinstance(created, dict)
    return created


def finished(task_id: str) -> Any:
    terminal = {"task.completed", "task.failed", "task.stopped"}
    return lambda e: e.get("task_id") == task_id and e.get("type") in terminal


def cli_processes(marker: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if marker.encode() in fh.read():
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def test_chat_streams_output_and_books_the_exact_cost(local_machine: RunningMachine, client: EventClient) -> None:
    first = chat(local_machine, "What is in this repository?")
    client.send({"action": "subscribe", "task_id": first["task_id"], "last_seq": 0})
    done = client.wait_for(finished(first["task_id"]), timeout=60)
    assert done["type"] == "task.completed", done
    assert done["payload"]["cost_usd"] == pytest.approx(2 * COST_PER_RESPONSE_USD)
    events = client.task_events(first["task_id"])
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["task.created", "task.started"] and kinds[-1] == "task.completed"
    assert [e["seq"] for e in events] == sorted({e["seq"] for e in events})
    texts = [e["payload"].get("data", {}) for e in events if e["type"] == "task.output"]
    assert any(t.get("type") == "assistant" for t in texts)

    status, detail = local_machine.api("GET", f"/api/tasks/{first['task_id']}")
    assert status == 200 and isinstance(detail, dict)
    task = detail["task"]
    assert [e["seq"] for e in detail["output"]] == [e["seq"] for e in events]  # stored for replay, all of it
    assert task["status"] == "completed" and task["result"].startswith("All done")
    assert task["cost_usd"] == pytest.approx(2 * COST_PER_RESPONSE_USD)

    # The second message resumes the CLI session: its cost is the difference of the CLI's cumulative totals.
    second = chat(local_machine, "[[args]] and now?", session_id=first["session_id"])
    client.send({"action": "subscribe", "task_id": second["task_id"], "last_seq": 0})
    done = client.wait_for(finished(second["task_id"]), timeout=60)
    assert done["type"] == "task.completed", done
    _, detail = local_machine.api("GET", f"/api/tasks/{second['task_id']}")
    assert isinstance(detail, dict)
    task = detail["task"]
    assert "--resume" in task["result"]
    assert task["cost_usd"] == pytest.approx(COST_PER_RESPONSE_USD)
    _, detail = local_machine.api("GET", f"/api/sessions/{first['session_id']}")
    assert isinstance(detail, dict)
    assert len(detail["tasks"]) == 2
    assert detail["session"]["total_cost_usd"] == pytest.approx(3 * COST_PER_RESPONSE_USD)


def test_stop_ends_a_hanging_cli_within_two_seconds(local_machine: RunningMachine, client: EventClient) -> None:
    marker = f"hang-{os.getpid()}-{time.monotonic_ns()}"
    created = chat(local_machine, f"[[hang]] {marker}")
    client.send({"action": "subscribe", "task_id": created["task_id"], "last_seq": 0})
    client.wait_for(lambda e: e.get("task_id") == created["task_id"] and e.get("type") == "task.output", 60)
    assert cli_processes(marker), "the CLI should be running"
    asked = time.monotonic()
    status, _ = local_machine.api("POST", f"/api/tasks/{created['task_id']}/stop")
    assert status in (200, 202)
    done = client.wait_for(finished(created["task_id"]), timeout=30)
    assert done["type"] == "task.stopped", done
    # Noticed within 2 s; the CLI answers SIGINT at once, so the whole stop fits well inside 2 s + grace.
    assert time.monotonic() - asked < 10
    deadline = time.monotonic() + 5
    while cli_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cli_processes(marker) == []
    _, detail = local_machine.api("GET", f"/api/tasks/{created['task_id']}")
    assert isinstance(detail, dict)
    task = detail["task"]
    assert task["status"] == "stopped"
    assert task["cost_usd"] == pytest.approx(COST_PER_RESPONSE_USD)  # what was spent before the stop


def test_a_crash_gives_a_clear_failure(local_machine: RunningMachine, client: EventClient) -> None:
    created = chat(local_machine, "[[crash]] please")
    client.send({"action": "subscribe", "task_id": created["task_id"], "last_seq": 0})
    done = client.wait_for(finished(created["task_id"]), timeout=60)
    assert done["type"] == "task.failed"
    _, detail = local_machine.api("GET", f"/api/tasks/{created['task_id']}")
    assert isinstance(detail, dict)
    task = detail["task"]
    assert task["status"] == "failed"
    assert "simulated crash" in (task.get("error") or "")
