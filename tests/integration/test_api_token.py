"""One API token check behind three doors: the HTTP API's Lambda authorizer, the API app's own guard and WebSocket
`$connect` give the same verdict for the same presented token, each in its own answer (deny / 401 / 403), and each
follows the token in Secrets Manager when the environment has none."""

from __future__ import annotations

from typing import Any

import pytest
from agent_machine import api_token
from agent_machine.api_token import TokenCheck
from agent_machine.store import connections
from local_runtime.events import LambdaContext, authorizer_event, new_connection_id, websocket_event
from local_runtime.provision import Provisioned
from machine_api.authorizer import handler as authorizer
from machine_ws.handler import handler as ws_handler

from tests.conftest import TEST_SECRETS, reset_caches
from tests.integration.test_ingress_github import call

TOKEN = TEST_SECRETS["API_TOKEN"]

# (Authorization header or None, expected verdict)
CASES: list[tuple[str | None, TokenCheck]] = [
    (None, TokenCheck.MISSING),
    ("", TokenCheck.MISSING),
    ("Bearer ", TokenCheck.MISSING),
    ("Basic dGVzdC1hcGktdG9rZW4tMDE=", TokenCheck.MISSING),
    (TOKEN, TokenCheck.MISSING),  # no scheme
    (f"Bearer {TOKEN}", TokenCheck.OK),
    (f"bearer {TOKEN}", TokenCheck.OK),
    (f"BEARER   {TOKEN}  ", TokenCheck.OK),
    ("Bearer wrong", TokenCheck.INVALID),
    (f"Bearer {TOKEN}x", TokenCheck.INVALID),
    (f"Bearer {TOKEN[:-1]}", TokenCheck.INVALID),
    ("Bearer t\u00e9st-api-token-01", TokenCheck.INVALID),  # not ASCII: refused, not an error
]

API_ANSWER = {TokenCheck.OK: 200, TokenCheck.MISSING: 401, TokenCheck.INVALID: 403}
WS_ANSWER = {
    TokenCheck.OK: {"statusCode": 200},
    TokenCheck.MISSING: {"statusCode": 401, "body": "token required"},
    TokenCheck.INVALID: {"statusCode": 403, "body": "forbidden"},
}


def _authorizer(header: str | None) -> dict[str, Any]:
    headers = {"authorization": header} if header is not None else {}
    result: dict[str, Any] = authorizer(
        authorizer_event("GET/api/tasks", "GET /api/{proxy+}", headers, path="/api/tasks"), LambdaContext("authorizer")
    )
    return result


def _api(header: str | None) -> int:
    status, _ = call("GET", "/api/tasks", headers={"authorization": header} if header is not None else {})
    return status


def _ws(*, header: str | None = None, query: str = "") -> dict[str, Any]:
    headers = {"Authorization": header} if header is not None else {}
    result: dict[str, Any] = ws_handler(
        websocket_event("$connect", new_connection_id(), query=query, headers=headers), LambdaContext("ws")
    )
    return result


def _verdicts(header: str | None, expected: TokenCheck) -> None:
    assert api_token.check_bearer(header) is expected
    answer = _authorizer(header)
    assert answer["isAuthorized"] is (expected is TokenCheck.OK)
    assert answer["context"] == ({"actor": "api-token"} if expected is TokenCheck.OK else {"reason": expected.value})
    assert _api(header) == API_ANSWER[expected]
    assert _ws(header=header) == WS_ANSWER[expected]


@pytest.mark.parametrize(("header", "expected"), CASES, ids=repr)
def test_the_three_doors_agree(stack: Provisioned, header: str | None, expected: TokenCheck) -> None:
    before = connections.count()
    _verdicts(header, expected)
    assert connections.count() == before + (1 if expected is TokenCheck.OK else 0)


def test_websocket_takes_the_token_from_the_query_first(stack: Provisioned) -> None:
    assert _ws(query=f"token={TOKEN}") == WS_ANSWER[TokenCheck.OK]
    assert _ws(query="token=nope", header=f"Bearer {TOKEN}") == WS_ANSWER[TokenCheck.INVALID]
    assert _ws(query="token=", header=f"Bearer {TOKEN}") == WS_ANSWER[TokenCheck.OK]  # empty: the header then
    assert _ws(query="token=", header="Bearer nope") == WS_ANSWER[TokenCheck.INVALID]
    assert _ws(query="token=") == WS_ANSWER[TokenCheck.MISSING]


def test_the_token_from_secrets_manager(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("API_TOKEN")
    reset_caches()
    _verdicts(f"Bearer {TOKEN}", TokenCheck.OK)
    _verdicts("Bearer wrong", TokenCheck.INVALID)


def test_no_token_configured_fails_closed(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("API_TOKEN")
    monkeypatch.delenv("SECRETS_NAME")
    reset_caches()
    _verdicts(f"Bearer {TOKEN}", TokenCheck.INVALID)
    _verdicts(None, TokenCheck.MISSING)
