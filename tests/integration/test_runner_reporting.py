"""The runner reports back to where a task came from: one sticky GitHub comment, made at the start and edited at
the end with the result, the pull request, cost and duration (against a local stand-in for the GitHub API)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from agent_machine.domain import submission
from agent_machine.models import RepoContext, TaskSource, TaskStatus
from agent_machine.store import tasks
from local_runtime.provision import Provisioned

from tests.conftest import reset_caches
from tests.fakes.fake_github_api import FakeApi
from tests.integration.runner_support import invoke, receive

TOKEN = "ghp_runner_reporting_test"


@pytest.fixture
def github(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    with FakeApi(github_token=TOKEN) as fake:
        monkeypatch.setenv("GITHUB_API_URL", fake.url)
        monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
        monkeypatch.setenv("DASHBOARD_URL", "http://dashboard.test")
        monkeypatch.setenv("REPORT_BACKOFF_SECONDS", "0")
        reset_caches()
        yield fake


def test_a_github_task_gets_one_comment_edited_in_place(stack: Provisioned, github: FakeApi) -> None:
    task, session = submission.new_task(
        "[[text:Opened https://github.com/octo/repo/pull/12 with the fix]] fix the bug",
        source=TaskSource.GITHUB,
        source_name="github",
    )
    task = task.model_copy(update={"repo": RepoContext(full_name="octo/repo", issue_number=7)})
    submission.submit(task, session)

    invoke(stack, receive(task.task_id))

    stored = tasks.get(task.task_id)
    assert stored is not None and stored.status is TaskStatus.COMPLETED
    calls = [(r.method, r.path) for r in github.requests]
    posts = [c for c in calls if c[0] == "POST"]
    assert posts == [("POST", "/repos/octo/repo/issues/7/comments")]
    comment_id = stored.report["github_comment_id"]
    final = [r for r in github.requests if r.method == "PATCH"][-1]
    assert final.path == f"/repos/octo/repo/issues/comments/{comment_id}"
    assert final.header("authorization") == f"Bearer {TOKEN}"
    assert "https://github.com/octo/repo/pull/12" in final.body["body"]
    assert f"{stored.cost_usd:.4f}" in final.body["body"]
    assert f"http://dashboard.test/#/tasks/{task.task_id}" in final.body["body"]
    assert stored.report.get("pr_url") == "https://github.com/octo/repo/pull/12"
    assert TOKEN not in str(stored.report)


def test_reporting_failures_never_fail_the_task(
    stack: Provisioned, github: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_API_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("REPORT_MAX_ATTEMPTS", "2")
    reset_caches()
    task, session = submission.new_task("[[text]] hello", source=TaskSource.GITHUB, source_name="github")
    task = task.model_copy(update={"repo": RepoContext(full_name="octo/repo", issue_number=8)})
    submission.submit(task, session)

    invoke(stack, receive(task.task_id))

    stored = tasks.get(task.task_id)
    assert stored is not None and stored.status is TaskStatus.COMPLETED
    assert stored.report.get("error")
