"""What the CLI gets: its environment (an allow-list), the agent tree and registry skills in its folder, the
task's repository cloned at the right ref, and pushes to the WebSocket connections watching."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_machine import aws, secrets
from agent_machine.models import RepoContext, SkillSpec, Subscription, TaskStatus
from agent_machine.settings import get_settings
from agent_machine.store import connections, output, registry
from local_runtime.provision import Provisioned

from tests.integration.runner_support import Receiver, run_task

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(autouse=True)
def work_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "runner"
    monkeypatch.setenv("RUNNER_WORK_ROOT", str(root))
    yield root


def env_names(result: str | None) -> set[str]:
    return set(json.loads(result or "[]"))


def test_the_cli_sees_only_the_allow_listed_environment(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("CLAUDE_CODE_MAX_OUTPUT_TOKENS", "1000")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_secret")
    monkeypatch.setenv("SOME_RANDOM_SECRET", "x")
    get_settings.cache_clear()
    task = run_task(stack, "[[env]]")
    assert task.status == TaskStatus.COMPLETED, task.error
    names = env_names(task.result)
    assert {
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_API_KEY",
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS",
        "PATH",
        "HOME",
        "CLAUDE_CONFIG_DIR",
        "TMPDIR",
    } <= names
    leaked = {n for n in names if n.startswith("AWS_") or n.endswith("_WEBHOOK_SECRET")} | (
        names & {"API_TOKEN", "GITHUB_TOKEN", "SOME_RANDOM_SECRET", "SECRETS_NAME", "TASKS_TABLE"}
    )
    assert leaked == set()


def test_the_anthropic_key_comes_from_secrets_manager(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    arn = stack.secrets["AppSecrets"]
    current = json.loads(aws.secretsmanager().get_secret_value(SecretId=arn)["SecretString"])
    aws.secretsmanager().put_secret_value(
        SecretId=arn, SecretString=json.dumps({**current, "ANTHROPIC_API_KEY": "sk-ant-from-secrets"})
    )
    secrets.clear_cache()
    task = run_task(stack, "[[env]]")
    assert "ANTHROPIC_API_KEY" in env_names(task.result)
    init = next(e.payload["data"] for e in output.read_events(task.task_id) if e.payload.get("kind") == "system")
    assert init["apiKeySource"] == "ANTHROPIC_API_KEY"


def test_agent_tree_and_registry_skills_are_in_the_folder(stack: Provisioned) -> None:
    registry.put(
        "skill",
        SkillSpec(
            name="house-style",
            description="How we write: short.\nReally.",
            content="Write short sentences.",
            agents=["brain"],
        ),
        actor="test",
    )
    registry.put(
        "skill", SkillSpec(name="planning-only", description="x", content="y", agents=["planning"]), actor="test"
    )
    task = run_task(stack, "[[text]] hi")
    init = next(e.payload["data"] for e in output.read_events(task.task_id) if e.payload.get("kind") == "system")
    assert "house-style" in init["skills"] and "delegating-work" in init["skills"]
    assert "planning-only" not in init["skills"]
    assert init["cwd"].endswith("/w/brain")  # each agent in a folder of its own, siblings
    assert {"name": "machine", "status": "connected"} in init["mcp_servers"]

    planning = run_task(stack, "[[text]] plan", agent="planning")
    init = next(e.payload["data"] for e in output.read_events(planning.task_id) if e.payload.get("kind") == "system")
    assert init["cwd"].endswith("/w/planning")
    assert set(init["skills"]) >= {"planning-only", "writing-a-plan"}


def test_skill_markdown_on_disk(
    stack: Provisioned, work_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SKILL.md a skill becomes, read back by the CLI itself ([[write]] would not show it: use a tiny CLI)."""
    spy = tmp_path / "spy-claude"
    spy.write_text(
        "#!/usr/bin/env python3\nimport json, pathlib\n"
        "p = pathlib.Path('.claude/skills/house-style/SKILL.md').read_text()\n"
        "c = pathlib.Path('.claude/CLAUDE.md').read_text()[:40]\n"
        "print(json.dumps({'type':'result','subtype':'success','is_error':False,'result':json.dumps([p,c]),"
        "'session_id':'s','total_cost_usd':0}))\n"
    )
    spy.chmod(0o755)
    monkeypatch.setenv("CLAUDE_CLI_PATH", str(spy))
    get_settings.cache_clear()
    registry.put(
        "skill",
        SkillSpec(name="house-style", description='Say "hi": briefly', content="Body.", agents=["*"]),
        actor="test",
    )
    task = run_task(stack, "hello")
    skill, claude_md = json.loads(task.result or "[]")
    assert skill == '---\nname: house-style\ndescription: "Say \\"hi\\": briefly"\n---\n\nBody.\n'
    assert claude_md.startswith("# Brain")


def test_planning_cannot_write_files(stack: Provisioned) -> None:
    task = run_task(stack, "[[write:PLAN-TRY.md:nope]]", agent="planning")
    assert task.status == TaskStatus.COMPLETED
    assert task.result == "I could not write PLAN-TRY.md: permission denied."
    denied = [
        e.payload
        for e in output.read_events(task.task_id)
        if e.payload.get("kind") == "system" and e.payload["data"].get("subtype") == "permission_denied"
    ]
    assert denied


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(cwd),
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@e",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@e",
        },
    ).stdout.strip()


@pytest.fixture
def remote(tmp_path: Path) -> tuple[Path, str]:
    """A bare repository with main (2 commits) and a feature branch; returns it and main's first commit."""
    src = tmp_path / "src"
    src.mkdir()
    git("init", "-q", "-b", "main", cwd=src)
    (src / "README.md").write_text("one\n")
    git("add", ".", cwd=src)
    git("commit", "-qm", "one", cwd=src)
    first = git("rev-parse", "HEAD", cwd=src)
    (src / "README.md").write_text("two\n")
    git("commit", "-qam", "two", cwd=src)
    git("checkout", "-qb", "feature", cwd=src)
    (src / "FEATURE").write_text("f\n")
    git("add", ".", cwd=src)
    git("commit", "-qm", "feature", cwd=src)
    git("checkout", "-q", "main", cwd=src)
    bare = tmp_path / "remote.git"
    git("clone", "-q", "--bare", str(src), str(bare), cwd=tmp_path)
    return bare, first


@pytest.mark.parametrize(
    ("ref", "expect_file", "readme"), [(None, None, "two"), ("feature", "FEATURE", "two"), ("FIRST", None, "one")]
)
def test_the_repository_is_cloned_at_its_ref(
    stack: Provisioned,
    tmp_path: Path,
    remote: tuple[Path, str],
    monkeypatch: pytest.MonkeyPatch,
    ref: str | None,
    expect_file: str | None,
    readme: str,
) -> None:
    bare, first = remote
    spy = tmp_path / "spy-claude"
    spy.write_text(
        "#!/usr/bin/env python3\nimport json, os, subprocess\n"
        "files = sorted(os.listdir('.'))\n"
        "depth = subprocess.run(['git','rev-list','--count','HEAD'],capture_output=True,text=True).stdout\n"
        "print(json.dumps({'type':'result','subtype':'success','is_error':False,"
        "'result':json.dumps([os.getcwd(), files, open('README.md').read().strip(), depth.strip()]),"
        "'session_id':'s','total_cost_usd':0}))\n"
    )
    spy.chmod(0o755)
    monkeypatch.setenv("CLAUDE_CLI_PATH", str(spy))
    get_settings.cache_clear()
    repo = RepoContext(full_name="acme/app", clone_url=bare.as_uri(), ref=first if ref == "FIRST" else ref)
    task = run_task(stack, "look", agent="planning", repo=repo)
    assert task.status == TaskStatus.COMPLETED, task.error
    cwd, files, text, depth = json.loads(task.result or "[]")
    assert cwd.endswith("/w/planning/repo")
    assert ".git" in files and (expect_file in files if expect_file else "FEATURE" not in files)
    assert text == readme and depth == "1"  # shallow


def test_a_failed_clone_fails_the_task_clearly(stack: Provisioned, tmp_path: Path) -> None:
    repo = RepoContext(full_name="acme/none", clone_url=str(tmp_path / "missing.git"))
    task = run_task(stack, "[[text]] hi", repo=repo)
    assert task.status == TaskStatus.FAILED and task.error_kind == "workspace"
    assert "git clone failed" in (task.error or "")


class AllTopic(Subscription):
    @property
    def topic(self) -> str:
        return "all"


def test_watchers_get_coalesced_frames_and_gone_connections_are_dropped(
    stack: Provisioned, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = Receiver().start()
    try:
        monkeypatch.setenv("WEBSOCKET_MANAGEMENT_URL", receiver.url)
        get_settings.cache_clear()
        from agent_machine.domain import submission

        task, session = submission.new_task("[[lines:300]] burst")
        for cid in ("watch-session", "watch-task", "dashboard", "gone"):
            connections.add(cid)
        connections.subscribe("watch-session", Subscription(kind="session", id=task.session_id))
        connections.subscribe("watch-task", Subscription(kind="task", id=task.task_id))
        connections.subscribe("dashboard", AllTopic(kind="task", id="-"))
        connections.subscribe("gone", Subscription(kind="session", id=task.session_id))
        receiver.gone.add("gone")
        submission.submit(task, session)
        submission.announce_created(task)  # as chat does: watchers get the whole stream from seq 1
        from tests.integration.runner_support import invoke, receive

        invoke(stack, receive(task.task_id))
        stored = output.read_events(task.task_id)
        for cid in ("watch-session", "watch-task"):
            got = receiver.events(cid)
            assert [e["seq"] for e in got] == [e.seq for e in stored]
            assert got[-1]["type"] == "task.completed"
        # 300 lines (+ init, result, lifecycle) arrived in a handful of posts, not one per line.
        assert len(receiver.frames["watch-session"]) < 40
        lifecycle = [e["type"] for e in receiver.events("dashboard")]
        assert lifecycle == ["task.created", "task.started", "task.completed"]
        assert connections.subscribers([f"session#{task.session_id}"]) == {"watch-session"}
        assert receiver.frames.get("gone") is None
        assert all(len(body) < 128 * 1024 for bodies in receiver.frames.values() for body in bodies)
    finally:
        receiver.stop()
