"""Handlers that tests/e2e/test_run_local_workers.py points template functions at, to see the local runtime's
execution environments from the inside: which process ran an invocation, with which environment, and what a
crash or a timeout does."""

from __future__ import annotations

import json
import os
import time
from typing import Any


def http_probe(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """An HTTP API (payload 2.0) handler answering with its process id and environment. `?crash=1` exits the
    process mid-invocation, `?sleep=S` holds it S seconds first."""
    query = event.get("queryStringParameters") or {}
    print(f"http probe {os.getpid()} serving {event.get('rawPath')}", flush=True)
    if query.get("crash"):
        os._exit(3)
    if query.get("sleep"):
        time.sleep(float(query["sleep"]))
    body = {
        "pid": os.getpid(),
        "env": dict(os.environ),
        "function_name": context.function_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }
    return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}


def sqs_probe(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """An SQS handler. Each body is JSON: {"tag", "action": ok|crash|hang|sleep, "seconds", "env": bool}; crash and
    hang act on a message's first receive only (its redelivery then succeeds). Each record leaves one JSON line
    (crash, hang or done, with the pid, receive count and time.monotonic() start/end) in the file PROBE_LOG names."""
    for record in event["Records"]:
        body = json.loads(record["body"])
        receives = int(record["attributes"]["ApproximateReceiveCount"])
        entry: dict[str, Any] = {
            "tag": body.get("tag"),
            "pid": os.getpid(),
            "receive_count": receives,
            "message_id": record["messageId"],
            "start": time.monotonic(),
        }
        action = body.get("action", "ok") if receives == 1 else "ok"
        if action == "crash":
            _append({**entry, "event": "crash"})
            os._exit(3)
        if action == "hang":
            _append({**entry, "event": "hang"})
            time.sleep(3600)
        if action == "sleep":
            time.sleep(float(body.get("seconds", 1)))
        _append(
            {**entry, "event": "done", "end": time.monotonic(), "env": dict(os.environ) if body.get("env") else None}
        )
    return {"batchItemFailures": []}


def _append(entry: dict[str, Any]) -> None:
    # One write of one line to a file opened for appending: lines of concurrent workers do not interleave.
    fd = os.open(os.environ["PROBE_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)
