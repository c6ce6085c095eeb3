"""Sentry webhooks: every sample signed right -> 2xx (the legacy plugin too), wrong -> 401, planning tasks with
title, culprit, stack and link, installation answered, legacy unsigned only when allowed, alert storms -> one task."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from agent_machine.domain.webhooks.prompts import data_blocks
from local_runtime.provision import Provisioned

from tests.conftest import WEBHOOKS
from tests.integration.test_ingress_github import SECRET, all_tasks, call, queue_bodies

SENTRY_FILES = sorted((WEBHOOKS / "sentry").glob("*.json"))


def hexsig(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def resource_of(path: Path) -> str | None:
    name = path.name.split("__")[0]
    return None if name.startswith("legacy") else name


def deliver(body: bytes, resource: str | None, request_id: str, *, signature: str | None = "auto") -> tuple[int, Any]:
    headers = {"content-type": "application/json", "request-id": request_id, "sentry-hook-timestamp": "1700000000"}
    if resource:
        headers["sentry-hook-resource"] = resource
    if signature is not None:
        headers["sentry-hook-signature"] = hexsig(body) if signature == "auto" else signature
    return call("POST", "/webhooks/sentry", body, headers)


def compact(name: str, **changes: Any) -> bytes:
    data = json.loads((WEBHOOKS / "sentry" / name).read_bytes())
    data.update(changes)
    return json.dumps(data, separators=(",", ":")).encode()  # what Sentry puts on the wire


@pytest.mark.parametrize("path", SENTRY_FILES, ids=lambda p: p.name)
def test_every_sample_signed_right_is_2xx_and_signed_wrong_is_401(stack: Provisioned, path: Path) -> None:
    body = path.read_bytes()
    status, answer = deliver(body, resource_of(path), f"ok-{path.stem}")
    assert 200 <= status < 300, answer
    status, answer = deliver(body, resource_of(path), f"bad-{path.stem}", signature=hexsig(body, "wrong"))
    assert (status, answer["error"]["code"]) == (401, "bad_signature")


def test_documented_vector(stack: Provisioned) -> None:
    wire = (
        b'{"action":"created","data":{"comment":"adding a comment","project_slug":"sentry","comment_id":1234,'
        b'"issue_id":100,"timestamp":"2022-03-02T21:51:44.118160Z"},"installation":{"uuid":'
        b'"eac5a0ae-60ec-418f-9318-46dc5e7e52ec"},"actor":{"type":"user","id":1,"name":"colleen"}}'
    )
    sig = "1afd573c2dd8007fcf471d13cf5e608a43ab8d4d4d532274c5726405344bd846"
    assert deliver(wire, "comment", "vec", signature=sig)[0] == 200
    assert deliver(wire, "comment", "vec-prefixed", signature="sha256=" + sig)[0] == 401


@pytest.mark.parametrize(
    ("name", "resource"),
    [
        ("event_alert__triggered.json", "event_alert"),
        ("error__created.json", "error"),
        ("issue__created.json", "issue"),
    ],
)
def test_errors_become_planning_tasks_with_title_culprit_stack_and_link(
    stack: Provisioned, name: str, resource: str
) -> None:
    status, answer = deliver(compact(name), resource, f"r-{name}")
    assert (status, answer["agent"]) == (202, "planning")
    task = all_tasks(stack)[0]
    assert task["source"] == "sentry"
    assert task["repo"]["sentry_url"].startswith("https://")
    blocks = data_blocks(task["prompt"])
    assert any(k.endswith(".title") for k in blocks)
    assert any(k.endswith(".culprit") for k in blocks)
    if resource == "error":
        assert 'File "/runner", line 3' in blocks["error.stack"]
        assert "ReferenceError: blooopy is not defined" in blocks["error.stack"]
    assert queue_bodies(stack) == [{"task_id": answer["task_id"]}]


def test_alert_storm_about_one_issue_makes_one_task(stack: Provisioned) -> None:
    alert = json.loads(compact("event_alert__triggered.json"))
    bodies = []
    for i in range(3):  # three events of one Sentry issue, each alerting
        alert["data"]["event"]["event_id"] = f"{i:032x}"
        bodies.append(json.dumps(alert, separators=(",", ":")).encode())
    answers = [deliver(body, "event_alert", f"storm-{i}")[1] for i, body in enumerate(bodies)]
    assert [a["status"] for a in answers] == ["task_created", "ignored", "ignored"]
    again = deliver(bodies[0], "event_alert", "storm-0-second-integration")[1]  # the first alert, delivered twice
    assert (again["status"], again["task_id"]) == ("duplicate", answers[0]["task_id"])
    assert len(all_tasks(stack)) == 1


def test_installation_answered_and_resolved_metric_alert_ignored(stack: Provisioned) -> None:
    assert deliver(compact("installation__created.json"), "installation", "inst")[1]["status"] == "answered"
    assert deliver(compact("metric_alert__resolved.json"), "metric_alert", "res")[1]["status"] == "ignored"
    status, answer = deliver(compact("metric_alert__resolved.json", action="critical"), "metric_alert", "crit")
    assert (status, answer["agent"]) == (202, "planning")


def test_legacy_unsigned_only_when_allowed(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_machine.settings import get_settings

    body = (WEBHOOKS / "sentry" / "legacy_webhooks_plugin__v9_event.json").read_bytes()
    status, answer = deliver(body, None, "legacy-1", signature=None)
    assert (status, answer["error"]["code"]) == (401, "bad_signature")
    monkeypatch.setenv("SENTRY_ALLOW_LEGACY_UNSIGNED", "true")
    get_settings.cache_clear()
    status, answer = deliver(body, None, "legacy-2", signature=None)
    assert (status, answer["agent"]) == (202, "planning")
    stack_block = data_blocks(all_tasks(stack)[0]["prompt"])["error.stack"]
    assert "build_msg" in stack_block
    # Allowing the legacy plugin does not let an unsigned integration-platform payload in.
    status, _ = deliver(compact("issue__created.json"), "issue", "legacy-3", signature=None)
    assert status == 401
    status, _ = deliver(compact("issue__created.json"), None, "legacy-4", signature=None)
    assert status == 401
