"""The CLI's arguments and environment, the workspace's files, and the ECS hand-off's request."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from agent_machine.domain.agents import BUILTIN_AGENTS
from agent_machine.models import AgentSpec, PermissionMode, SkillSpec, Task
from runner import cli, workspace
from runner.workspace import Workspace, git_auth_env, munge, skill_markdown


def ws(tmp_path: Path) -> Workspace:
    return Workspace(
        task_dir=tmp_path,
        home=tmp_path / "home",
        config_dir=tmp_path / "config",
        tmp=tmp_path / "tmp",
        work=tmp_path / "w",
        agent_dir=tmp_path / "w",
        cwd=tmp_path / "w",
    )


RUNNER_ENV = {
    "PATH": "/usr/bin",
    "LANG": "C.UTF-8",
    "TZ": "UTC",
    "HOME": "/root",
    "TMPDIR": "/elsewhere",
    "AWS_ACCESS_KEY_ID": "AKIA",
    "AWS_SECRET_ACCESS_KEY": "s",
    "AWS_SESSION_TOKEN": "t",
    "AWS_REGION": "eu-west-1",
    "AWS_ENDPOINT_URL": "http://moto",
    "AWS_LAMBDA_FUNCTION_NAME": "runner",
    "API_TOKEN": "api",
    "GITHUB_WEBHOOK_SECRET": "g",
    "JIRA_WEBHOOK_SECRET": "j",
    "SENTRY_WEBHOOK_SECRET": "s",
    "CUSTOM_WEBHOOK_SECRET": "c",
    "GITHUB_TOKEN": "ghp",
    "JIRA_API_TOKEN": "jt",
    "SECRETS_NAME": "arn",
    "TASKS_TABLE": "t",
    "ANTHROPIC_BASE_URL": "http://proxy",
    "ANTHROPIC_MODEL": "claude-x",
    "CLAUDE_CODE_MAX_RETRIES": "2",
    "HTTPS_PROXY": "http://proxy:3128",
    "IS_SANDBOX": "1",
    "PYTHONPATH": "/var/task",
    "LD_PRELOAD": "/evil.so",
}


PROXY_ENV = {"ANTHROPIC_BASE_URL": "http://127.0.0.1:40001", "ANTHROPIC_API_KEY": "machine-token"}


def test_env_is_an_allow_list(tmp_path: Path) -> None:
    env = cli.build_env(ws(tmp_path), source=RUNNER_ENV, model_env=PROXY_ENV)
    assert env == {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        "ANTHROPIC_MODEL": "claude-x",
        "CLAUDE_CODE_MAX_RETRIES": "2",
        "HTTPS_PROXY": "http://proxy:3128",
        "NO_PROXY": "127.0.0.1,localhost",  # the model proxy is reached directly, not through the egress proxy
        "no_proxy": "127.0.0.1,localhost",
        "IS_SANDBOX": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "GIT_TERMINAL_PROMPT": "0",
        **cli.DEFAULT_GIT_IDENTITY,
        "HOME": str(tmp_path / "home"),
        "CLAUDE_CONFIG_DIR": str(tmp_path / "config"),
        "TMPDIR": str(tmp_path / "tmp"),
        **PROXY_ENV,  # the runner's own ANTHROPIC_BASE_URL is the proxy's upstream, not the CLI's
    }


REAL_CREDENTIALS = {
    "ANTHROPIC_API_KEY": "sk-ant-real",
    "ANTHROPIC_AUTH_TOKEN": "gateway-token",
    "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat-real",
    "ANTHROPIC_CUSTOM_HEADERS": "x-gateway-key: real",
    "ANTHROPIC_BEDROCK_BASE_URL": "https://bedrock-runtime.eu-west-1.amazonaws.com",
    "ANTHROPIC_FOUNDRY_API_KEY": "foundry",
    "ANTHROPIC_SOME_FUTURE_API_KEY": "future",
    "CLAUDE_CODE_USE_VERTEX": "1",
    "AWS_BEARER_TOKEN_BEDROCK": "bedrock-api-key",
    "AWS_PROFILE": "admin",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x",
    "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "4096",
}


@pytest.mark.parametrize("bedrock", [False, True])
def test_no_real_credential_reaches_the_cli(tmp_path: Path, bedrock: bool) -> None:
    """Whatever credential or endpoint the runner holds, the CLI gets only the model proxy's address and token."""
    source = {**RUNNER_ENV, **REAL_CREDENTIALS, **({"CLAUDE_CODE_USE_BEDROCK": "1"} if bedrock else {})}
    proxy = (
        {
            "CLAUDE_CODE_USE_BEDROCK": "1",
            "ANTHROPIC_BEDROCK_BASE_URL": "http://127.0.0.1:40001/t/machine-token",
            "CLAUDE_CODE_SKIP_BEDROCK_AUTH": "1",
            "AWS_REGION": "eu-west-1",
        }
        if bedrock
        else PROXY_ENV
    )
    env = cli.build_env(ws(tmp_path), source=source, model_env=proxy, extra={"AGENT_MACHINE_RUN": "t.1"})
    secrets = {*REAL_CREDENTIALS.values(), "AKIA", "api", "ghp", "jt", "http://proxy"} - {"1", "4096"}
    assert not secrets & set(env.values())
    assert {n for n in env if n.startswith("AWS_")} == ({"AWS_REGION"} if bedrock else set())
    assert {n: env[n] for n in proxy} == proxy
    assert "CLAUDE_CODE_USE_VERTEX" not in env and env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "4096"


def test_without_a_model_proxy_the_cli_has_no_model_access(tmp_path: Path) -> None:
    env = cli.build_env(ws(tmp_path), source={**RUNNER_ENV, **REAL_CREDENTIALS})
    assert not {n for n in env if n in cli.MODEL_ACCESS_NAMES}


def test_arguments(tmp_path: Path) -> None:
    agent = BUILTIN_AGENTS["planning"].model_copy(update={"model": "sonnet"})
    args = cli.build_args(
        "--help me",
        agent,
        max_budget_usd=0.5,
        resume="cli-1",
        append_system_prompt="extra",
        mcp_config=tmp_path / "mcp.json",
    )
    assert args == [
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        "plan",
        "--max-turns",
        "40",
        "--max-budget-usd",
        "0.5",
        "--model",
        "sonnet",
        "--allowedTools",
        *agent.allowed_tools,
        "--disallowedTools",
        *agent.disallowed_tools,
        "--mcp-config",
        str(tmp_path / "mcp.json"),
        "--strict-mcp-config",
        "--resume",
        "cli-1",
        "--append-system-prompt=extra",
        "--",
        "--help me",
    ]
    bare = cli.build_args(
        "hi",
        AgentSpec(name="x", permission_mode=PermissionMode.DEFAULT),
        max_budget_usd=3,
        resume=None,
        append_system_prompt=None,
        mcp_config=None,
    )
    assert bare == [
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        "default",
        "--max-turns",
        "30",
        "--max-budget-usd",
        "3",
        "--",
        "hi",
    ]


@pytest.mark.parametrize(("value", "text"), [(3.0, "3"), (0.25, "0.25"), (0.00001, "0.00001"), (12.5, "12.5")])
def test_dollar_amounts(value: float, text: str) -> None:
    assert cli.format_usd(value) == text


def test_an_argument_too_long_for_exec_is_cut() -> None:
    cut = cli.clip_arg("x" * 200_000)
    assert len(cut.encode()) <= cli.MAX_ARG_BYTES and cut.endswith("more than one command-line argument can hold]")


def test_missing_cli(tmp_path: Path) -> None:
    with pytest.raises(cli.CliNotFound, match=r"claude CLI not found at /no/claude; install it with `npm install"):
        cli.resolve_executable("/no/claude")
    with pytest.raises(cli.CliNotFound):
        cli.resolve_executable("surely-not-a-command-on-path")
    plain = tmp_path / "claude"
    plain.write_text("#!/bin/sh\n")
    with pytest.raises(cli.CliNotFound):  # not executable
        cli.resolve_executable(str(plain))


def test_describe_leaves_the_prompt_out() -> None:
    inv = cli.Invocation("claude", ["-p", "--append-system-prompt=secret plan", "--", "the prompt"], {}, Path("/"))
    assert inv.describe() == ["-p", "--append-system-prompt=<text>", "-- <prompt>"]


def test_munge_matches_the_cli() -> None:
    assert munge("/tmp/agent-machine/s/a_b.c/w") == "-tmp-agent-machine-s-a-b-c-w"


def test_git_token_goes_only_to_the_repositorys_github_host(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_machine.settings import get_settings

    get_settings.cache_clear()
    env = git_auth_env("https://github.com/acme/app.git", "ghs_abc")
    assert env["GIT_CONFIG_KEY_0"] == "http.https://github.com/.extraheader"
    assert env["GIT_CONFIG_VALUE_0"] == "AUTHORIZATION: basic " + base64.b64encode(b"x-access-token:ghs_abc").decode()
    assert git_auth_env("https://evil.example/acme/app.git", "ghs_abc") == {}
    assert git_auth_env("http://github.com/acme/app.git", "ghs_abc") == {}
    assert git_auth_env("https://github.com/acme/app.git", None) == {}
    monkeypatch.setenv("GITHUB_API_URL", "https://ghe.corp/api/v3")
    get_settings.cache_clear()
    try:
        assert (
            git_auth_env("https://ghe.corp/acme/app.git", "t")["GIT_CONFIG_KEY_0"]
            == "http.https://ghe.corp/.extraheader"
        )
        assert git_auth_env("https://github.com/acme/app.git", "t") == {}
    finally:
        get_settings.cache_clear()


def test_skill_markdown() -> None:
    skill = SkillSpec(name="s1", description="Line one\nline: two", content="Body text\n\n")
    assert skill_markdown(skill) == '---\nname: s1\ndescription: "Line one line: two"\n---\n\nBody text\n'
    own = SkillSpec(name="s2", content="---\nname: s2\ndescription: mine\n---\nBody")
    assert skill_markdown(own) == "---\nname: s2\ndescription: mine\n---\nBody\n"


def test_prepare_lays_out_the_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    task = Task(session_id="sess", prompt="p", agent="reviewer")
    agent = AgentSpec(name="reviewer", description="Reviews pull requests.")
    skills = [SkillSpec(name="style", description="d", content="c", agents=["reviewer"])]
    made = workspace.prepare(task, agent, skills, root=tmp_path)
    assert made.cwd == tmp_path / "s" / "sess" / "w" / "reviewer"
    # Only the running agent's tree: no other agent's instructions above or beside it.
    assert sorted(p.name for p in made.work.iterdir()) == ["reviewer"]
    assert not (made.work / ".claude").exists()
    assert "Reviews pull requests." in (made.cwd / ".claude" / "CLAUDE.md").read_text()
    assert (made.cwd / ".claude" / "skills" / "style" / "SKILL.md").is_file()
    assert oct(made.task_dir.stat().st_mode & 0o777) == "0o700"
    made.cleanup()
    assert not made.task_dir.exists() and not made.work.exists()
    brain = workspace.prepare(Task(session_id="sess", prompt="p"), BUILTIN_AGENTS["brain"], [], root=tmp_path)
    assert brain.cwd == tmp_path / "s" / "sess" / "w" / "brain"
    assert (brain.cwd / ".claude" / "CLAUDE.md").read_text().startswith("# Brain")
    assert not (brain.cwd / "agents").exists()  # the other agents' trees are left out
    planning = workspace.prepare(Task(session_id="s2", prompt="p"), BUILTIN_AGENTS["planning"], [], root=tmp_path)
    assert (planning.cwd / ".claude" / "CLAUDE.md").read_text().startswith("# Planning")
    assert not any(parent.joinpath(".claude").exists() for parent in planning.cwd.parents)


def test_ecs_dispatch_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_machine import aws
    from agent_machine.settings import get_settings
    from runner import fargate

    calls: list[dict[str, Any]] = []

    class FakeEcs:
        def run_task(self, **kwargs: Any) -> dict[str, Any]:
            calls.append(kwargs)
            return {"tasks": [{"taskArn": "arn:aws:ecs:task/1"}], "failures": []}

    for key, value in {
        "FARGATE_MODE": "ecs",
        "ECS_CLUSTER": "c",
        "ECS_TASK_DEFINITION": "td",
        "ECS_SUBNETS": "subnet-a,subnet-b",
        "ECS_SECURITY_GROUPS": "sg-1",
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    monkeypatch.setattr(aws, "ecs", lambda: FakeEcs())
    try:
        task = Task(session_id="s", prompt="p", agent="executor")
        assert fargate.should_dispatch(BUILTIN_AGENTS["executor"]) and not fargate.should_dispatch(
            BUILTIN_AGENTS["brain"]
        )
        assert fargate.dispatch(task) == fargate.Dispatched("ecs", "arn:aws:ecs:task/1")
        request = calls[0]
        assert request["cluster"] == "c" and request["taskDefinition"] == "td"
        assert request["networkConfiguration"]["awsvpcConfiguration"] == {
            "subnets": ["subnet-a", "subnet-b"],
            "securityGroups": ["sg-1"],
            "assignPublicIp": "ENABLED",
        }
        assert request["overrides"] == {
            "containerOverrides": [{"name": "runner", "environment": [{"name": "TASK_ID", "value": task.task_id}]}]
        }
        monkeypatch.setenv("ECS_TASK_DEFINITION", "")
        get_settings.cache_clear()
        assert not fargate.available()  # no task definition: long runs stay on Lambda
    finally:
        get_settings.cache_clear()
