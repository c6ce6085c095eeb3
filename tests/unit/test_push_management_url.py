"""The management API endpoint comes from the WebSocket API's own endpoint and stage (AWS and LocalStack alike):
the template passes `${WebSocketApi.ApiEndpoint}/${StageName}`, the code speaks it over HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from agent_machine.push import Pusher, management_url

from tests.conftest import reset_caches
from tests.unit.test_template import TEMPLATE, props, template

FROM_API = {"Fn::Sub": "${WebSocketApi.ApiEndpoint}/${StageName}"}


@pytest.mark.parametrize(
    ("websocket_url", "expected"),
    [
        # AWS: ApiEndpoint of a WebSocket API is wss://<id>.execute-api.<region>.amazonaws.com
        (
            "wss://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/prod",
            "https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/prod",
        ),
        (
            "wss://a1b2c3d4e5.execute-api.cn-north-1.amazonaws.com.cn/prod",
            "https://a1b2c3d4e5.execute-api.cn-north-1.amazonaws.com.cn/prod",
        ),
        # LocalStack: its own host and port, plain ws
        ("ws://localhost.localstack.cloud:4510/local", "http://localhost.localstack.cloud:4510/local"),
        (
            "ws://a1b2c3d4.execute-api.localhost.localstack.cloud:4566/local",
            "http://a1b2c3d4.execute-api.localhost.localstack.cloud:4566/local",
        ),
        # Scheme case, a trailing slash, a query (?token=...) and a fragment do not reach the management API.
        ("WSS://abc.example.test/stage/?token=secret#x", "https://abc.example.test/stage"),
        ("https://abc.example.test/stage", "https://abc.example.test/stage"),
        ("wss://abc.example.test", "https://abc.example.test"),
        # Nothing usable: pushing is off rather than aimed somewhere wrong.
        (None, None),
        ("", None),
        ("   ", None),
        ("ftp://abc.example.test/stage", None),
        ("abc.example.test/stage", None),
        ("wss:///stage", None),
    ],
)
def test_derived_from_the_websocket_url(websocket_url: str | None, expected: str | None) -> None:
    assert management_url(websocket_url) == expected


def test_an_explicit_management_url_wins() -> None:
    explicit = "http://127.0.0.1:8123"  # the local runtime's management API
    assert management_url("wss://abc.example.test/prod", explicit) == explicit
    assert management_url(None, "wss://custom.example.test/ws/") == "https://custom.example.test/ws"
    assert management_url("wss://abc.example.test/prod", "") == "https://abc.example.test/prod"


def test_the_pusher_uses_the_derived_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBSOCKET_MANAGEMENT_URL", raising=False)
    monkeypatch.setenv("WEBSOCKET_URL", "wss://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/prod")
    reset_caches()
    try:
        assert Pusher().endpoint_url == "https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/prod"
        monkeypatch.setenv("WEBSOCKET_MANAGEMENT_URL", "http://127.0.0.1:9")
        reset_caches()
        assert Pusher().endpoint_url == "http://127.0.0.1:9"
        monkeypatch.delenv("WEBSOCKET_MANAGEMENT_URL")
        monkeypatch.delenv("WEBSOCKET_URL")
        reset_caches()
        assert Pusher().endpoint_url is None
    finally:
        monkeypatch.undo()
        reset_caches()


def _container_env() -> dict[str, Any]:
    (container,) = props("RunnerTaskDefinition")["ContainerDefinitions"]
    return {item["Name"]: item.get("Value") for item in container["Environment"]}


def test_lambda_and_fargate_get_the_websocket_apis_own_endpoint() -> None:
    global_env = template()["Globals"]["Function"]["Environment"]["Variables"]
    assert global_env["WEBSOCKET_URL"] == FROM_API
    assert _container_env()["WEBSOCKET_URL"] == FROM_API
    assert "WEBSOCKET_MANAGEMENT_URL" not in global_env and "WEBSOCKET_MANAGEMENT_URL" not in _container_env()
    assert template()["Outputs"]["WebSocketUrl"]["Value"] == FROM_API


def test_no_websocket_address_is_built_by_hand() -> None:
    assert "${WebSocketApi}.execute-api" not in TEMPLATE.read_text()
