"""Helpers for the runner's integration tests: submit a task, hand its SQS message to the runner's Lambda
handler (as the event source mapping would), watch WebSocket pushes on a local management-API stand-in."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent_machine import aws
from agent_machine.domain import submission
from agent_machine.models import RepoContext, Task
from agent_machine.settings import get_settings
from agent_machine.store import tasks
from local_runtime import harness
from local_runtime.events import LambdaContext, sqs_event
from local_runtime.provision import Provisioned
from runner import lambda_handler
from runner.controller import active_runs

receive = harness.receive_task_message  # the task's queue message, as the event source would get it


def submit(
    prompt: str,
    *,
    session_id: str | None = None,
    agent: str = "brain",
    repo: RepoContext | None = None,
    max_budget_usd: float | None = None,
) -> Task:
    task, session = submission.new_task(prompt, session_id=session_id, agent=agent, max_budget_usd=max_budget_usd)
    if repo is not None:
        task = task.model_copy(update={"repo": repo})
    return submission.submit(task, session).task


def invoke(stack: Provisioned, message: dict[str, Any], *, timeout_seconds: int = 120) -> dict[str, Any]:
    """Call the runner's handler with one message; delete it unless reported as failed (the event source's job)."""
    event = sqs_event([message], stack.resolver.attrs["TaskQueue.Arn"])
    result: dict[str, Any] = lambda_handler.handler(
        event, LambdaContext("RunnerFunction", timeout_seconds=timeout_seconds)
    )
    failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
    if message["MessageId"] not in failed:
        aws.sqs().delete_message(QueueUrl=get_settings().task_queue_url, ReceiptHandle=message["ReceiptHandle"])
    return result


def run_task(stack: Provisioned, prompt: str, *, timeout_seconds: int = 120, **kwargs: Any) -> Task:
    """Submit, hand the message to the runner, return the task as stored afterwards."""
    task = submit(prompt, **kwargs)
    invoke(stack, receive(task.task_id), timeout_seconds=timeout_seconds)
    stored = tasks.get(task.task_id)
    assert stored is not None
    return stored


@contextmanager
def in_background(fn: Callable[[], Any]) -> Iterator[Future[Any]]:
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool.submit(fn)


def wait_until(predicate: Callable[[], Any], *, timeout: float = 20.0, interval: float = 0.05) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def cli_pid(task_id: str, timeout: float = 20.0) -> int:
    """The running CLI's pid (= its process group id) once the runner has spawned it."""

    def spawned() -> int | None:
        controller = active_runs().get(task_id)
        return controller.proc.pid if controller and controller.proc else None

    return int(wait_until(spawned, timeout=timeout))


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Receiver:
    """A stand-in for the API Gateway management API: records `POST /@connections/{id}` bodies, answers 410 for
    connections listed in `gone`."""

    port: int = 0
    frames: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    arrivals: list[tuple[float, str, bytes]] = field(default_factory=list)
    gone: set[str] = field(default_factory=set)
    calls: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                connection_id = self.path.rsplit("/@connections/", 1)[-1]
                now = time.monotonic()
                with receiver._lock:
                    receiver.calls += 1
                    gone = connection_id in receiver.gone
                    if not gone:
                        receiver.frames[connection_id].append(body)
                        receiver.arrivals.append((now, connection_id, body))
                code, reply = (410, b'{"message":"Gone"}') if gone else (200, b"{}")
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def events(self, connection_id: str) -> list[dict[str, Any]]:
        """The task events a connection received, in order (event_part frames joined)."""
        out: list[dict[str, Any]] = []
        parts: dict[int, list[str]] = defaultdict(list)
        with self._lock:
            bodies = list(self.frames.get(connection_id, []))
        for body in bodies:
            frame = json.loads(body)
            if frame.get("type") == "events":
                out.extend(frame["events"])
            elif frame.get("type") == "event_part":
                parts[frame["seq"]].append(frame["data"])
                if len(parts[frame["seq"]]) == frame["parts"]:
                    out.append(json.loads("".join(parts.pop(frame["seq"]))))
        return out
