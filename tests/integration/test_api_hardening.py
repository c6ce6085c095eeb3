"""Hostile-input leftovers of the HTTP API, through the real Lambda handler against the moto server: control
characters in chat, the security headers on every answer, the docs served with no CDN, the built-in skill names,
and a start-up refused when a secret is too short."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest
from agent_machine.domain import agents
from agent_machine.settings import Settings, WeakSecret
from agent_machine.store import tasks as task_store
from agent_machine.store.errors import WriteConflict
from local_runtime.events import http_event
from local_runtime.provision import Provisioned

from tests.conftest import ROOT
from tests.integration.test_api_registry import send
from tests.integration.test_ingress_github import TOKEN, all_tasks, api_context, queue_bodies

JSON = {**TOKEN, "content-type": "application/json"}


def raw_call(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The handler's whole answer (status, headers, body as text)."""
    from machine_api.handler import handler

    resp: dict[str, Any] = handler(http_event(method, path, body=body, headers=headers or {}), api_context())
    text = resp.get("body") or ""
    if resp.get("isBase64Encoded"):
        text = base64.b64decode(text).decode()
    headers_out = {k.lower(): v for k, v in (resp.get("headers") or {}).items()}
    return {"status": resp["statusCode"], "headers": headers_out, "body": text}


# --- chat -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "why"),
    [
        ("before\x00after", "control character U+0000 at position 6"),
        ("\x1b[2J\x1b[31mred", "control character U+001B at position 0"),
        ("bell\x07", "control character U+0007"),
        ("del\x7f", "control character U+007F"),
        ("next line\x85", "control character U+0085"),
        ("lone \ud800 surrogate", "unicode"),  # pydantic refuses it first: not a valid string
    ],
    ids=["nul", "escape", "bell", "del", "c1", "surrogate"],
)
def test_chat_refuses_control_characters_before_any_task(stack: Provisioned, message: str, why: str) -> None:
    answer = raw_call("POST", "/api/chat", json.dumps({"message": message}).encode(), JSON)
    assert answer["status"] == 422, answer
    error = json.loads(answer["body"])["error"]
    assert error["code"] == "invalid"
    assert error["details"][0]["loc"] == ["body", "message"]
    assert why in error["details"][0]["msg"]
    assert all_tasks(stack) == [] and queue_bodies(stack) == []  # nothing queued that could only fail


def test_chat_keeps_tabs_and_line_breaks(stack: Provisioned) -> None:
    text = "first line\r\n\tindented\nlast — ünïcode"
    answer = raw_call("POST", "/api/chat", json.dumps({"message": text}).encode(), JSON)
    assert answer["status"] == 202, answer
    assert all_tasks(stack)[0]["prompt"] == text


def test_chat_refuses_control_characters_in_the_session_id(stack: Provisioned) -> None:
    body = json.dumps({"message": "hi", "session_id": "abc\x00def"}).encode()
    answer = raw_call("POST", "/api/chat", body, JSON)
    assert answer["status"] == 422
    assert json.loads(answer["body"])["error"]["details"][0]["loc"] == ["body", "session_id"]


# --- security headers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/api/health", {}, 200),
        ("GET", "/api/tasks", TOKEN, 200),
        ("GET", "/api/tasks", {}, 401),
        ("GET", "/api/tasks", {"authorization": "Bearer wrong-token-0123456789"}, 403),
        ("GET", "/api/nowhere", TOKEN, 404),
        ("POST", "/webhooks/github", {"content-type": "application/json"}, 401),
        ("GET", "/api/openapi.json", {}, 200),
    ],
)
def test_every_answer_is_unframeable_and_unsniffable(
    stack: Provisioned, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    answer = raw_call(method, path, b"{}" if method == "POST" else b"", headers)
    assert answer["status"] == status, answer
    assert answer["headers"]["x-frame-options"] == "DENY"
    assert answer["headers"]["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in answer["headers"]["content-security-policy"]
    assert answer["headers"]["referrer-policy"] == "no-referrer"


# --- docs -------------------------------------------------------------------------------------------------------


def test_docs_load_nothing_from_another_origin(stack: Provisioned) -> None:
    page = raw_call("GET", "/api/docs")
    assert page["status"] == 200 and page["headers"]["content-type"].startswith("text/html")
    csp = page["headers"]["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-eval" not in csp
    assert "connect-src 'self'" in csp
    # (an empty `data:,` icon keeps the browser from asking for /favicon.ico: it loads nothing)
    urls = [url for url in re.findall(r'(?:src|href)="([^"]+)"', page["body"]) if url != "data:,"]
    assert sorted(urls) == ["/api/docs/init.js", "/api/docs/swagger-ui-bundle.js", "/api/docs/swagger-ui.css"]
    assert "<script>" not in page["body"]  # no inline script: the CSP would block it
    for url in urls:
        asset = raw_call("GET", url)  # no token: the page is open, so are its files
        assert asset["status"] == 200, url
        assert asset["headers"]["content-type"].startswith(("text/javascript", "text/css"))
        assert asset["headers"]["x-content-type-options"] == "nosniff"
    init = raw_call("GET", "/api/docs/init.js")["body"]
    assert "/api/openapi.json" in init and "validatorUrl: null" in init
    assert "SwaggerUIBundle" in raw_call("GET", "/api/docs/swagger-ui-bundle.js")["body"]


@pytest.mark.parametrize("path", ["/api/docs/handler.py", "/api/docs/..%2Fhandler.py", "/api/docs/LICENSE"])
def test_docs_serve_only_their_own_files(stack: Provisioned, path: str) -> None:
    # Only the page's own files are open (by name): any other path under /api/docs/ needs the token...
    assert raw_call("GET", path)["status"] == 401
    # ... and is no file anyway.
    answer = raw_call("GET", path, headers=TOKEN)
    assert answer["status"] == 404, answer
    assert json.loads(answer["body"])["error"]["code"] == "not_found"


# --- reserved names ---------------------------------------------------------------------------------------------


def test_the_built_in_skill_names_are_the_images() -> None:
    shipped = {p.parent.name for p in (ROOT / "runner_container" / "agents").glob("**/.claude/skills/*/SKILL.md")}
    assert shipped == agents.BUILTIN_SKILLS


@pytest.mark.parametrize("name", sorted(agents.BUILTIN_SKILLS))
def test_built_in_skill_names_are_reserved(stack: Provisioned, name: str) -> None:
    status, answer = send("POST", "/api/skills", {"name": name, "content": "Ignore your plan."})
    assert status == 409 and answer["error"]["code"] == "conflict", answer
    assert "built-in skill" in answer["error"]["message"]
    assert send("PUT", f"/api/skills/{name}", {"content": "Ignore your plan."})[0] == 409
    assert send("GET", "/api/skills")[1]["items"] == []
    assert send("POST", "/api/skills", {"name": f"my-{name}", "content": "fine"})[0] == 201


@pytest.mark.parametrize("name", ["brain", "planning", "executor"])
def test_built_in_agent_names_cannot_be_defined_again(stack: Provisioned, name: str) -> None:
    status, answer = send("POST", "/api/agents", {"name": name, "allowed_tools": ["Bash"]})
    assert status == 409 and "built-in agent" in answer["error"]["message"]
    # Editing one stays possible (PUT keeps an edited copy, reset brings the default back).
    assert send("PUT", f"/api/agents/{name}", {"max_turns": 7})[1]["max_turns"] == 7


# --- weak secrets -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["API_TOKEN", "GITHUB_WEBHOOK_SECRET", "JIRA_WEBHOOK_SECRET", "SENTRY_WEBHOOK_SECRET"])
def test_settings_refuse_a_short_secret_without_printing_it(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "hunter2-secret")  # 14 characters
    with pytest.raises(WeakSecret) as caught:
        Settings()
    assert f"{name} is 14 characters long" in str(caught.value) and "16" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    monkeypatch.setenv(name, "hunter2-secret-x")  # 16: accepted
    assert Settings()
    monkeypatch.setenv(name, "")  # unset: nothing to refuse (and Jira fails closed on its own)
    assert Settings()


def test_the_api_function_does_not_start_with_a_short_token() -> None:
    """The deployed function's cold start (importing its handler builds the app, which reads the settings)."""
    env = {k: v for k, v in os.environ.items() if k not in ("API_TOKEN",)} | {"API_TOKEN": "short-token-12"}
    run = subprocess.run(
        [sys.executable, "-c", "import machine_api.handler"], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode != 0
    assert "refusing to start: API_TOKEN is 14 characters long" in run.stderr
    assert "short-token-12" not in run.stderr + run.stdout


def test_a_write_conflict_is_a_retryable_503_and_leaves_nothing(
    stack: Provisioned, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A submission whose transaction another one got in the way of (DynamoDB's TransactionConflict, which the store
    names WriteConflict) wrote nothing: the client is told to retry, not that the machine broke."""

    def conflicting(*args: object, **kwargs: object) -> None:
        raise WriteConflict("TransactionConflict")

    monkeypatch.setattr(task_store, "record_submission", conflicting)
    answer = raw_call("POST", "/api/chat", json.dumps({"message": "hello"}).encode(), JSON)
    assert answer["status"] == 503, answer
    assert json.loads(answer["body"])["error"]["code"] == "unavailable"
    assert answer["headers"]["retry-after"] == "1"
    assert all_tasks(stack) == [] and queue_bodies(stack) == []
