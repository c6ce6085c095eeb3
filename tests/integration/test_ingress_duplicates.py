"""One event delivered twice under different delivery ids (a repository's and its organisation's webhooks, two Jira
webhooks, two Sentry integrations) makes one task: the senders' real sample payloads, signed, through the real
Lambda handler against the moto server, one after the other and at once from threads."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from local_runtime.provision import Provisioned

from tests.conftest import WEBHOOKS, reset_caches
from tests.integration import test_ingress_jira as jira
from tests.integration import test_ingress_sentry as sentry
from tests.integration.test_ingress_github import all_tasks, deliver, queue_bodies

Send = Callable[[str], tuple[int, Any]]


def _json(sender: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((WEBHOOKS / sender / name).read_bytes())
    return data


def _wire(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Case:
    """A real sample, changed only as far as it must be to make a task (a mention, the trigger label)."""

    name: str
    sender: str
    send: Send


def _github(event: str, name: str, change: Callable[[dict[str, Any]], None] | None = None) -> Send:
    data = _json("github", name)
    if change is not None:
        change(data)
    body = _wire(data)  # one body: both webhooks sign the same bytes
    return lambda delivery: deliver(event, body, delivery)


def _mention(*path: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        target = data
        for step in path:
            target = target[step]
        target["body"] = "@claude please look into this"

    return change


def _label(data: dict[str, Any]) -> None:
    data["label"]["name"] = "claude"


def _jira(name: str, change: Callable[[dict[str, Any]], None]) -> Send:
    data = jira.sample(name)
    change(data)
    body = _wire(data)
    return lambda delivery: jira.deliver(body, delivery)


def _jira_comment(data: dict[str, Any]) -> None:
    data["comment"]["body"] = "@claude what is going on here?"


def _jira_created(data: dict[str, Any]) -> None:
    data["issue"]["fields"]["labels"] = ["claude"]


def _jira_labelled(data: dict[str, Any]) -> None:
    data["changelog"]["items"] = [{"field": "labels", "fromString": "test-label", "toString": "claude test-label"}]


def _sentry(name: str, resource: str | None) -> Send:
    body = (WEBHOOKS / "sentry" / name).read_bytes()  # byte for byte as published
    return lambda delivery: sentry.deliver(body, resource, delivery)


CASES = [
    Case(
        "github issue_comment.created",
        "github",
        _github("issue_comment", "issue_comment__created.json", _mention("comment")),
    ),
    Case("github issues.labeled", "github", _github("issues", "issues__labeled.json", _label)),
    Case("github issues.opened", "github", _github("issues", "issues__opened.json", _mention("issue"))),
    Case(
        "github pull_request.opened",
        "github",
        _github("pull_request", "pull_request__opened.json", _mention("pull_request")),
    ),
    Case(
        "github pull_request_review.submitted",
        "github",
        _github("pull_request_review", "pull_request_review__submitted.json", _mention("review")),
    ),
    Case(
        "github pull_request_review_comment.created",
        "github",
        _github("pull_request_review_comment", "pull_request_review_comment__created.json", _mention("comment")),
    ),
    Case("jira comment_created", "jira", _jira("comment_created__created.json", _jira_comment)),
    Case("jira jira:issue_created", "jira", _jira("jira_issue_created__issue_created.json", _jira_created)),
    Case(
        "jira jira:issue_updated labels", "jira", _jira("jira_issue_updated__issue_updated.labels.json", _jira_labelled)
    ),
    Case("sentry issue.created", "sentry", _sentry("issue__created.json", "issue")),
    Case("sentry event_alert.triggered", "sentry", _sentry("event_alert__triggered.json", "event_alert")),
    Case("sentry error.created", "sentry", _sentry("error__created.json", "error")),
    Case("sentry legacy plugin", "sentry", _sentry("legacy_webhooks_plugin__v9_event.json", None)),
]


def stored_deliveries() -> list[Any]:
    from agent_machine.store import events

    items, _ = events.recent(limit=100)
    return items


def _assert_one_task(stack: Provisioned, task_id: str) -> None:
    assert [t["task_id"] for t in all_tasks(stack)] == [task_id]
    assert queue_bodies(stack) == [{"task_id": task_id}]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_same_event_from_two_webhooks_makes_one_task(stack: Provisioned, case: Case) -> None:
    status, first = case.send("hook-repo-1")
    assert (status, first["status"]) == (202, "task_created"), first
    status, second = case.send("hook-org-1")
    assert status == 202, second  # answered like a redelivery: a success the sender does not retry
    assert second["status"] == "duplicate", second
    assert (second["task_id"], second["session_id"]) == (first["task_id"], first["session_id"])
    assert (second["delivery_id"], second["duplicate_of"]) == ("hook-org-1", "hook-repo-1")
    assert second["source_key"].startswith(f"dedupe#{case.sender}#")
    # Each delivery's retry gets its own first answer; nothing more is created.
    assert case.send("hook-org-1") == (202, second)
    assert case.send("hook-repo-1") == (202, first)
    _assert_one_task(stack, first["task_id"])
    # Both deliveries are on record (the claim is not a delivery: the dashboard's listing does not show it).
    recorded = {d.delivery_id: d for d in stored_deliveries()}
    assert set(recorded) == {"hook-repo-1", "hook-org-1"}
    assert recorded["hook-repo-1"].decision.value == "task_created"
    assert recorded["hook-org-1"].decision.value == "ignored"
    assert recorded["hook-org-1"].task_id == first["task_id"]


def _at_once(sends: list[Callable[[], tuple[int, Any]]]) -> list[tuple[int, Any]]:
    """Each call in its own thread, all released together; each thread has its own event loop (Mangum needs one)."""
    start = threading.Barrier(len(sends))

    def run(send: Callable[[], tuple[int, Any]]) -> tuple[int, Any]:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            start.wait(timeout=60)
            return send()
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    with ThreadPoolExecutor(max_workers=len(sends)) as pool:
        return list(pool.map(run, sends))


def _warm() -> None:
    """Create the cached clients and settings on this thread first: threads then share them, never build them."""
    from agent_machine import aws
    from agent_machine.secrets import get_secret
    from agent_machine.settings import get_settings

    get_settings()
    aws.dynamodb()
    aws.sqs()
    for name in ("github_webhook_secret", "jira_webhook_secret", "sentry_webhook_secret"):
        get_secret(name)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_two_webhooks_delivering_at_once_make_one_task(stack: Provisioned, case: Case) -> None:
    reset_caches()
    _warm()
    answers = _at_once([lambda: case.send("race-repo"), lambda: case.send("race-org")])
    assert [status for status, _ in answers] == [202, 202], answers
    by_status = {answer["status"]: answer for _, answer in answers}
    assert set(by_status) == {"task_created", "duplicate"}, answers
    created, duplicate = by_status["task_created"], by_status["duplicate"]
    assert duplicate["task_id"] == created["task_id"]
    assert duplicate["duplicate_of"] == created["delivery_id"]
    _assert_one_task(stack, created["task_id"])


def test_many_webhooks_racing_one_comment_make_one_task(stack: Provisioned) -> None:
    reset_caches()
    _warm()
    send = CASES[0].send
    hooks = [f"hook-{i}" for i in range(8)]
    answers = _at_once([lambda hook=hook: send(hook) for hook in hooks])  # type: ignore[misc]
    statuses = sorted(answer["status"] for _, answer in answers)
    assert statuses == ["duplicate"] * 7 + ["task_created"], answers
    [created] = [answer for _, answer in answers if answer["status"] == "task_created"]
    assert {answer["task_id"] for _, answer in answers} == {created["task_id"]}
    _assert_one_task(stack, created["task_id"])
    assert len(stored_deliveries()) == len(hooks)


# --- genuinely different events stay different --------------------------------------------------------------------


def test_a_new_comment_on_the_same_issue_is_a_new_task(stack: Provisioned) -> None:
    data = _json("github", "issue_comment__created.json")
    data["comment"]["body"] = "@claude first question"
    status, first = deliver("issue_comment", data, "c-1")
    data["comment"]["id"] += 1
    data["comment"]["body"] = "@claude second question"
    status, second = deliver("issue_comment", data, "c-2")
    assert (status, second["status"]) == (202, "task_created"), second
    assert second["task_id"] != first["task_id"] and second["session_id"] == first["session_id"]
    assert len(all_tasks(stack)) == 2


def test_the_label_added_again_is_a_new_event_but_the_plan_is_not_redone(stack: Provisioned) -> None:
    from agent_machine.store import tasks

    data = _json("github", "issues__labeled.json")
    _label(data)
    status, first = deliver("issues", data, "l-1")
    assert status == 202
    data["issue"]["updated_at"] = "2019-05-15T16:00:00Z"  # removed and added again: GitHub moves updated_at on
    status, again = deliver("issues", data, "l-2")
    assert (status, again["status"]) == (200, "ignored")  # not a duplicate: the issue is being planned already
    tasks.set_fields(first["task_id"], status="failed", error_kind="cli")
    data["issue"]["updated_at"] = "2019-05-15T17:00:00Z"
    status, retry = deliver("issues", data, "l-3")
    assert (status, retry["status"]) == (202, "task_created"), retry  # a failed plan is attempted again
    assert len(all_tasks(stack)) == 2


# --- a task that could not be enqueued gives its event back -------------------------------------------------------


def test_a_failed_enqueue_gives_the_event_back_to_the_other_webhook(
    stack: Provisioned, monkeypatch: pytest.MonkeyPatch
) -> None:
    send = CASES[0].send
    good = stack.queues["TaskQueue"]
    monkeypatch.setenv("TASK_QUEUE_URL", good.rsplit("/", 1)[0] + "/no-such-queue")
    reset_caches()
    status, answer = send("enq-repo")
    assert (status, answer["error"]["code"]) == (503, "unavailable")
    assert all_tasks(stack) == [] and stored_deliveries() == []
    monkeypatch.setenv("TASK_QUEUE_URL", good)
    reset_caches()
    status, answer = send("enq-org")  # the organisation's webhook delivers the same comment: it is not a duplicate
    assert (status, answer["status"]) == (202, "task_created"), answer
    _assert_one_task(stack, answer["task_id"])


def test_an_expired_claim_no_longer_guards(stack: Provisioned) -> None:
    import time

    from agent_machine import aws
    from agent_machine.store import events

    send = CASES[0].send
    status, first = send("old-repo")
    assert status == 202
    second = send("old-org")[1]
    key = second["source_key"]
    claim = events.get_claim(key)
    assert claim is not None and claim.task_id == first["task_id"]
    # TTL deletes lazily: a claim past its expiry that is still stored must not refuse the event forever.
    aws.dynamodb().update_item(
        TableName=events.table(),
        Key={"delivery_key": {"S": key}},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 1)}},
    )
    assert events.get_claim(key) is None
    status, later = send("old-org-2")
    assert (status, later["status"]) == (202, "task_created"), later
    assert later["task_id"] != first["task_id"]
