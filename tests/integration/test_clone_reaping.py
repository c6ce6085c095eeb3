"""A clone that fails, times out or is cancelled leaves no git process behind: git and the helpers it started
(git-remote-http) are killed, and the helpers re-parented to the runner (a child subreaper, as in production)
are waited for, so no zombie stays in /proc. Against real sockets: a port nobody listens on, and a server that
accepts connections and never answers."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_machine.models import AgentSpec, RepoContext, Task
from local_runtime.emulator import free_port
from runner import cli, config, workspace

from tests.integration.runner_support import wait_until

pytestmark = pytest.mark.timeout(120)


class SilentServer:
    """Accepts TCP connections and never answers (a git server that hangs); keeps them open until stopped."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def runner_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_WORK_ROOT", str(tmp_path / "runner"))
    cli.harden_runner_process()  # a child subreaper, as every runner entry point makes itself
    assert cli.runner_is_subreaper()


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) from /proc/<pid>/stat."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def my_zombies() -> list[int]:
    me = os.getpid()
    return [
        int(e.name) for e in os.scandir("/proc") if e.name.isdigit() and (_stat(int(e.name)) or ("", 0)) == ("Z", me)
    ]


def git_processes(url: str) -> list[int]:
    """Live processes working on `url` (git and git-remote-http show it in their command line)."""
    return [
        int(e.name)
        for e in os.scandir("/proc")
        if e.name.isdigit() and url in _cmdline(int(e.name)) and (_stat(int(e.name)) or ("Z", 0))[0] != "Z"
    ]


def clone_into(tmp_path: Path, url: str) -> tuple[workspace.Workspace, RepoContext]:
    task = Task(
        session_id="s-reap", prompt="x", agent="executor", repo=RepoContext(full_name="acme/app", clone_url=url)
    )
    ws = workspace.prepare(task, AgentSpec(name="executor"), [], root=tmp_path / "runner")
    assert task.repo is not None
    return ws, task.repo


def test_a_clone_that_fails_leaves_no_zombie(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/acme/app.git"  # nobody listens there
    ws, repo = clone_into(tmp_path, url)
    before = set(my_zombies())
    with pytest.raises(workspace.WorkspaceError, match="git clone failed"):
        asyncio.run(workspace.clone_repository(ws, repo, None))
    assert set(my_zombies()) - before == set()
    assert git_processes(url) == []


def test_a_clone_that_hangs_is_killed_and_reaped(
    tmp_path: Path, silent: SilentServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{silent.port}/acme/app.git"
    monkeypatch.setattr(config, "CLONE_TIMEOUT_SECONDS", 10.0)  # the scenario: the server never answers
    ws, repo = clone_into(tmp_path, url)
    before = set(my_zombies())
    helpers: set[int] = set()
    cloning = threading.Event()

    def watch() -> None:  # the helpers git starts, seen while the clone runs
        while not cloning.wait(0.02):
            helpers.update(p for p in git_processes(url) if "remote-http" in _cmdline(p))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with pytest.raises(workspace.WorkspaceError, match="git clone timed out"):
            asyncio.run(workspace.clone_repository(ws, repo, None))
    finally:
        cloning.set()
        watcher.join(10)
    assert silent.accepted  # git-remote-http was connected, waiting for an answer, when the clone timed out
    assert helpers
    assert set(my_zombies()) - before == set()
    assert git_processes(url) == []
    assert all(_stat(pid) is None for pid in helpers)  # gone from /proc: killed and waited for


def test_a_cancelled_clone_is_killed_and_reaped(tmp_path: Path, silent: SilentServer) -> None:
    url = f"http://127.0.0.1:{silent.port}/acme/app.git"
    ws, repo = clone_into(tmp_path, url)
    before = set(my_zombies())

    async def clone_then_cancel() -> list[int]:
        clone = asyncio.create_task(workspace.clone_repository(ws, repo, None))
        seen = await asyncio.to_thread(
            wait_until, lambda: [p for p in git_processes(url) if "remote-http" in _cmdline(p)], timeout=30
        )
        clone.cancel()  # a stop while the runner is still cloning
        with pytest.raises(asyncio.CancelledError):
            await clone
        return list(seen)

    helpers = asyncio.run(clone_then_cancel())
    assert helpers
    assert set(my_zombies()) - before == set()
    assert git_processes(url) == []
    assert all(_stat(pid) is None for pid in helpers)
