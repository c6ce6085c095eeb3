"""Fault and load tests (issue 7): kill, restart, storms, abrupt disconnects, fuzzing, floods.

Loopback only and bounded in count and time; every assertion is functional (nothing is lost, duplicated,
stuck or unbounded), none is about wall-clock speed. The helpers below are shared by the test modules.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.conftest import TEST_SECRETS, WEBHOOKS
from tests.e2e.conftest import RunningMachine

TERMINAL = frozenset({"completed", "failed", "stopped", "timed_out"})
TERMINAL_EVENTS = frozenset({"task.completed", "task.failed", "task.stopped"})
SECRET = TEST_SECRETS["GITHUB_WEBHOOK_SECRET"]


def as_dict(value: object) -> dict[str, Any]:
    assert isinstance(value, dict), value
    return value


def get_task(machine: RunningMachine, task_id: str) -> dict[str, Any]:
    """The task with its whole output, following the API's pages."""
    status, detail = machine.api("GET", f"/api/tasks/{task_id}?limit=5000")
    assert status == 200, (status, detail)
    whole = as_dict(detail)
    while whole.get("has_more"):
        status, page = machine.api("GET", f"/api/tasks/{task_id}?limit=5000&after_seq={whole['last_seq']}")
        assert status == 200, (status, page)
        more = as_dict(page)
        whole["output"].extend(more["output"])
        whole["last_seq"], whole["has_more"] = more["last_seq"], more["has_more"]
    return whole


def wait_for(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.2, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(interval)


def wait_status(
    machine: RunningMachine, task_id: str, statuses: frozenset[str] | set[str], *, timeout: float
) -> dict[str, Any]:
    """The task's detail (task + output) once its status is one of `statuses`."""
    last: dict[str, Any] = {}

    def reached() -> dict[str, Any] | None:
        nonlocal last
        last = get_task(machine, task_id)
        return last if last["task"]["status"] in statuses else None

    try:
        return dict(wait_for(reached, timeout=timeout, what=f"task {task_id} in {sorted(statuses)}"))
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {last.get('task', {}).get('status')}") from None


def wait_finished(machine: RunningMachine, task_id: str, *, timeout: float) -> dict[str, Any]:
    """The task's detail once it is booked (terminal status) AND its terminal event is stored: the runner books
    first and emits the event right after, so for a moment a finished task's output does not show its end."""
    last: dict[str, Any] = {}

    def done() -> dict[str, Any] | None:
        nonlocal last
        last = get_task(machine, task_id)
        output = last["output"]
        if last["task"]["status"] in TERMINAL and any(e["type"] in TERMINAL_EVENTS for e in output):
            return last
        return None

    try:
        return dict(wait_for(done, timeout=timeout, what=f"task {task_id} finished with its terminal event"))
    except AssertionError as exc:
        kinds = [e["type"] for e in last.get("output", [])][-5:]
        raise AssertionError(f"{exc}; last seen: {last.get('task', {}).get('status')}, events ...{kinds}") from None


def chat(machine: RunningMachine, message: str, session_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"message": message}
    if session_id:
        body["session_id"] = session_id
    status, created = machine.api("POST", "/api/chat", body)
    assert status == 202, (status, created)
    return as_dict(created)


def paged(machine: RunningMachine, path: str, **query: str | int) -> list[dict[str, Any]]:
    """Every item of a cursor-paginated listing."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {**{k: str(v) for k, v in query.items()}, **({"cursor": cursor} if cursor else {})}
        status, page = machine.api("GET", f"{path}?{urllib.parse.urlencode(params)}")
        assert status == 200, (status, page)
        body = as_dict(page)
        items.extend(body["items"])
        cursor = body.get("cursor")
        if not cursor:
            return items


def github_comment(
    delivery_id: str, *, issue: int, comment_id: int, text: str, secret: str = SECRET
) -> tuple[bytes, dict[str, str]]:
    """A signed `issue_comment` (created) delivery of an OWNER, without a clone URL (nothing leaves loopback)."""
    payload = json.loads((WEBHOOKS / "github" / "issue_comment__created.json").read_bytes())
    payload["repository"]["clone_url"] = None
    payload["issue"]["number"] = issue
    payload["comment"].update({"id": comment_id, "body": text, "author_association": "OWNER"})
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {
        "Content-Type": "application/json",
        "X-GitHub-Event": "issue_comment",
        "X-GitHub-Delivery": delivery_id,
        "X-Hub-Signature-256": signature,
        "User-Agent": "GitHub-Hookshot/faults",
    }


def post(url: str, body: bytes, headers: dict[str, str], timeout: float = 60) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, dict(resp.headers.items()), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            parsed = json.loads(raw or b"null")
        except ValueError:
            parsed = raw.decode(errors="replace")
        return err.code, dict(err.headers.items()), parsed


# --------------------------------------------------------------------------------------------- processes


def pids_with(marker: str) -> list[int]:
    """Processes whose command line contains `marker` (a unique string the test put in a prompt)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as fh:
            if marker.encode() in fh.read():
                found.append(int(entry))
    return found


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def reaping(marker: str) -> Iterator[None]:
    """Kills whatever is left of the processes carrying `marker` when the block ends (they were started for
    this test, by the runtime it killed)."""
    try:
        yield
    finally:
        kill_pids(pids_with(marker))


def proc_status_kb(pid: int, field: str) -> int:
    """A `/proc/<pid>/status` memory field (VmRSS, VmHWM, ...) in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def runtime_env(machine: RunningMachine) -> dict[str, str]:
    """Where the running runtime's resources are (its runtime.json): endpoint and table/queue names."""
    info = json.loads((machine.data_dir / "runtime.json").read_text())
    env = {str(k): str(v) for k, v in info["env"].items()}
    env["AWS_ENDPOINT_URL"] = str(info["endpoint"])
    env.update(info["credentials"])  # the emulator answers only the runtime's own credentials
    return env


def seqs(output: list[dict[str, Any]]) -> list[int]:
    return [int(e["seq"]) for e in output]
