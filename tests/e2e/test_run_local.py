"""Issue 2's outcome, checked the way a newcomer would: the local runtime as a real process."""

from __future__ import annotations

import signal
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import RunningMachine, start_machine

pytestmark = pytest.mark.e2e


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_health_config_dashboard_and_auth(local_machine: RunningMachine) -> None:
    base = local_machine.base_url
    assert get(f"{base}/api/health")[0] == 200
    status, body = get(f"{base}/api/config")
    assert status == 200 and b"websocket_url" in body and b"/ws" in body
    status, body = get(f"{base}/")
    assert status == 200 and b"<html" in body.lower()
    assert get(f"{base}/api/status")[0] == 401
    assert get(f"{base}/api/status", {"Authorization": "Bearer wrong"})[0] in (401, 403)
    status, body = get(f"{base}/api/status", {"Authorization": f"Bearer {local_machine.api_token}"})
    assert status == 200 and b"machine_id" in body


def test_data_survives_a_restart_and_shutdown_is_clean(tmp_path: Path) -> None:
    machine = start_machine(tmp_path)
    try:
        status, created = machine.api("POST", "/api/chat", {"message": "[[text]] remember me"})
        assert status == 202 and isinstance(created, dict)
        task_id = created["task_id"]
        for _ in range(150):
            _, detail = machine.api("GET", f"/api/tasks/{task_id}")
            assert isinstance(detail, dict)
            if detail["task"]["status"] == "completed":
                break
            time.sleep(0.2)
        assert isinstance(detail, dict) and detail["task"]["status"] == "completed"
    finally:
        assert machine.stop(signal.SIGINT) == 0, machine.logs()
    assert "saved state" in machine.logs()

    again = start_machine(tmp_path, port=machine.port)
    try:
        status, detail = again.api("GET", f"/api/tasks/{task_id}")
        assert status == 200 and isinstance(detail, dict)
        task = detail["task"]
        assert len(detail["output"]) > 2  # the streamed output came back too
        assert task["status"] == "completed" and task["cost_usd"] > 0
    finally:
        again.stop()
