"""A WebSocket client for tests: real sockets to the local runtime's /ws, frames decoded into events."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect


class EventClient:
    def __init__(self, ws_url: str, token: str) -> None:
        self.conn: ClientConnection = connect(f"{ws_url}?token={token}", open_timeout=10, max_size=2**22).__enter__()
        self.events: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self._parts: dict[tuple[str, int], dict[int, str]] = {}

    def send(self, message: dict[str, Any]) -> None:
        self.conn.send(json.dumps(message))

    def _take(self, raw: str | bytes) -> None:
        message = json.loads(raw)
        self.messages.append(message)
        if message.get("type") == "events":
            self.events.extend(message["events"])
        elif message.get("type") == "event_part":
            key = (message["task_id"], message["seq"])
            parts = self._parts.setdefault(key, {})
            parts[message["part"]] = message["data"]
            if len(parts) == message["parts"]:
                self.events.append(json.loads("".join(parts[i] for i in range(message["parts"]))))
                del self._parts[key]

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> dict[str, Any]:
        """The first event (or message) matching the predicate, reading frames until it arrives."""
        deadline = time.monotonic() + timeout
        while True:
            for item in self.events + self.messages:
                if predicate(item):
                    return item
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                kinds = [e.get("type") for e in self.events][-20:]
                raise AssertionError(f"no matching event within {timeout}s; last events: {kinds}")
            try:
                self._take(self.conn.recv(timeout=remaining))
            except TimeoutError:
                continue

    def task_events(self, task_id: str) -> list[dict[str, Any]]:
        unique = {e["seq"]: e for e in self.events if e.get("task_id") == task_id}
        return [unique[s] for s in sorted(unique)]

    def close(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            self.conn.close()
