"""The runner under attack (integration level): the machine's secrets configured the way the local runtime does it
(environment and Secrets Manager, a webhook defined at run time, a data folder with the runtime's files), an agent
with Bash on a task with a repository, the attacker's listener, and everything the task left behind to search.

The runner runs in this process (the Lambda handler) or, for a long-running agent, on "Fargate": the runner
starts an ECS task in the emulator and the test runs it (`python -m runner.fargate_main`) with the same
environment: a process whose environ holds every secret, as the local runtime's ECS tasks do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from agent_machine import aws
from agent_machine.domain import submission
from agent_machine.models import AgentSpec, PermissionMode, RepoContext, Subscription, Task, TaskStatus, WebhookSpec
from agent_machine.settings import get_settings
from agent_machine.store import connections, output, registry, tasks
from local_runtime.provision import Provisioned

from tests.conftest import reset_caches
from tests.integration.fargate_support import Ecs
from tests.integration.runner_support import Receiver, invoke, receive, wait_until
from tests.security.attack import DYNAMIC_WEBHOOK_SECRET, SECRET_NAMES, SECRETS_MANAGER_NAMES, Listener, make_secrets

AGENT = "operator"  # an agent an admin defined with Bash (the built-in executor is the other one with Bash)
WATCHER = "attack-watcher"  # the WebSocket connection watching the task


@dataclass
class Armed:
    secrets: dict[str, str]
    listener: Listener
    receiver: Receiver
    base: Path  # a folder any user may enter, as a checkout or /tmp is (pytest's own tmp_path is not)
    data_dir: Path
    bare_repo: Path
    ecs: Ecs  # where long runs go


@pytest.fixture
def armed(stack: Provisioned, ecs: Ecs, monkeypatch: pytest.MonkeyPatch) -> Iterator[Armed]:
    values = make_secrets()
    base = Path(tempfile.mkdtemp(prefix="am-attack-"))
    base.chmod(0o755)
    listener = Listener().start()
    receiver = Receiver().start()
    # The runner's model upstream: a local stand-in (the real-CLI tests point it at the fake API), so that no
    # request the agent makes through the model proxy leaves the machine.
    upstream = Listener().start()
    try:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", upstream.url)
        for name in SECRET_NAMES:
            monkeypatch.setenv(name, values[name])
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA" + values["AWS_SECRET_ACCESS_KEY"][:16].upper())
        monkeypatch.setenv("WEBSOCKET_MANAGEMENT_URL", receiver.url)
        monkeypatch.setenv("RUNNER_WORK_ROOT", str(base / "runner"))
        monkeypatch.setenv("REPORT_BACK", "false")
        monkeypatch.setenv("TASK_TIMEOUT_SECONDS", "300")
        reset_caches()
        body = json.dumps({name: values[name] for name in SECRETS_MANAGER_NAMES})
        for arn in stack.secrets.values():
            aws.secretsmanager().put_secret_value(SecretId=arn, SecretString=body)
        registry.put(
            "webhook",
            WebhookSpec(name="deploys", agent="planning", secret=values[DYNAMIC_WEBHOOK_SECRET]),
            actor="test",
        )
        registry.put(
            "agent",
            AgentSpec(
                name=AGENT,
                description="an agent with Bash",
                allowed_tools=["Bash", "Read", "WebFetch"],
                permission_mode=PermissionMode.DONT_ASK,
                max_turns=40,
                long_running=False,
            ),
            actor="test",
        )
        data_dir = make_data_dir(base, values, endpoint=os.environ["AWS_ENDPOINT_URL"])
        yield Armed(values, listener, receiver, base, data_dir, make_bare_repo(base), ecs)
    finally:
        listener.stop()
        receiver.stop()
        upstream.stop()
        get_settings.cache_clear()
        shutil.rmtree(base, ignore_errors=True)


def make_data_dir(base: Path, values: Mapping[str, str], *, endpoint: str) -> Path:
    """A data folder as the local runtime keeps it (owner-only): the API token and where the emulator is."""
    data = base / "data"
    data.mkdir(mode=0o700)
    token = data / "api_token"
    token.write_text(values["API_TOKEN"])
    token.chmod(0o600)
    (data / "runtime.json").write_text(json.dumps({"pid": os.getpid(), "endpoint": endpoint}, indent=2))
    return data


def make_bare_repo(base: Path) -> Path:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(base),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@e",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    src, bare = base / "src", base / "remote.git"
    subprocess.run(["git", "init", "-q", "-b", "main", str(src)], check=True, env=env)
    (src / "README.md").write_text("a repository\n")
    subprocess.run(["git", "-C", str(src), "add", "."], check=True, env=env)
    subprocess.run(["git", "-C", str(src), "commit", "-qm", "init"], check=True, env=env)
    subprocess.run(["git", "clone", "-q", "--bare", str(src), str(bare)], check=True, env=env)
    bare.chmod(0o755)
    return bare


def run_attack(stack: Provisioned, armed: Armed, prompt: str, *, agent: str = AGENT) -> Task:
    """The task run to its end by the runner, watched by a WebSocket connection from its first event. The
    operator runs in the runner's Lambda handler, the (built-in) executor in an ECS task (run by the test)."""
    task, session = submission.new_task(prompt, agent=agent)
    repo = RepoContext(full_name="acme/app", clone_url=armed.bare_repo.as_uri())
    task = task.model_copy(update={"repo": repo})
    connections.add(WATCHER)
    connections.subscribe(WATCHER, Subscription(kind="task", id=task.task_id))
    submission.submit(task, session)
    invoke(stack, receive(task.task_id), timeout_seconds=300)
    if (handed := tasks.get(task.task_id)) is not None and handed.status == TaskStatus.QUEUED:
        armed.ecs.run_started(task.task_id).wait(300)  # a long run: handed to an ECS task
    done = wait_until(lambda: (t := tasks.get(task.task_id)) and t.status.terminal and t, timeout=240, interval=0.2)
    assert isinstance(done, Task)
    return done


def left_behind(task: Task, armed: Armed, capfd: pytest.CaptureFixture[str]) -> dict[str, str | bytes]:
    """Where a secret must not be: the stored output, the task (result, error, plan), the WebSocket frames, the
    runner's logs (this process's and its ECS task's stdout and stderr), and what the listener received."""
    logs = capfd.readouterr()
    stored = [e.model_dump_json() for e in output.read_events(task.task_id)]
    frames = b"\n".join(armed.receiver.frames.get(WATCHER, []))
    found: dict[str, str | bytes] = {
        "stored output": "\n".join(stored),
        "task": task.model_dump_json(),
        "websocket frames": frames,
        "runner logs": logs.out + logs.err,
    }
    found.update({f"listener {step}": body for step, body in armed.listener.by_step().items()})
    return found


def tool_results(task: Task) -> list[str]:
    """The text of every tool result the CLI printed (what the agent saw), from the stored output."""
    texts: list[str] = []
    for event in output.read_events(task.task_id):
        data = event.payload.get("data") if event.type.value == "task.output" else None
        message = data.get("message") if isinstance(data, dict) and data.get("type") == "user" else None
        for block in message.get("content", []) if isinstance(message, dict) else []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                content = block.get("content")
                texts.append(content if isinstance(content, str) else json.dumps(content))
    return texts
