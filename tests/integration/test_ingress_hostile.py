"""Hostile input on the webhook routes: clear 4xx JSON errors, never a 5xx, never a partial write."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from agent_machine.domain.webhooks.prompts import data_blocks
from local_runtime.provision import Provisioned

from tests.conftest import WEBHOOKS
from tests.integration.test_ingress_github import (
    all_tasks,
    api_context,
    call,
    comment_payload,
    deliver,
    queue_bodies,
    sign,
)

MB = 1024 * 1024


def deliveries(stack: Provisioned) -> list[dict[str, Any]]:
    from agent_machine import aws
    from agent_machine.store._dynamo import from_item

    return [from_item(i) for i in aws.dynamodb().scan(TableName=stack.tables["EventsTable"])["Items"]]


@pytest.fixture
def nothing_written(stack: Provisioned) -> Iterator[Provisioned]:
    yield stack
    assert all_tasks(stack) == []
    assert deliveries(stack) == []
    assert queue_bodies(stack) == []


def test_truncated_json_is_400(nothing_written: Provisioned) -> None:
    body = (WEBHOOKS / "github" / "issues__opened.json").read_bytes()[:500]
    status, answer = deliver("issues", body, "trunc")
    assert (status, answer["error"]["code"]) == (400, "malformed_json")


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deep_nesting_is_400_not_recursion_error(nothing_written: Provisioned, depth: int) -> None:
    body = b"[" * depth + b"]" * depth
    status, answer = deliver("issues", body, f"deep-{depth}")
    assert status == 400, answer
    obj = b'{"a":' * depth + b"1" + b"}" * depth
    status, answer = deliver("issues", obj, f"deep-obj-{depth}")
    assert status == 400, answer


def test_huge_content_length_is_413_before_reading_or_hashing(
    nothing_written: Provisioned, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent_machine.domain.webhooks import signatures

    def boom(*args: object) -> str:
        raise AssertionError("the body was hashed")

    monkeypatch.setattr(signatures, "_digest", boom)
    body = b'{"zen": "tiny"}'
    headers = {
        "content-type": "application/json",
        "x-github-event": "ping",
        "x-hub-signature-256": "sha256=00",
        "content-length": str(26 * MB),
    }
    status, answer = call("POST", "/webhooks/github", body, headers)
    assert (status, answer["error"]["code"]) == (413, "payload_too_large")
    for path in ("/webhooks/jira", "/webhooks/sentry", "/webhooks/mine", "/api/chat"):
        assert call("POST", path, body, {**headers, "authorization": "Bearer test-api-token-01"})[0] == 413


def test_huge_body_without_content_length_is_413(nothing_written: Provisioned) -> None:
    body = b'{"a":"' + b"x" * (25 * MB) + b'"}'
    headers = {"content-type": "application/json", "x-github-event": "ping", "x-hub-signature-256": sign(body)}
    status, answer = call("POST", "/webhooks/github", body, headers)
    assert (status, answer["error"]["code"]) == (413, "payload_too_large")


def test_bad_content_length_is_400(nothing_written: Provisioned) -> None:
    status, _ = call("POST", "/webhooks/github", b"{}", {"content-type": "application/json", "content-length": "x"})
    assert status == 400


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data; boundary=x", ""])
def test_wrong_content_type_is_415(nothing_written: Provisioned, content_type: str) -> None:
    body = (WEBHOOKS / "github" / "ping__ping.json").read_bytes()
    status, answer = deliver("ping", body, "ct", content_type=content_type)
    assert (status, answer["error"]["code"]) == (415, "unsupported_media_type")


def test_form_without_payload_is_400(nothing_written: Provisioned) -> None:
    status, answer = deliver("ping", b"zen=hello", "form", content_type="application/x-www-form-urlencoded")
    assert (status, answer["error"]["code"]) == (400, "malformed_json")


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"null", b"42"])
def test_non_object_json_is_422(nothing_written: Provisioned, body: bytes) -> None:
    status, answer = deliver("issues", body, "nonobj")
    assert (status, answer["error"]["code"]) == (422, "invalid_payload")


def test_wrong_field_types_are_422(nothing_written: Provisioned) -> None:
    payload = comment_payload("@claude hi")
    payload["issue"]["number"] = {"not": "a number"}
    status, answer = deliver("issue_comment", payload, "types")
    assert (status, answer["error"]["code"]) == (422, "invalid_payload")
    assert "number" in answer["error"]["message"]


def test_invalid_utf8_is_400(nothing_written: Provisioned) -> None:
    # API Gateway hands bytes that are not UTF-8 to Lambda base64-encoded.
    from local_runtime.events import http_event
    from machine_api.handler import handler

    body = b'{"action": "\xff\xfe"}'
    event = http_event(
        "POST",
        "/webhooks/github",
        body=b"{}",
        headers={"content-type": "application/json", "x-github-event": "issues", "x-hub-signature-256": sign(body)},
    )
    event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
    resp = handler(event, api_context())
    assert resp["statusCode"] == 400
    assert json.loads(resp["body"])["error"]["code"] == "malformed_json"


def test_null_fields_are_tolerated(stack: Provisioned) -> None:
    payload = comment_payload("@claude hello")
    payload["issue"].update({"body": None, "labels": None, "title": None, "user": None, "html_url": None})
    payload["comment"].update({"user": None, "html_url": None})
    payload["repository"]["clone_url"] = None
    payload["sender"] = None
    status, answer = deliver("issue_comment", payload, "nulls")
    assert status == 202, answer
    blocks = data_blocks(all_tasks(stack)[0]["prompt"])
    assert blocks["issue.body"] == "(empty)"


def test_unicode_and_control_characters_survive_safely(stack: Provisioned) -> None:
    text = "@claude 修复 ‮RTL‬ emoji 🚀 zero\u200bwidth nul\x00 bell\x07 lone \ud800 surrogate"
    body = json.dumps(comment_payload(text)).encode()  # ensure_ascii: the lone surrogate travels as \ud800
    status, answer = deliver("issue_comment", body, "unicode-é-🚀")
    assert status == 202, answer
    assert answer["delivery_id"].startswith("sha256-")  # a delivery id that is not an id is replaced by a hash
    quoted = data_blocks(all_tasks(stack)[0]["prompt"])["comment.body"]
    assert "修复" in quoted and "🚀" in quoted
    assert "\x00" not in quoted and "\x07" not in quoted
    assert "\ud800" not in quoted


def test_huge_text_fields_are_truncated_in_the_prompt(stack: Provisioned) -> None:
    payload = comment_payload("@claude " + "A" * 2_000_000)
    status, _ = deliver("issue_comment", payload, "big-text")
    assert status == 202
    task = all_tasks(stack)[0]
    assert len(task["prompt"]) < 100_000
    assert "more characters truncated" in task["prompt"]
    assert len(task["title"]) <= 80


def test_every_bad_request_is_json_and_never_5xx(nothing_written: Provisioned) -> None:
    cases: list[tuple[str, bytes, dict[str, str]]] = [
        ("/webhooks/github", b"{", {"content-type": "application/json"}),
        ("/webhooks/jira", b"{", {"content-type": "application/json"}),
        ("/webhooks/sentry", b"{", {"content-type": "application/json"}),
        ("/webhooks/nope", b"{}", {"content-type": "application/json"}),
        ("/webhooks/..%2F..%2Fapi", b"{}", {"content-type": "application/json"}),
        ("/webhooks/" + "x" * 5000, b"{}", {"content-type": "application/json"}),
        ("/webhooks/UPPER", b"{}", {"content-type": "application/json"}),
        ("/webhooks/github", b"", {}),
    ]
    for path, body, headers in cases:
        status, answer = call("POST", path, body, headers)
        assert 400 <= status < 500, (path, status)
        assert set(answer["error"]) >= {"code", "message"}
    status, answer = call("GET", "/webhooks/github")
    assert status == 405
    assert answer["error"]["code"] == "method_not_allowed"
