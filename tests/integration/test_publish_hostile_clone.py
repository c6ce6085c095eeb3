"""The runner's push when the agent has booby-trapped its clone: git configuration that would run commands or
send the token elsewhere (hooks, core.fsmonitor, credential.helper, url.*.insteadOf, http.proxy), and links out of
the clone. The Publisher is driven directly on a clone the runner made (workspace.clone_repository), against
FakeApi over HTTP as the API and git server (the token required)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from agent_machine.models import AgentSpec, RepoContext, Task
from runner import publish, workspace

from tests.conftest import reset_caches
from tests.fakes.fake_github_api import FakeApi

pytestmark = pytest.mark.timeout(60)

TOKEN = "ghs_hostile_clone_0123456789abcdef"
REPO = "acme/app"
BRANCH = "claude/9-safe-push"


@dataclass
class Setup:
    api: FakeApi
    publisher: publish.Publisher
    clone: Path
    clone_url: str
    traps: Path  # where a trap would leave its mark


def git(clone: Path, *args: str) -> str:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(clone.parent),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Agent",
        "GIT_AUTHOR_EMAIL": "agent@example.com",
        "GIT_COMMITTER_NAME": "Agent",
        "GIT_COMMITTER_EMAIL": "agent@example.com",
    }
    return subprocess.run(["git", *args], cwd=clone, env=env, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    with FakeApi(github_token=TOKEN, git_root=tmp_path / "git") as api:
        monkeypatch.setenv("GITHUB_API_URL", api.url)
        monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
        reset_caches()
        clone_url = api.create_repository(REPO)
        task = Task(
            session_id="s-hostile",
            prompt="x",
            agent="executor",
            repo=RepoContext(full_name=REPO, issue_number=9, clone_url=clone_url),
        )
        ws = workspace.prepare(task, AgentSpec(name="executor"), [], root=tmp_path / "runner")
        assert task.repo is not None and ws.repo_dir is not None
        base = asyncio.run(workspace.clone_repository(ws, task.repo, TOKEN))
        assert TOKEN not in (ws.repo_dir / ".git" / "config").read_text()  # the clone keeps no credential
        publisher = publish.for_task(task, ws.repo_dir, base_commit=base)
        assert publisher is not None
        traps = tmp_path / "traps"
        traps.mkdir()
        git(ws.repo_dir, "checkout", "-q", "-b", BRANCH)
        git(ws.repo_dir, "commit", "-q", "--allow-empty", "-m", "Safe change")
        try:
            yield Setup(api, publisher, ws.repo_dir, clone_url, traps)
        finally:
            publisher.close()


def test_the_agents_git_configuration_is_never_used(setup: Setup) -> None:
    clone, traps = setup.clone, setup.traps
    hooks = clone / "evil-hooks"
    hooks.mkdir()
    for hook in ("pre-push", "reference-transaction", "post-checkout"):
        (hooks / hook).write_text(f"#!/bin/sh\ntouch {traps}/{hook}\n")
        (hooks / hook).chmod(0o755)
        (clone / ".git" / "hooks" / hook).write_text(f"#!/bin/sh\ntouch {traps}/default-{hook}\n")
        (clone / ".git" / "hooks" / hook).chmod(0o755)
    fork = setup.api.create_repository("mallory/fork")
    for key, value in (
        ("core.hooksPath", str(hooks)),
        ("core.fsmonitor", f"touch {traps}/fsmonitor; false"),
        ("credential.helper", f"!touch {traps}/credential-helper; echo password=stolen"),
        ("core.askPass", f"{traps}/askpass"),
        (f"url.{fork}.insteadOf", setup.clone_url),
        (f"url.{fork}.pushInsteadOf", setup.clone_url),
        ("http.proxy", "http://127.0.0.1:9"),
        ("include.path", str(traps / "included")),
    ):
        git(clone, "config", key, value)
    (traps / "included").write_text("[core]\n\tsshCommand = touch /tmp/never\n")

    pushed = setup.publisher.push_branch()

    assert pushed["branch"] == BRANCH
    assert setup.api.branches(REPO)[BRANCH] == git(clone, "rev-parse", "HEAD").strip()
    assert BRANCH not in setup.api.branches("mallory/fork")
    assert sorted(p.name for p in traps.iterdir()) == ["included"]  # no hook, monitor or helper ran
    assert all(r.authorized for r in setup.api.git_requests)


def test_links_out_of_the_clone_are_refused(setup: Setup, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere-objects"
    objects = setup.clone / ".git" / "objects"
    objects.rename(elsewhere)
    objects.symlink_to(elsewhere)
    with pytest.raises(publish.PublishError, match=r"\.git/objects is not a plain folder"):
        setup.publisher.push_branch()
    objects.unlink()
    elsewhere.rename(objects)

    git_dir = setup.clone / ".git"
    moved = tmp_path / "moved-git"
    git_dir.rename(moved)
    (setup.clone / ".git").write_text(f"gitdir: {moved}\n")  # a gitfile pointing elsewhere
    with pytest.raises(publish.PublishError, match="plain folder"):
        setup.publisher.push_branch()
    assert BRANCH not in setup.api.branches(REPO)
    assert not [r for r in setup.api.git_requests if r.service == "git-receive-pack"]


def test_alternates_the_agent_adds_are_not_followed(setup: Setup, tmp_path: Path) -> None:
    """Objects the clone only borrows through objects/info/alternates (another repository on the machine) are
    not the runner's to send: the push is missing them and fails, instead of carrying another repo's data."""
    other = tmp_path / "other"
    git(tmp_path, "init", "-q", str(other))
    (other / "secret.txt").write_text("another repository's data\n")
    git(other, "add", "secret.txt")
    git(other, "commit", "-q", "-m", "other")
    tree = git(other, "rev-parse", "HEAD^{tree}").strip()
    (setup.clone / ".git" / "objects" / "info" / "alternates").write_text(f"{other}/.git/objects\n")
    commit = git(setup.clone, "commit-tree", tree, "-p", "HEAD", "-m", "borrowed").strip()
    git(setup.clone, "update-ref", f"refs/heads/{BRANCH}", commit)

    with pytest.raises(publish.PublishError, match="git push failed"):
        setup.publisher.push_branch()
    assert BRANCH not in setup.api.branches(REPO)
