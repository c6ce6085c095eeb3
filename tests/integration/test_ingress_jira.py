"""Jira webhooks: every sample signed right -> 2xx, wrong -> 401, fail closed when unsigned, label / mention
triggers, wiki and ADF descriptions, redelivery by X-Atlassian-Webhook-Identifier."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from agent_machine.domain.webhooks.prompts import data_blocks
from local_runtime.provision import Provisioned

from tests.conftest import WEBHOOKS
from tests.integration.test_ingress_github import all_tasks, call, queue_bodies, sign

JIRA_FILES = sorted((WEBHOOKS / "jira").glob("*.json"))


def deliver(
    payload: dict[str, Any] | bytes,
    identifier: str,
    *,
    signature: str | None = "auto",
    content_type: str = "application/json; charset=UTF-8",
) -> tuple[int, Any]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {
        "content-type": content_type,
        "x-atlassian-webhook-identifier": identifier,
        "x-atlassian-webhook-flow": "Primary",
    }
    if signature is not None:
        headers["x-hub-signature"] = sign(body) if signature == "auto" else signature
    return call("POST", "/webhooks/jira", body, headers)


def sample(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((WEBHOOKS / "jira" / name).read_bytes())
    return data


@pytest.mark.parametrize("path", JIRA_FILES, ids=lambda p: p.name)
def test_every_sample_signed_right_is_2xx_and_signed_wrong_is_401(stack: Provisioned, path: Path) -> None:
    body = path.read_bytes()
    status, answer = deliver(body, f"ok-{path.name}")
    assert 200 <= status < 300, answer
    status, answer = deliver(body, f"bad-{path.name}", signature=sign(body, "wrong"))
    assert (status, answer["error"]["code"]) == (401, "bad_signature")


def test_published_vector_format_and_method_are_enforced(stack: Provisioned) -> None:
    body = (WEBHOOKS / "jira" / "comment_created__created.json").read_bytes()
    good = "sha256=43dd713b41c392ca9b08da5c266e57a660dcd4a9f736c8ca6926b564a8b5d6b1"
    assert deliver(body, "vec", signature=good)[0] == 200
    assert deliver(body, "vec-md5", signature=good.replace("sha256", "md5"))[0] == 401
    assert deliver(body, "vec-bare", signature=good.removeprefix("sha256="))[0] == 401


def test_unsigned_is_refused_when_a_secret_is_set(stack: Provisioned) -> None:
    status, answer = deliver(sample("jira_issue_created__issue_created.json"), "unsigned", signature=None)
    assert (status, answer["error"]["code"]) == (401, "bad_signature")
    assert all_tasks(stack) == []


def test_unsigned_is_refused_when_no_secret_is_configured(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_machine import secrets

    real = secrets.get_secret
    monkeypatch.setattr(secrets, "get_secret", lambda name: None if name == "jira_webhook_secret" else real(name))
    payload = sample("jira_issue_created__issue_created.json")
    payload["issue"]["fields"]["labels"] = ["claude"]
    status, answer = deliver(payload, "unsigned-no", signature=None)
    assert (status, answer["error"]["code"]) == (401, "bad_signature")
    assert "secret" not in answer["error"]["message"].lower()  # nothing about our configuration
    assert all_tasks(stack) == []


def test_unsigned_is_accepted_when_explicitly_allowed(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_machine import secrets
    from agent_machine.settings import get_settings

    real = secrets.get_secret
    monkeypatch.setattr(secrets, "get_secret", lambda name: None if name == "jira_webhook_secret" else real(name))
    monkeypatch.setenv("JIRA_ALLOW_UNSIGNED", "true")
    get_settings.cache_clear()
    payload = sample("jira_issue_created__issue_created.json")
    payload["issue"]["fields"]["labels"] = ["claude"]
    status, answer = deliver(payload, "unsigned-ok", signature=None)
    assert (status, answer["status"]) == (202, "task_created")


def test_label_on_a_new_issue_plans_it_with_the_description_as_text(stack: Provisioned) -> None:
    payload = sample("jira_issue_created__issue_created.json")
    payload["issue"]["fields"]["labels"] = ["backend", "Claude"]
    payload["issue"]["fields"]["description"] = (
        "h2. Steps\n*Bold* step with a [link|https://example.com] for [~accountid:abc123]\n"
        "{code:python}print('x'){code}"
    )
    status, answer = deliver(payload, "label-new")
    assert (status, answer["agent"]) == (202, "planning")
    task = all_tasks(stack)[0]
    assert task["source"] == "jira"
    assert task["repo"]["jira_issue_key"] == "TES-41"
    assert task["repo"]["jira_base_url"] == "https://some-instance-test.atlassian.net"
    description = data_blocks(task["prompt"])["issue.description"]
    assert "Steps\nBold step with a link (https://example.com) for @abc123" in description
    assert "print('x')" in description
    assert "{code" not in description and "h2." not in description
    assert queue_bodies(stack) == [{"task_id": answer["task_id"]}]


def test_label_added_by_an_update_plans_once(stack: Provisioned) -> None:
    payload = sample("jira_issue_updated__issue_updated.labels.json")
    payload["changelog"]["items"] = [{"field": "labels", "fromString": "test-label", "toString": "claude test-label"}]
    first = deliver(payload, "upd-1")
    assert first[0] == 202
    second = deliver(payload, "upd-2")  # the same change from a second webhook: a duplicate of the first
    assert (second[0], second[1]["status"], second[1]["task_id"]) == (202, "duplicate", first[1]["task_id"])
    payload["changelog"]["id"] = "10234"
    third = deliver(payload, "upd-3")  # the label added again (a new change): the issue is already planned
    assert (third[0], third[1]["status"]) == (200, "ignored")
    assert len(all_tasks(stack)) == 1
    assert deliver(payload, "upd-1") == first  # a retry of the first delivery: the first answer


def test_adf_description_becomes_text(stack: Provisioned) -> None:
    payload = sample("jira_issue_created__issue_created.json")
    payload["issue"]["fields"]["description"] = {
        "type": "doc",
        "version": 1,
        "content": [
            {
                "type": "paragraph",
                "content": [
                    {"type": "text", "text": "Crash when saving, "},
                    {"type": "mention", "attrs": {"id": "x", "text": "@claude"}},
                    {"type": "text", "text": " please plan"},
                ],
            },
            {
                "type": "bulletList",
                "content": [
                    {
                        "type": "listItem",
                        "content": [{"type": "paragraph", "content": [{"type": "text", "text": "one"}]}],
                    },
                ],
            },
        ],
    }
    payload["issue"]["fields"]["labels"] = []
    status, answer = deliver(payload, "adf-1")
    assert (status, answer["agent"]) == (202, "planning")
    description = data_blocks(all_tasks(stack)[0]["prompt"])["issue.description"]
    assert "Crash when saving, @claude please plan" in description
    assert "- one" in description


def test_comment_mention_goes_to_the_brain(stack: Provisioned) -> None:
    payload = sample("comment_created__created.json")
    payload["comment"]["body"] = "[~accountid:5c5f] @claude what is blocking this?"
    status, answer = deliver(payload, "comment-1")
    assert (status, answer["agent"]) == (202, "brain")
    blocks = data_blocks(all_tasks(stack)[0]["prompt"])
    assert blocks["comment.body"].endswith("@claude what is blocking this?")


def test_comment_without_mention_is_ignored(stack: Provisioned) -> None:
    status, answer = deliver(sample("comment_created__created.json"), "comment-plain")
    assert (status, answer["status"]) == (200, "ignored")
    assert all_tasks(stack) == []


def test_wrong_content_type_is_415(stack: Provisioned) -> None:
    body = (WEBHOOKS / "jira" / "comment_created__created.json").read_bytes()
    status, answer = deliver(body, "ct", content_type="text/plain")
    assert (status, answer["error"]["code"]) == (415, "unsupported_media_type")


def test_one_comment_sent_as_two_events_makes_one_task(stack: Provisioned) -> None:
    created = sample("comment_created__created.json")
    created["comment"]["body"] = "@claude summarise the thread"
    updated = sample("jira_issue_updated__issue_assigned.json")
    updated["issue_event_type_name"] = "issue_commented"
    updated["issue"] = created["issue"]
    updated["comment"] = created["comment"]
    assert deliver(created, "c-created")[0] == 202
    status, answer = deliver(updated, "c-updated")
    assert (status, answer["status"]) == (200, "ignored")
    assert answer["reason"] == "this comment was already handled"
    assert len(all_tasks(stack)) == 1
