"""Tiny Lambda handlers the runtime tests point the SQS event source at."""

from __future__ import annotations

import threading
import time
from typing import Any

lock = threading.Lock()
seen: list[dict[str, Any]] = []
running = 0
max_running = 0


def reset() -> None:
    global running, max_running
    with lock:
        seen.clear()
        running = 0
        max_running = 0


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Records each record; reports `fail` bodies as failures; `sleep` bodies hold the worker a while."""
    global running, max_running
    with lock:
        running += 1
        max_running = max(max_running, running)
    try:
        failures = []
        for record in event["Records"]:
            with lock:
                seen.append({**record, "remaining_ms": context.get_remaining_time_in_millis()})
            if record["body"] == "sleep":
                time.sleep(0.5)
            if record["body"] == "fail":
                failures.append({"itemIdentifier": record["messageId"]})
        return {"batchItemFailures": failures}
    finally:
        with lock:
            running -= 1
