"""The REAL `claude` 2.1.197 as the executor (against fake_anthropic_api.py): its Bash tool commits on a claude/...
branch and looks at its own environment; it has no GitHub token, and at the end of the run the runner pushes the
branch with its own token (FakeApi's git server over HTTP requires it) and opens the pull request through the
fake GitHub REST API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_machine.domain import submission
from agent_machine.models import RepoContext, TaskSource, TaskStatus
from agent_machine.store import tasks
from local_runtime.provision import Provisioned

from tests.conftest import reset_caches
from tests.fakes.fake_github_api import FakeApi
from tests.integration.runner_support import invoke, receive
from tests.integration.test_real_cli import claude_path, fake_api, real  # noqa: F401 - fixtures

pytestmark = [pytest.mark.real_cli, pytest.mark.timeout(240)]

TOKEN = "ghs_real_cli_publish_0123456789abcdef"
REPO = "acme/app"
BRANCH = "claude/7-real-fix"


@pytest.fixture
def github(real: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:  # noqa: F811
    monkeypatch.setenv("FARGATE_MODE", "off")  # the run, and its push at the end, happen inside invoke()
    with FakeApi(github_token=TOKEN, git_root=tmp_path / "git") as fake:
        monkeypatch.setenv("GITHUB_API_URL", fake.url)
        monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
        monkeypatch.setenv("REPORT_BACKOFF_SECONDS", "0")
        reset_caches()
        yield fake


def test_the_real_cli_commits_and_the_runner_pushes_and_opens_the_pull_request(
    stack: Provisioned, github: FakeApi
) -> None:
    clone_url = github.create_repository(REPO)
    commands = [
        "env | cut -d= -f1 | sort | tr '\\n' ' '",
        f"git checkout -q -b {BRANCH} && echo fixed > fix.txt && git add fix.txt && git commit -q -m 'Real fix'",
    ]
    prompt = f"[[cmds:{json.dumps(commands)}]] implement the approved plan"
    task, session = submission.new_task(prompt, agent="executor", source=TaskSource.GITHUB, source_name="github")
    repo = RepoContext(full_name=REPO, issue_number=7, clone_url=clone_url)
    submission.submit(task.model_copy(update={"repo": repo}), session)
    invoke(stack, receive(task.task_id), timeout_seconds=200)
    done = tasks.get(task.task_id)
    assert done is not None and done.status is TaskStatus.COMPLETED, done and done.error

    result = done.result or ""
    names = set(result.split("[1]", 1)[-1].split("[2]", 1)[0].split())
    assert {"PATH", "HOME"} <= names, result
    assert not names & {"GITHUB_TOKEN", "GH_TOKEN", "GITHUB_API_URL"}, names
    assert not [name for name in names if name.startswith("GIT_CONFIG_")], names

    assert github.commit_subject(REPO, BRANCH) == "Real fix"
    assert github.commit_subject(REPO, "main") == "Initial commit"
    (pull,) = github.pull_requests
    assert (pull["title"], pull["head"]["ref"], pull["base"]["ref"]) == ("Real fix", BRANCH, "main")
    assert pull["body"].startswith("Refs #7")
    assert done.report["pr_url"] == pull["html_url"] and done.report["branch"] == BRANCH
    assert all(r.authorized for r in github.git_requests)  # only the runner talked to the git server
