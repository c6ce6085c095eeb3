"""50 WebSocket clients on one session; half of them vanish mid-stream without a close frame (their TCP socket is
shut down and reset). The others get every event of the task in order, and the gone connections are cleaned up:
the connections table ends with only the live ones, then with none once those close normally."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import reset_caches
from tests.e2e.conftest import RunningMachine, start_machine
from tests.e2e.wsclient import EventClient
from tests.faults import TERMINAL_EVENTS, chat, get_task, runtime_env, wait_finished, wait_for

pytestmark = pytest.mark.e2e

CLIENTS = 50


def drop(client: EventClient) -> None:
    """Vanish: no close frame, the TCP connection reset (SO_LINGER 0)."""
    sock = client.conn.socket
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def connection_items() -> tuple[int, int]:
    """(connections, subscriptions) in the runtime's Connections table."""
    from agent_machine import aws
    from agent_machine.store import connections

    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": connections.table(), "ConsistentRead": True}
    while True:
        page = aws.dynamodb().scan(**kwargs)
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    meta = sum(1 for i in items if i["sk"]["S"] == "META")
    return meta, len(items) - meta


def live_count() -> int:
    from agent_machine.store import connections

    return connections.count()


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningMachine]:
    running = start_machine(tmp_path, persist=False, extra_env={"LOG_LEVEL": "WARNING"})
    try:
        for key, value in runtime_env(running).items():  # this process reads the runtime's tables directly
            monkeypatch.setenv(key, value)
        reset_caches()
        yield running
    finally:
        running.stop()
        reset_caches()


def test_half_the_clients_vanish_the_rest_get_everything_and_the_gone_are_cleaned_up(
    machine: RunningMachine,
) -> None:
    first = chat(machine, "[[text]] hello")
    session_id = first["session_id"]
    wait_finished(machine, first["task_id"], timeout=60)

    clients = [EventClient(machine.ws_url, machine.api_token) for _ in range(CLIENTS)]
    try:
        for client in clients:
            client.send({"action": "subscribe", "session_id": session_id})
        for client in clients:
            client.wait_for(lambda m: m.get("type") == "subscribed" and m.get("session_id") == session_id, 30)
        assert connection_items() == (CLIENTS, CLIENTS)

        streamed = chat(machine, "[[lines:400:4]] stream to everyone", session_id=session_id)
        task_id = streamed["task_id"]
        live, gone = clients[1::2], clients[0::2]
        live[0].wait_for(lambda e: e.get("task_id") == task_id and e.get("type") == "task.output", 60)
        for client in gone:
            drop(client)

        for client in live:
            client.wait_for(lambda e: e.get("task_id") == task_id and e.get("type") in TERMINAL_EVENTS, 90)
        stored = wait_finished(machine, task_id, timeout=30)
        assert stored["task"]["status"] == "completed"
        expected = [e["seq"] for e in stored["output"]]
        assert expected == list(range(1, len(expected) + 1))

        gaps: dict[int, int] = {}
        for n, client in enumerate(live):
            pushed = [e["seq"] for e in client.events if e.get("task_id") == task_id]
            assert pushed == sorted(set(pushed)), f"client {n}: events out of order or repeated"
            missing = sorted(set(expected) - set(pushed))
            if missing:  # the client's gap fill: the stored output after what it has
                gaps[n] = len(missing)
                fill = get_task(machine, task_id)["output"]
                pushed = sorted(set(pushed) | {e["seq"] for e in fill if e["seq"] in missing})
            assert pushed == expected, f"client {n} misses {sorted(set(expected) - set(pushed))[:10]}"
            assert client.task_events(task_id)[-1]["type"] == "task.completed" or n in gaps

        print(f"events gap-filled per live client: {gaps or 'none'}")
        # The vanished connections are gone from the table; only the live ones (and their subscriptions) remain.
        wait_for(
            lambda: connection_items() == (len(live), len(live)),
            timeout=20,
            what="only the live connections left in the table",
        )
        assert live_count() == len(live)
    finally:
        for client in clients:
            client.close()
    wait_for(lambda: connection_items() == (0, 0), timeout=20, what="an empty connections table after closing")
