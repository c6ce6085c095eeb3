"""The local runtime as a real process, against hostile clients and careless configuration: a request whose headers
never finish is cut off, every answer carries the security headers CloudFront adds on AWS, the API docs load
nothing from another origin (in headless Chromium), and a start with a short secret is refused."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from local_runtime.emulator import free_port
from playwright.sync_api import Request, sync_playwright
from websockets.sync.client import connect

from tests.conftest import FAKE_CLAUDE, ROOT, TEST_SECRETS
from tests.e2e.conftest import RunningMachine, start_machine

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT = 3.0  # the bound the machine runs with here (LOCAL_HEADER_TIMEOUT_SECONDS)
CEILING = 30.0  # what a test waits at most for something the bound promises
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMachine]:
    running = start_machine(
        tmp_path_factory.mktemp("hardening"),
        extra_env={"LOCAL_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT)},
        persist=False,
    )
    yield running
    running.stop()


def _read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when (monotonic) it did."""
    sock.settimeout(CEILING)
    received = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            raise AssertionError(f"the connection was still open after {CEILING} s") from None
        if not chunk:
            return received, time.monotonic()
        received += chunk


@pytest.mark.parametrize("partial", [b"GET /api/hea", b"GET /api/health HTTP/1.1\r\nHost: x\r\n", b""])
def test_headers_that_never_finish_are_cut_off(machine: RunningMachine, partial: bytes) -> None:
    with socket.create_connection(("127.0.0.1", machine.port), timeout=CEILING) as sock:
        started = time.monotonic()
        sock.sendall(partial)
        answer, closed_at = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert closed_at - started < CEILING


def test_complete_requests_and_keep_alive_are_unaffected(machine: RunningMachine) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", machine.port, timeout=CEILING)
    try:
        sockets = []
        for _ in range(2):  # two whole requests on one connection
            connection.request("GET", "/api/health")
            response = connection.getresponse()
            assert response.status == 200, response.status
            response.read()
            assert not response.will_close
            sockets.append(connection.sock)
        assert sockets[0] is sockets[1] is not None  # the same socket both times
    finally:
        connection.close()


def test_a_websocket_outlives_the_header_deadline(machine: RunningMachine) -> None:
    with connect(f"{machine.ws_url}?token={machine.api_token}") as ws:
        deadline = time.monotonic() + HEADER_TIMEOUT * 2
        pings = 0
        while time.monotonic() < deadline:  # the condition: well past the bound, the socket still answers
            ws.send(json.dumps({"action": "ping", "id": pings}))
            assert json.loads(ws.recv(timeout=10)) == {"type": "pong", "id": pings}
            pings += 1
            ws.ping().wait(timeout=10)


@pytest.mark.parametrize("path", ["/", "/app.js", "/api/health", "/api/openapi.json", "/api/tasks", "/nowhere"])
def test_dashboard_and_api_answers_carry_the_security_headers(machine: RunningMachine, path: str) -> None:
    request = urllib.request.Request(f"{machine.base_url}{path}")
    try:
        with urllib.request.urlopen(request, timeout=CEILING) as resp:
            headers = resp.headers
    except urllib.error.HTTPError as err:  # /api/tasks without a token: 401, from the gateway's authorizer
        headers = err.headers
    assert headers["x-frame-options"] == "DENY", path
    assert headers["x-content-type-options"] == "nosniff", path
    assert "frame-ancestors 'none'" in headers["content-security-policy"], path


@pytest.mark.browser
def test_the_api_docs_render_from_this_origin_only(machine: RunningMachine) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`make browser`; .ci/run does)")
    requested: list[str] = []
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.on("request", lambda r: requested.append(r.url))
            page.on("requestfailed", lambda r: problems.append(f"failed: {_describe(r)}"))
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.goto(f"{machine.base_url}/api/docs")
            # Swagger UI built the page from /api/openapi.json: its title and an operation of ours are there.
            page.locator(".swagger-ui .info .title").filter(has_text="Agent machine").wait_for(timeout=45_000)
            page.locator(".opblock-summary-path", has_text="/api/chat").first.wait_for(timeout=45_000)
        finally:
            browser.close()
    assert problems == [], requested  # no CSP violation, nothing blocked or failed
    assert requested and all(url.startswith(machine.base_url + "/") or url.startswith("data:") for url in requested)
    assert f"{machine.base_url}/api/docs/swagger-ui-bundle.js" in requested


def _describe(request: Request) -> str:
    return f"{request.url} ({request.failure})"


@pytest.mark.parametrize(
    ("name", "value"),
    [("API_TOKEN", "short-token"), ("GITHUB_WEBHOOK_SECRET", "short-secret")],
)
def test_a_start_with_a_short_secret_is_refused(tmp_path: Path, name: str, value: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | TEST_SECRETS
    env |= {name: value, "CLAUDE_CLI_PATH": str(FAKE_CLAUDE), "LOG_JSON": "false"}
    port = free_port()
    args = ["--port", str(port), "--data-dir", str(tmp_path / "data"), "--env-file", str(tmp_path / "no.env")]
    run = subprocess.run(
        [sys.executable, "-m", "local_runtime", *args, "--no-persist"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert f"refusing to start: {name} is {len(value)} characters long; use at least 16" in output
    assert value not in output  # the message names the secret, never its value
    assert "Agent machine is up" not in output
    with pytest.raises(OSError):  # nothing listens: it stopped before serving
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
