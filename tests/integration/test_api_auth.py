"""The API token: the app refuses a missing (401) or wrong (403) token on every /api/* route but the open ones,
and the Lambda authorizer denies the same requests."""

from __future__ import annotations

import pytest
from local_runtime.events import LambdaContext, authorizer_event
from local_runtime.provision import Provisioned

from tests.integration.test_ingress_github import api_context, call

PROTECTED = [
    ("GET", "/api/status"),
    ("GET", "/api/tasks"),
    ("GET", "/api/tasks/x"),
    ("POST", "/api/tasks/x/stop"),
    ("POST", "/api/tasks/x/approve"),
    ("POST", "/api/chat"),
    ("GET", "/api/sessions"),
    ("GET", "/api/sessions/x"),
    ("GET", "/api/agents"),
    ("POST", "/api/agents"),
    ("DELETE", "/api/agents/x"),
    ("GET", "/api/skills"),
    ("GET", "/api/webhooks"),
    ("POST", "/api/webhooks"),
    ("GET", "/api/costs"),
    ("GET", "/api/events"),
    ("GET", "/api/audit"),
    ("GET", "/api/no-such-route"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_missing_token_is_401_and_wrong_token_403(stack: Provisioned, method: str, path: str) -> None:
    status, answer = call(method, path, b"{}", {"content-type": "application/json"})
    assert (status, answer["error"]["code"]) == (401, "unauthorized")
    for header in (
        "Bearer wrong",
        "Bearer test-api-token-01-and-more",
        "Basic dGVzdC1hcGktdG9rZW4tMDE=",
        "test-api-token-01",
        "Bearer ",
        "Bearer tëst",
    ):
        status, answer = call(method, path, b"{}", {"content-type": "application/json", "authorization": header})
        assert status in (401, 403), header
        assert answer["error"]["code"] in ("unauthorized", "forbidden")


@pytest.mark.parametrize("path", ["/api/health", "/api/config", "/api/openapi.json", "/api/docs"])
def test_open_paths_need_no_token(stack: Provisioned, path: str) -> None:
    from local_runtime.events import http_event
    from machine_api.handler import handler

    resp = handler(http_event("GET", path), api_context())
    assert resp["statusCode"] == 200


def test_health_and_config(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_machine.settings import get_settings

    status, health = call("GET", "/api/health")
    assert (status, health["status"]) == (200, "ok")
    monkeypatch.setenv("WEBSOCKET_URL", "wss://example.test/ws")
    get_settings.cache_clear()
    status, config = call("GET", "/api/config")
    assert status == 200
    assert config["websocket_url"] == "wss://example.test/ws"
    assert set(config) == {"websocket_url", "machine_id", "version"}


def test_openapi_documents_the_routes_and_the_bearer_scheme(stack: Provisioned) -> None:
    status, spec = call("GET", "/api/openapi.json")
    assert status == 200
    for path in (
        "/webhooks/github",
        "/webhooks/jira",
        "/webhooks/sentry",
        "/webhooks/{name}",
        "/api/tasks",
        "/api/tasks/{task_id}",
        "/api/tasks/{task_id}/stop",
        "/api/tasks/{task_id}/approve",
        "/api/chat",
        "/api/sessions/{session_id}",
        "/api/agents/{name}/reset",
        "/api/webhooks",
        "/api/costs",
        "/api/events",
        "/api/status",
    ):
        assert path in spec["paths"], path
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        ("Bearer test-api-token-01", True),
        ("bearer test-api-token-01", True),
        ("Bearer wrong", False),
        ("Basic dGVzdC1hcGktdG9rZW4tMDE=", False),
        (None, False),
        ("Bearer ", False),
    ],
)
def test_authorizer(stack: Provisioned, header: str | None, allowed: bool) -> None:
    from machine_api.authorizer import handler

    headers = {"authorization": header} if header is not None else {}
    event = authorizer_event("GET/api/tasks", "GET /api/{proxy+}", headers, path="/api/tasks")
    result = handler(event, LambdaContext("authorizer"))
    assert result["isAuthorized"] is allowed
    if allowed:
        assert result["context"] == {"actor": "api-token"}


def test_authorizer_denies_when_no_token_is_configured(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_machine import secrets
    from machine_api.authorizer import handler

    monkeypatch.setattr(secrets, "get_secret", lambda name: None)
    event = authorizer_event("GET/api/tasks", "GET /api/{proxy+}", {"authorization": "Bearer test-api-token-01"})
    assert handler(event, LambdaContext("authorizer"))["isAuthorized"] is False
    status, _ = call("GET", "/api/tasks", headers={"authorization": "Bearer test-api-token-01"})
    assert status == 403


def test_authorizer_denies_when_the_secret_lookup_fails(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_machine import secrets
    from machine_api.authorizer import handler

    def broken(name: str) -> str:
        raise RuntimeError("secrets manager down")

    monkeypatch.setattr(secrets, "get_secret", broken)
    event = authorizer_event("GET/api/tasks", "GET /api/{proxy+}", {"authorization": "Bearer test-api-token-01"})
    assert handler(event, LambdaContext("authorizer"))["isAuthorized"] is False
