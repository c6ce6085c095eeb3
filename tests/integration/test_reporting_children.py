"""Delegated children do not comment on the issue they inherit: the runner runs a child (source "agent") and
its GitHub parent against the fake GitHub API; there is one comment, the parent's, and it names the child."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from agent_machine.domain import submission
from agent_machine.models import RepoContext, TaskSource, TaskStatus
from agent_machine.store import tasks
from local_runtime.provision import Provisioned
from runner.delegation import CreateArgs, Delegation

from tests.conftest import reset_caches
from tests.fakes.fake_github_api import FakeApi
from tests.integration.runner_support import invoke, receive

pytestmark = pytest.mark.timeout(90)
TOKEN = "ghp_reporting_children_test"


@pytest.fixture
def github(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    with FakeApi(github_token=TOKEN) as fake:
        monkeypatch.setenv("GITHUB_API_URL", fake.url)
        monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
        monkeypatch.setenv("DASHBOARD_URL", "http://dashboard.test")
        monkeypatch.setenv("REPORT_BACKOFF_SECONDS", "0")
        reset_caches()
        yield fake


def test_only_the_root_task_comments_and_it_lists_its_children(stack: Provisioned, github: FakeApi) -> None:
    root, session = submission.new_task("[[text]] look at issue 7", source=TaskSource.GITHUB, source_name="github")
    root = root.model_copy(update={"repo": RepoContext(full_name="octo/repo", issue_number=7)})
    submission.submit(root, session)
    child = Delegation(root, deadline=time.monotonic() + 60).create_task(
        CreateArgs(agent="planning", prompt="[[text]] plan issue 7", max_budget_usd=0.5)
    )
    stored_child = tasks.get(child["task_id"])
    assert stored_child is not None and stored_child.repo is not None  # it has the issue, as its parent

    invoke(stack, receive(child["task_id"]))
    done_child = tasks.get(child["task_id"])
    assert done_child is not None and done_child.status is TaskStatus.COMPLETED, done_child
    assert github.requests == []  # the child said nothing on the issue
    assert done_child.report == {}

    invoke(stack, receive(root.task_id))
    posts = [r for r in github.requests if r.method == "POST"]
    assert [r.path for r in posts] == ["/repos/octo/repo/issues/7/comments"]
    final = [r for r in github.requests if r.method == "PATCH"][-1]
    body = final.body["body"]
    assert "Delegated tasks" in body and child["task_id"][:8] in body and "`planning`" in body
    assert f"http://dashboard.test/#/tasks/{child['task_id']}" in body
