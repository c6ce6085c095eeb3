"""The app's own checks, without AWS: size before reading, bearer token (401 / 403), JSON-only API bodies, the
error shape, and the Lambda authorizer's answers."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from local_runtime.events import LambdaContext, authorizer_event, http_event


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from agent_machine.settings import get_settings

    monkeypatch.setenv("API_TOKEN", "unit-api-token-0123456789")
    monkeypatch.delenv("SECRETS_NAME", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def api_context() -> Any:
    return LambdaContext("api")


def call(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> tuple[int, Any]:
    from machine_api.handler import handler

    resp = handler(http_event(method, path, body=body, headers=headers or {}), api_context())
    raw = resp.get("body") or ""
    if resp.get("isBase64Encoded"):
        raw = base64.b64decode(raw).decode()
    return resp["statusCode"], json.loads(raw) if raw.startswith("{") else raw


def test_content_length_over_25mb_is_413_for_every_route() -> None:
    for path in ("/webhooks/github", "/webhooks/x", "/api/chat", "/api/agents", "/nowhere"):
        status, body = call(
            "POST", path, b"{}", {"content-length": str(25 * 1024 * 1024 + 1), "content-type": "application/json"}
        )
        assert (status, body["error"]["code"]) == (413, "payload_too_large")


def test_token_checks() -> None:
    assert call("GET", "/api/tasks")[0] == 401
    assert call("GET", "/api/tasks", headers={"authorization": "Bearer nope"})[0] == 403
    status, body = call("GET", "/api/tasks", headers={"authorization": "Token unit-api-token-0123456789"})
    assert status == 401 and body == {"error": {"code": "unauthorized", "message": body["error"]["message"]}}
    assert call("GET", "/api/health")[0] == 200
    assert call("OPTIONS", "/api/tasks")[0] != 401  # CORS preflight never needs the token


def test_api_bodies_must_be_json() -> None:
    headers = {"authorization": "Bearer unit-api-token-0123456789", "content-type": "text/plain"}
    status, body = call("POST", "/api/chat", b"hello", headers)
    assert (status, body["error"]["code"]) == (415, "unsupported_media_type")


def test_unknown_routes_use_the_error_shape() -> None:
    status, body = call("GET", "/nowhere")
    assert status == 404 and body["error"]["code"] == "not_found"


def test_docs_are_served() -> None:
    status, html = call("GET", "/api/docs")
    assert status == 200 and "swagger" in str(html).lower()


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"authorization": "Bearer unit-api-token-0123456789"}, True),
        ({"Authorization": "Bearer unit-api-token-0123456789"}, True),
        ({"authorization": "Bearer unit-api-token-01234567892"}, False),
        ({}, False),
    ],
)
def test_authorizer(headers: dict[str, str], allowed: bool) -> None:
    from machine_api.authorizer import handler

    result = handler(authorizer_event("GET/api/status", "GET /api/{proxy+}", headers), LambdaContext("auth"))
    assert result["isAuthorized"] is allowed
    assert isinstance(result["context"], dict)


def test_handler_module_stays_light() -> None:
    import subprocess
    import sys

    code = "import sys, machine_api.handler; print(sorted(m for m in ('boto3', 'botocore') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
