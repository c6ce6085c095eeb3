"""Source-event keys of the senders' real sample payloads: the same event has one key, a different event another,
odd payloads never raise and never make an unbounded key."""

from __future__ import annotations

import json
from typing import Any

import pytest
from agent_machine.domain.webhooks import dedupe, github, jira, sentry

from tests.conftest import WEBHOOKS


def sample(sender: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((WEBHOOKS / sender / name).read_bytes())
    return data


def test_github_comment_created_and_edited_are_different_events() -> None:
    created = github.source_key("issue_comment", sample("github", "issue_comment__created.json"))
    edited = github.source_key("issue_comment", sample("github", "issue_comment__edited.json"))
    assert created == "dedupe#github#comment#492700400#created"
    assert edited == "dedupe#github#comment#492700400#edited#2019-05-15T15:20:22Z"
    # The same comment in the payload of an App installation's webhook: the same event.
    installed = sample("github", "issue_comment__created.with-installation.json")
    assert github.source_key("issue_comment", installed) == created


def test_github_label_events_carry_the_label_and_the_occurrence() -> None:
    labeled = sample("github", "issues__labeled.json")
    first = github.source_key("issues", labeled)
    assert first == "dedupe#github#issue#codertocat/hello-world#1#labeled#bug#2019-05-15T15:20:18Z"
    labeled["label"]["name"] = "claude"
    second_label = github.source_key("issues", labeled)
    labeled["issue"]["updated_at"] = "2019-05-15T16:00:00Z"
    added_again = github.source_key("issues", labeled)
    assert len({first, second_label, added_again}) == 3


@pytest.mark.parametrize(
    ("event", "name", "expected"),
    [
        ("issues", "issues__opened.json", "dedupe#github#issue#codertocat/hello-world#1#opened"),
        ("pull_request", "pull_request__opened.json", "dedupe#github#pr#codertocat/hello-world#2#opened"),
        ("pull_request_review", "pull_request_review__submitted.json", "dedupe#github#review#237895671#submitted"),
        (
            "pull_request_review_comment",
            "pull_request_review_comment__created.json",
            "dedupe#github#review_comment#284312630#created",
        ),
        ("ping", "ping__ping.json", None),
        ("push", "push__push.json", None),
    ],
)
def test_github_keys(event: str, name: str, expected: str | None) -> None:
    assert github.source_key(event, sample("github", name)) == expected


def test_jira_keys() -> None:
    site = "https://some-instance-test.atlassian.net"
    assert (
        jira.source_key(sample("jira", "comment_created__created.json"))
        == f"dedupe#jira#{site}#comment#10019#comment_created"
    )
    assert (
        jira.source_key(sample("jira", "jira_issue_created__issue_created.json"))
        == f"dedupe#jira#{site}#issue#10040#jira:issue_created"
    )
    assert (
        jira.source_key(sample("jira", "jira_issue_updated__issue_updated.labels.json"))
        == f"dedupe#jira#{site}#issue#10040#changelog#10233"
    )
    commented = sample("jira", "jira_issue_updated__issue_commented.server-dc.json")
    assert (
        jira.source_key(commented) == "dedupe#jira#http://test-server.azure.com:8080#comment#10118#jira:issue_updated"
    )


def test_sentry_keys() -> None:
    assert (
        sentry.source_key("issue", sample("sentry", "issue__created.json")) == "dedupe#sentry#issue#1234567890#created"
    )
    alert = sample("sentry", "event_alert__triggered.json")
    key = sentry.source_key("event_alert", alert)
    assert key == "dedupe#sentry#event_alert#1117540176#e4874d664c3540c1a32eab185f12c5ab#triggered"
    alert["data"]["event"]["event_id"] = "another-event-of-the-same-issue"
    assert sentry.source_key("event_alert", alert) != key
    legacy = sample("sentry", "legacy_webhooks_plugin__v9_event.json")
    assert sentry.source_key(None, legacy) == "dedupe#sentry#legacy#internal#5#2c02659ec60b48f3b31f8de77e1a2510"
    assert sentry.source_key("installation", sample("sentry", "installation__created.json")) is None


@pytest.mark.parametrize(
    "payload",
    [
        {"action": "created", "comment": None},
        {"action": "created", "comment": {"id": True}},
        {"action": "created", "comment": {"id": 10**40}},
        {"action": "created", "comment": {"id": ["a"]}},
        {"action": "created", "comment": {"id": "  "}},
        {"action": 7, "comment": {"id": 1}},
        {"action": "created", "comment": "not an object"},
    ],
)
def test_odd_payloads_have_no_key(payload: dict[str, Any]) -> None:
    assert github.source_key("issue_comment", payload) is None


def test_long_keys_are_bounded() -> None:
    payload: dict[str, Any] = {
        "action": "labeled",
        "repository": {"full_name": "o/r"},
        "issue": {"number": 1, "updated_at": "\U0001f600" * 5000},
        "label": {"name": "\U0001f600" * 5000},
    }
    key = github.source_key("issues", payload)
    assert key is not None and key.startswith("dedupe#github#sha256-")
    assert len(key.encode()) <= dedupe.MAX_KEY_BYTES
    payload["label"]["name"] = "\U0001f601" * 5000
    assert github.source_key("issues", payload) != key
