"""A delegated child that ends after its root brings the root's sticky comment up to date, against the fake GitHub
API and the moto server: the runner runs the root (its last edit lists the child as queued), then the child;
the comment is edited, never a new one. Report-back failures are retried with backoff and never keep the child
from being booked; a child that ends while the root writes its last edit is caught by the root's re-check; a
dead-lettered task's comment says it failed."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from agent_machine.domain import lifecycle, submission
from agent_machine.domain.reporting import service
from agent_machine.models import RepoContext, Task, TaskSource, TaskStatus
from agent_machine.store import tasks
from local_runtime.events import LambdaContext, sqs_event
from local_runtime.provision import Provisioned
from runner import dlq_handler
from runner.delegation import CreateArgs, Delegation

from tests.conftest import reset_caches
from tests.fakes.fake_github_api import FakeApi
from tests.integration.runner_support import invoke
from tests.integration.test_daily_cap_concurrency import receive_all

pytestmark = pytest.mark.timeout(180)
TOKEN = "ghp_reporting_late_children_test"
MAX_ATTEMPTS = 3
COMMENTS = "/repos/octo/repo/issues/7/comments"


@pytest.fixture
def github(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    with FakeApi(github_token=TOKEN) as fake:
        monkeypatch.setenv("GITHUB_API_URL", fake.url)
        monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
        monkeypatch.setenv("DASHBOARD_URL", "http://dashboard.test")
        monkeypatch.setenv("REPORT_MAX_ATTEMPTS", str(MAX_ATTEMPTS))
        monkeypatch.setenv("REPORT_BACKOFF_SECONDS", "0.05")
        monkeypatch.setenv("REPORT_MAX_BACKOFF_SECONDS", "0.2")
        reset_caches()
        yield fake
        reset_caches()


def receive(task_id: str) -> dict[str, Any]:
    """The task's queue message (its own only: a batch that also holds others' leaves them visible)."""
    return receive_all([task_id])[0]


def root_with_children(n: int) -> tuple[Task, list[str]]:
    root, session = submission.new_task("[[text]] look at issue 7", source=TaskSource.GITHUB, source_name="github")
    root = root.model_copy(update={"repo": RepoContext(full_name="octo/repo", issue_number=7)})
    submission.submit(root, session)
    delegation = Delegation(root, deadline=time.monotonic() + 60)
    children = [
        str(
            delegation.create_task(CreateArgs(agent="planning", prompt=f"[[text]] plan {i}", max_budget_usd=0.2))[
                "task_id"
            ]
        )
        for i in range(n)
    ]
    return root, children


def stored(task_id: str) -> Task:
    task = tasks.get(task_id)
    assert task is not None
    return task


def the_comment(github: FakeApi) -> dict[str, Any]:
    assert len(github.github_comments) == 1, github.github_comments
    return next(iter(github.github_comments.values()))


def shown_status(body: str, child_id: str) -> str:
    """The status the comment's children list gives a child."""
    found = re.search(rf"`planning` task \[`{child_id[:8]}`\]\([^)]*\): ([a-z ]+)$", body, re.MULTILINE)
    assert found, body
    return found.group(1)


def test_a_child_that_ends_after_its_root_edits_the_roots_comment(stack: Provisioned, github: FakeApi) -> None:
    root, (child,) = root_with_children(1)
    invoke(stack, receive(root.task_id))
    done_root = stored(root.task_id)
    assert done_root.status is TaskStatus.COMPLETED
    assert done_root.report.get(service.FINAL_KEY) == "true" and done_root.report.get("github_comment_id")
    before = the_comment(github)["body"]
    assert "✅ **Done**" in before and shown_status(before, child) == "queued"
    github.clear()

    invoke(stack, receive(child))
    done_child = stored(child)
    assert done_child.status is TaskStatus.COMPLETED
    assert "error" not in done_child.report, done_child.report
    writes = github.writes()
    assert [(r.method, r.path) for r in writes] == [
        ("PATCH", f"/repos/octo/repo/issues/comments/{done_root.report['github_comment_id']}")
    ]
    after = the_comment(github)["body"]
    assert shown_status(after, child) == "completed"
    # The rest is the root's last edit, unchanged.
    assert after.replace(": completed", ": queued") == before


def test_report_failures_are_retried_and_never_keep_a_child_from_being_booked(
    stack: Provisioned, github: FakeApi
) -> None:
    root, (first, second) = root_with_children(2)
    invoke(stack, receive(root.task_id))
    assert shown_status(the_comment(github)["body"], first) == "queued"
    github.clear()

    github.fail_next(MAX_ATTEMPTS - 1)  # 502s, then the edit goes through
    invoke(stack, receive(first))
    done = stored(first)
    assert done.status is TaskStatus.COMPLETED and done.report.get("attempts") == str(MAX_ATTEMPTS)
    assert "error" not in done.report
    assert [r.method for r in github.writes()] == ["PATCH"] * MAX_ATTEMPTS
    body = the_comment(github)["body"]
    assert shown_status(body, first) == "completed" and shown_status(body, second) == "queued"
    github.clear()

    github.fail_next(100)  # GitHub is down for good
    invoke(stack, receive(second))
    failed_report = stored(second)
    assert failed_report.status is TaskStatus.COMPLETED  # booked all the same
    assert failed_report.cost_usd > 0
    assert failed_report.report.get("attempts") == str(MAX_ATTEMPTS)
    assert "parent task's comment" in failed_report.report.get("error", "") and "502" in failed_report.report["error"]
    assert TOKEN not in failed_report.report["error"]
    assert [r.method for r in github.writes()] == ["PATCH"] * MAX_ATTEMPTS
    assert shown_status(the_comment(github)["body"], second) == "queued"
    github.clear_failures()


def test_a_child_that_ends_during_the_roots_last_edit_is_shown_by_the_roots_recheck(
    stack: Provisioned, github: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, (child,) = root_with_children(1)
    store_final = service._store_final

    def child_ends_first(task: Task, report: dict[str, str]) -> None:
        # The child ends after the root listed its children and before the root's state says "final": the
        # child's own report then finds no final comment to edit, so only the root's re-check can show it.
        if task.task_id == root.task_id:
            claimed = lifecycle.claim(stored(child), "lambda:child", "lambda", agent_cap_usd=None)
            assert isinstance(claimed, Task)
            assert lifecycle.finish(claimed, TaskStatus.COMPLETED, runner_id="lambda:child", result="plan")
        store_final(task, report)

    monkeypatch.setattr(service, "_store_final", child_ends_first)
    invoke(stack, receive(root.task_id))
    assert shown_status(the_comment(github)["body"], child) == "completed"
    patches = [r.body["body"] for r in github.writes() if r.method == "PATCH"]
    assert len(patches) >= 2
    assert shown_status(patches[-2], child) == "queued"  # the root's last edit, as it had listed them
    assert shown_status(patches[-1], child) == "completed"  # and the re-check's


def test_dead_lettered_tasks_say_so_on_the_issue(stack: Provisioned, github: FakeApi) -> None:
    root, (child,) = root_with_children(1)
    invoke(stack, receive(root.task_id))
    github.clear()
    # The child's runner claimed it and died; its message ends in the dead-letter queue.
    assert isinstance(lifecycle.claim(stored(child), "lambda:dead", "lambda", agent_cap_usd=None), Task)
    event = sqs_event([receive(child)], stack.resolver.attrs["TaskDeadLetterQueue.Arn"])
    assert dlq_handler.handler(event, LambdaContext("DlqFunction", 60)) == {"batchItemFailures": []}
    assert stored(child).status is TaskStatus.FAILED and stored(child).error_kind == "dead_letter"
    assert shown_status(the_comment(github)["body"], child) == "failed"

    # A root whose runner died after its comment said "Working on it…": the comment now says it failed.
    lone, session = submission.new_task("[[text]] issue 8", source=TaskSource.GITHUB, source_name="github")
    lone = lone.model_copy(update={"repo": RepoContext(full_name="octo/repo", issue_number=8)})
    submission.submit(lone, session)
    claimed = lifecycle.claim(lone, "lambda:dead", "lambda", agent_cap_usd=None)
    assert isinstance(claimed, Task)
    from agent_machine.domain import reporting

    tasks.set_fields(lone.task_id, report=reporting.report_started(claimed))
    event = sqs_event([receive(lone.task_id)], stack.resolver.attrs["TaskDeadLetterQueue.Arn"])
    assert dlq_handler.handler(event, LambdaContext("DlqFunction", 60)) == {"batchItemFailures": []}
    comments = [c for c in github.github_comments.values() if c["body"].find(lone.task_id) >= 0]
    assert len(comments) == 1 and "❌ **Failed**" in comments[0]["body"], comments
    assert "MAX_TASK_ATTEMPTS" in comments[0]["body"]
