"""No secret the machine knows leaves the runner: a CLI that prints every one of them (the fake CLI really runs
`cat` on a file holding them, and writes one on its stderr) leaves `[redacted]` in the stored output, the
WebSocket frames, the task's result, plan and error, the comment posted to GitHub and the log lines.

The secrets come from everywhere the machine reads them: the environment (API token, webhook secrets, GitHub,
Jira and Sentry tokens), Secrets Manager only (the Anthropic key) and the registry (a dynamic webhook's secret,
with a quote and a slash in it, so its JSON form differs from the value).
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from agent_machine import aws, secrets
from agent_machine.domain import registry_service, submission
from agent_machine.models import RepoContext, Subscription, TaskSource, TaskStatus
from agent_machine.observability import get_logger
from agent_machine.settings import get_settings
from agent_machine.store import connections, output, tasks
from local_runtime.provision import Provisioned

from tests.conftest import TEST_SECRETS, reset_caches
from tests.fakes.fake_github_api import FakeApi
from tests.integration.runner_support import Receiver, invoke, receive

pytestmark = pytest.mark.timeout(180)

MARK = "[redacted]"


@dataclass(frozen=True)
class Known:
    """The secret values of this test and the encodings of them the CLI prints."""

    values: dict[str, str]
    encoded: dict[str, str]

    def needles(self) -> list[str]:
        found: set[str] = set()
        for value in [*self.values.values(), *self.encoded.values()]:
            found.add(value)
            found.add(json.dumps(value)[1:-1])  # as it is inside a JSON document
        return sorted(found)

    def leaks(self, text: str) -> list[str]:
        return [needle for needle in self.needles() if needle in text]


class Lines(logging.Handler):
    """The log lines as Powertools writes them (the logger's own formatter)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def log_lines() -> Iterator[Lines]:
    handler = Lines()
    handler.setFormatter(get_logger().registered_formatter)
    target = logging.getLogger(get_logger().name)
    target.addHandler(handler)
    yield handler
    target.removeHandler(handler)


@pytest.fixture
def known(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> Iterator[Known]:
    tag = uuid.uuid4().hex
    values = {
        "api_token": TEST_SECRETS["API_TOKEN"],
        "webhook_secret": TEST_SECRETS["GITHUB_WEBHOOK_SECRET"],
        "github_token": f"ghp_{tag[:20]}GH{tag[20:]}",
        "jira_token": f"ATATT3x{tag}jira",
        "sentry_token": f"sntrys_{tag}",
        "anthropic_key": f"sk-ant-api03-{tag}{tag[:12]}-AA",
        "dynamic_secret": f'dyn"hook/{tag[:18]}',
    }
    monkeypatch.setenv("GITHUB_TOKEN", values["github_token"])
    monkeypatch.setenv("JIRA_API_TOKEN", values["jira_token"])
    monkeypatch.setenv("SENTRY_AUTH_TOKEN", values["sentry_token"])
    # The Anthropic key only in Secrets Manager, next to the stack's own secrets.
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    aws.secretsmanager().put_secret_value(
        SecretId=get_settings().secrets_name or "",
        SecretString=json.dumps({**TEST_SECRETS, "ANTHROPIC_API_KEY": values["anthropic_key"]}),
    )
    reset_caches()
    assert secrets.get_secret("anthropic_api_key") == values["anthropic_key"]
    registry_service.create_webhook(
        registry_service.WebhookInput(name=f"hook-{tag[:8]}", secret=values["dynamic_secret"]), "test"
    )
    encoded = {
        "github_basic": base64.b64encode(f"x-access-token:{values['github_token']}".encode()).decode(),
        "jira_basic": base64.b64encode(f"bot@example.com:{values['jira_token']}".encode()).decode(),
        "webhook_url": quote(values["webhook_secret"], safe=""),
        "anthropic_hex": values["anthropic_key"].encode().hex(),
    }
    yield Known(values, encoded)


@pytest.fixture
def secrets_file(known: Known) -> Iterator[Path]:
    """The values in a file anyone can read (the CLI may run as an unprivileged user), one per line, plus a JSON
    document holding the dynamic secret (a tool result that shows JSON) and the encoded forms."""
    folder = Path(tempfile.mkdtemp(prefix="redaction-", dir="/tmp"))
    folder.chmod(0o755)
    path = folder / "found.txt"
    lines = [f"{name}={value}" for name, value in {**known.values, **known.encoded}.items()]
    lines.append(json.dumps({"webhook": {"secret": known.values["dynamic_secret"]}}))
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o644)
    yield path
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def work_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Where the runner lays out the task: a folder the CLI's own user can reach (not pytest's 0700 tmp_path)."""
    root = Path(tempfile.mkdtemp(prefix="redaction-runner-", dir="/tmp"))
    root.chmod(0o755)
    monkeypatch.setenv("RUNNER_WORK_ROOT", str(root))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def github(stack: Provisioned, known: Known, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    with FakeApi(github_token=known.values["github_token"]) as fake:
        monkeypatch.setenv("GITHUB_API_URL", fake.url)
        monkeypatch.setenv("REPORT_BACKOFF_SECONDS", "0")
        reset_caches()
        yield fake


@pytest.fixture
def receiver(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    server = Receiver().start()
    monkeypatch.setenv("WEBSOCKET_MANAGEMENT_URL", server.url)
    get_settings.cache_clear()
    yield server
    server.stop()


def stored_output(task_id: str) -> list[dict[str, Any]]:
    """The task's stored events after task.created (which holds the prompt: what the test itself typed)."""
    return [e.model_dump(mode="json") for e in output.read_events(task_id) if e.type.value != "task.created"]


def test_a_cli_printing_every_secret_leaves_none_anywhere(
    stack: Provisioned,
    known: Known,
    secrets_file: Path,
    github: FakeApi,
    receiver: Receiver,
    log_lines: Lines,
    work_root: Path,
) -> None:
    prompt = (
        f"[[sh:cat {secrets_file}]] [[sh:cp {secrets_file} PLAN.md]] "
        f"[[stderr:git: Authorization: basic {known.encoded['github_basic']}]] plan the fix"
    )
    task, session = submission.new_task(prompt, agent="planning", source=TaskSource.GITHUB, source_name="github")
    task = task.model_copy(update={"repo": RepoContext(full_name="octo/repo", issue_number=7)})
    connections.add("watcher")
    connections.subscribe("watcher", Subscription(kind="task", id=task.task_id))
    submission.submit(task, session)

    invoke(stack, receive(task.task_id))

    stored = tasks.get(task.task_id)
    assert stored is not None and stored.status is TaskStatus.COMPLETED, stored and stored.error
    # What the agent saw did reach its output, result and plan: only the secrets in it are gone.
    assert stored.result is not None and MARK in stored.result and "github_token=" in stored.result
    assert known.leaks(stored.result) == []
    assert stored.plan is not None and MARK in stored.plan and "dynamic_secret=" in stored.plan
    assert known.leaks(stored.plan) == []
    assert known.leaks(json.dumps(stored.report)) == []

    events = stored_output(task.task_id)
    text = json.dumps(events, ensure_ascii=False)
    assert known.leaks(text) == []
    kinds = {e["payload"].get("kind") for e in events if e["type"] == "task.output"}
    assert {"user", "assistant", "result", "stderr"} <= kinds
    tool_results = [e for e in events if e["payload"].get("kind") == "user"]
    assert any(MARK in json.dumps(e) for e in tool_results)
    stderr = [e["payload"]["text"] for e in events if e["payload"].get("kind") == "stderr"]
    # The header's user part ("x-access-token:") is no secret and stays; the token's part of the Base64 goes.
    prefix = base64.b64encode(b"x-access-token:").decode()
    assert stderr == [f"git: Authorization: basic {prefix}{MARK}"]

    frames = receiver.events("watcher")
    assert frames and frames[-1]["type"] == "task.completed"
    assert known.leaks(json.dumps(frames, ensure_ascii=False)) == []
    assert MARK in json.dumps(frames, ensure_ascii=False)
    # The raw frames too (what went over the wire, before any JSON decoding).
    assert all(known.leaks(body.decode()) == [] for body in receiver.frames["watcher"])

    bodies = [r.body["body"] for r in github.requests if r.method in ("POST", "PATCH") and r.body]
    assert bodies and MARK in bodies[-1]
    assert [b for b in bodies if known.leaks(b)] == []

    assert log_lines.lines
    assert [line for line in log_lines.lines if known.leaks(line)] == []


def test_an_error_made_of_the_cli_stderr_is_redacted(
    stack: Provisioned, known: Known, log_lines: Lines, work_root: Path
) -> None:
    token = known.values["github_token"]
    task, session = submission.new_task(f"[[crash]] [[stderr:fatal: could not push with {token}]]")
    submission.submit(task, session)

    invoke(stack, receive(task.task_id))

    stored = tasks.get(task.task_id)
    assert stored is not None and stored.status is TaskStatus.FAILED and stored.error_kind == "no_result"
    assert stored.error is not None and f"could not push with {MARK}" in stored.error
    assert known.leaks(stored.error) == []
    assert known.leaks(json.dumps(stored_output(task.task_id), ensure_ascii=False)) == []
    assert [line for line in log_lines.lines if known.leaks(line)] == []


def test_log_lines_are_redacted_whatever_they_quote(known: Known, log_lines: Lines) -> None:
    from agent_machine import redaction

    # A log line never reads anything remote: the registry's secrets are those this process read last (the
    # runner reads them at every run, as here).
    redaction.current()
    log = get_logger()
    log.warning("probe %s", known.values["github_token"], extra={"found": known.values, "more": known.encoded})
    try:
        raise RuntimeError(f"request failed: Authorization: Bearer {known.values['sentry_token']}")
    except RuntimeError:
        log.exception("request failed")
    probe, failure = log_lines.lines[-2:]
    assert known.leaks(probe) == [] and known.leaks(failure) == []
    found = json.loads(probe)["found"]
    assert found == dict.fromkeys(known.values, MARK)
    assert json.loads(failure)["exception"].endswith(f"Bearer {MARK}")


def test_a_secret_shorter_than_the_minimum_is_left_alone(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_machine import redaction

    monkeypatch.setenv("JIRA_API_TOKEN", "abc")
    monkeypatch.setenv("SENTRY_AUTH_TOKEN", "sntrys_long_enough_token")
    reset_caches()
    redactor = redaction.current()
    assert redactor.text("abc and a cab, sntrys_long_enough_token") == f"abc and a cab, {MARK}"
