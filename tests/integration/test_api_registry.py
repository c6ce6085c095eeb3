"""Agents, skills and webhooks over the REST API: validation, built-ins, write-only secrets, audit."""

from __future__ import annotations

import json
from typing import Any

import pytest
from local_runtime.provision import Provisioned

from tests.integration.test_ingress_github import TOKEN, api_context, call

JSON = {**TOKEN, "content-type": "application/json"}


def send(method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return call(method, path, json.dumps(body).encode() if body is not None else b"", JSON)


def test_builtin_agents_listed_editable_and_resettable(stack: Provisioned) -> None:
    status, agents = send("GET", "/api/agents")
    assert status == 200
    assert {"brain", "planning", "executor"} <= {a["name"] for a in agents["items"]}
    assert all(a["builtin"] for a in agents["items"] if a["name"] in ("brain", "planning", "executor"))
    status, edited = send(
        "PUT",
        "/api/agents/brain",
        {"description": "Edited", "max_turns": 12, "builtin": False, "updated_by": "mallory"},
    )
    assert status == 200, edited
    assert (edited["description"], edited["builtin"], edited["updated_by"]) == ("Edited", True, "api-token")
    assert send("GET", "/api/agents/brain")[1]["max_turns"] == 12
    status, reset = send("POST", "/api/agents/brain/reset")
    assert status == 200 and reset["max_turns"] == 30
    send("PUT", "/api/agents/brain", {"max_turns": 5})
    status, default = send("DELETE", "/api/agents/brain")  # DELETE on a built-in resets it
    assert status == 200 and default["max_turns"] == 30
    assert send("GET", "/api/agents/brain")[1]["max_turns"] == 30
    assert send("POST", "/api/agents", {"name": "planning"})[0] == 409


def test_agent_crud(stack: Provisioned) -> None:
    spec = {
        "name": "reviewer",
        "description": "Reviews PRs",
        "allowed_tools": ["Read", "Bash(git diff:*)"],
        "permission_mode": "plan",
        "max_turns": 20,
    }
    status, created = send("POST", "/api/agents", spec)
    assert status == 201, created
    assert send("POST", "/api/agents", spec)[0] == 409
    status, updated = send("PUT", "/api/agents/reviewer", {**spec, "max_turns": 10})
    assert (status, updated["max_turns"]) == (200, 10)
    assert send("PUT", "/api/agents/reviewer", {**spec, "name": "other"})[0] == 422
    assert send("POST", "/api/agents/reviewer/reset")[0] == 409
    assert send("DELETE", "/api/agents/reviewer")[0] == 204
    assert send("GET", "/api/agents/reviewer")[0] == 404
    assert send("DELETE", "/api/agents/reviewer")[0] == 404
    assert send("PUT", "/api/agents/ghost", spec | {"name": "ghost"})[0] == 404


@pytest.mark.parametrize(
    "body",
    [
        {"name": "../etc"},
        {"name": "UPPER"},
        {"name": ""},
        {"name": "x" * 64},
        {"name": "ok", "max_turns": 0},
        {"name": "ok", "permission_mode": "yolo"},
        {"name": "ok", "allowed_tools": ["bad\ntool"]},
        {"name": "ok", "max_budget_usd": -1},
        {"description": "no name"},
    ],
)
def test_agent_validation(stack: Provisioned, body: dict[str, Any]) -> None:
    status, answer = send("POST", "/api/agents", body)
    assert status == 422, answer
    assert answer["error"]["code"] in ("invalid",)


def test_path_names_that_cannot_exist_are_404(stack: Provisioned) -> None:
    assert send("GET", "/api/agents/..%2F..")[0] == 404
    assert send("GET", "/api/skills/UPPER")[0] == 404


def test_skill_crud(stack: Provisioned) -> None:
    skill = {"name": "pytest", "description": "Run tests", "content": "# Use pytest -q", "agents": ["executor", "*"]}
    status, created = send("POST", "/api/skills", skill)
    assert status == 201, created
    assert send("POST", "/api/skills", skill)[0] == 409
    assert [s["name"] for s in send("GET", "/api/skills")[1]["items"]] == ["pytest"]
    assert send("PUT", "/api/skills/pytest", {**skill, "content": "new"})[1]["content"] == "new"
    assert send("POST", "/api/skills", {**skill, "name": "bad", "agents": ["../x"]})[0] == 422
    assert send("DELETE", "/api/skills/pytest")[0] == 204
    assert send("GET", "/api/skills/pytest")[0] == 404


def test_webhooks_builtins_listed_and_secrets_write_only(stack: Provisioned) -> None:
    status, listing = send("GET", "/api/webhooks")
    assert status == 200
    assert [(w["name"], w["builtin"], w["has_secret"]) for w in listing["items"]] == [
        ("github", True, True),
        ("jira", True, True),
        ("sentry", True, True),
    ]
    hook = {
        "name": "alerts",
        "agent": "planning",
        "secret": "s3cret-s3cret-s3cret",
        "filter": "$.level == 'error'",
        "prompt_template": "Investigate {payload.message}",
    }
    status, created = send("POST", "/api/webhooks", hook)
    assert status == 201, created
    everything = json.dumps(send("GET", "/api/webhooks")[1]) + json.dumps(send("GET", "/api/webhooks/alerts")[1])
    assert "s3cret" not in everything and "s3cret" not in json.dumps(created)
    assert send("GET", "/api/webhooks/alerts")[1]["has_secret"] is True
    # PUT without a secret keeps it.
    status, updated = send("PUT", "/api/webhooks/alerts", {k: v for k, v in hook.items() if k != "secret"})
    assert (status, updated["has_secret"]) == (200, True)
    assert send("POST", "/api/webhooks", hook)[0] == 409
    for name in ("github", "jira", "sentry"):
        assert send("DELETE", f"/api/webhooks/{name}")[0] == 409
        assert send("POST", "/api/webhooks", {**hook, "name": name})[0] == 409
    assert send("DELETE", "/api/webhooks/alerts")[0] == 204
    assert send("DELETE", "/api/webhooks/alerts")[0] == 404


@pytest.mark.parametrize(
    "change",
    [
        {"secret": None},
        {"secret": "short"},
        {"agent": "nobody"},
        {"filter": "$.a ==="},
        {"filter": "eval('x')"},
        {"prompt_template": "{os.environ}"},
        {"prompt_template": "{payload.a.}"},
        {"prompt_template": "{"},
        {"signature_header": "Bad Header\n"},
    ],
)
def test_webhook_validation(stack: Provisioned, change: dict[str, Any]) -> None:
    hook = {"name": "v", "agent": "brain", "secret": "0123456789abcdef", **change}
    status, answer = send("POST", "/api/webhooks", hook)
    assert status == 422, answer


def test_agent_in_use_by_a_webhook_cannot_be_deleted(stack: Provisioned) -> None:
    send("POST", "/api/agents", {"name": "triage"})
    send("POST", "/api/webhooks", {"name": "t", "agent": "triage", "secret": "0123456789abcdef"})
    status, answer = send("DELETE", "/api/agents/triage")
    assert status == 409 and "webhook" in answer["error"]["message"]


def test_every_change_is_audited_with_the_actor(stack: Provisioned) -> None:
    send("POST", "/api/agents", {"name": "auditee"})
    send("DELETE", "/api/agents/auditee")
    status, audit = send("GET", "/api/audit")
    assert status == 200
    entries = [(a["entry_kind"], a["entry_name"], a["action"], a["actor"]) for a in audit["items"]]
    assert entries == [("agent", "auditee", "delete", "api-token"), ("agent", "auditee", "put", "api-token")]


def test_actor_comes_from_the_authorizer_context(stack: Provisioned) -> None:
    from local_runtime.events import http_event
    from machine_api.handler import handler

    event = http_event(
        "POST", "/api/agents", body=json.dumps({"name": "byctx"}).encode(), headers=JSON, authorizer={"actor": "alice"}
    )
    assert handler(event, api_context())["statusCode"] == 201
    assert send("GET", "/api/agents/byctx")[1]["updated_by"] == "alice"
