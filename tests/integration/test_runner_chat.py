"""The runner's Lambda handler against the moto stack, with the fake CLI as a real subprocess: chat, resume on
a fresh runner, results, costs, failures."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_machine import aws
from agent_machine.models import TaskStatus
from agent_machine.settings import get_settings
from agent_machine.store import costs, output, sessions, tasks
from local_runtime.provision import Provisioned
from runner import transcripts

from tests.fakes.fake_claude import COST_PER_RESPONSE_USD as COST
from tests.integration.runner_support import run_task

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def work_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "runner"
    monkeypatch.setenv("RUNNER_WORK_ROOT", str(root))
    yield root


def test_chat_completes_with_the_fake_cli_exact_cost(stack: Provisioned, work_root: Path) -> None:
    task = run_task(stack, "What is in this repository?")
    assert task.status == TaskStatus.COMPLETED, task.error
    assert task.result == "All done: What is in this repository?"
    assert task.cost_usd == pytest.approx(2 * COST)
    assert task.num_turns == 2
    assert task.usage.input_tokens == 2 * 1200 and task.usage.output_tokens == 2 * 42
    assert task.model_usage["claude-sonnet-4-5"].cost_usd == pytest.approx(2 * COST)
    assert task.cli_session_id and task.run_mode == "lambda" and task.attempt == 1

    events = output.read_events(task.task_id)
    kinds = [e.type.value for e in events]
    assert kinds[:2] == ["task.created", "task.started"] and kinds[-1] == "task.completed"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert task.last_seq == events[-1].seq
    lines = [e.payload for e in events if e.type.value == "task.output"]
    assert lines[0]["kind"] == "system" and lines[0]["data"]["subtype"] == "init"
    assert {p["kind"] for p in lines} >= {"system", "assistant", "user", "result"}
    final = events[-1].payload
    assert final["cost_usd"] == pytest.approx(2 * COST) and final["num_turns"] == 2
    assert final["result"] == task.result and final["usage"]["input_tokens"] == 2400

    session = sessions.get(task.session_id)
    assert session is not None
    assert session.total_cost_usd == pytest.approx(2 * COST)
    assert session.cli_session_id == task.cli_session_id
    assert session.cli_total_cost_usd == pytest.approx(2 * COST)
    day = {r.key: r for r in costs.day_records(costs.today())}
    assert day["TOTAL"].cost_usd == pytest.approx(2 * COST) and day["TOTAL"].tasks == 1
    assert day["AGENT#brain"].cost_usd == pytest.approx(2 * COST)
    assert day[f"SESSION#{task.session_id}"].cost_usd == pytest.approx(2 * COST)
    # The working folder and the private HOME are gone; the transcript is in S3.
    assert not any((work_root / "tasks").iterdir())
    obj = aws.s3().get_object(
        Bucket=get_settings().artifacts_bucket, Key=transcripts.key(task.session_id, task.cli_session_id)
    )
    assert obj["Metadata"]["cli-total-cost-usd"] == repr(2 * COST) or float(
        obj["Metadata"]["cli-total-cost-usd"]
    ) == pytest.approx(2 * COST)


def test_second_message_resumes_on_a_fresh_runner(stack: Provisioned, work_root: Path) -> None:
    first = run_task(stack, "[[text:first answer]] remember the word kiwi")
    assert first.status == TaskStatus.COMPLETED
    # A different runner: nothing of the first run is on its disk.
    shutil.rmtree(work_root)
    second = run_task(stack, "[[args]] what was the word?", session_id=first.session_id)
    assert second.status == TaskStatus.COMPLETED, second.error
    argv = json.loads(second.result or "[]")
    assert argv[argv.index("--resume") + 1] == first.cli_session_id
    assert second.cli_session_id == first.cli_session_id
    # The CLI's total is cumulative (2 responses so far); the second task cost one response.
    assert second.cost_usd == pytest.approx(COST)
    assert second.model_usage["claude-sonnet-4-5"].cost_usd == pytest.approx(COST)
    session = sessions.get(first.session_id)
    assert session is not None
    assert session.total_cost_usd == pytest.approx(2 * COST)
    assert session.cli_total_cost_usd == pytest.approx(2 * COST)
    # A third message continues the same conversation again.
    third = run_task(stack, "[[text]] and again", session_id=first.session_id)
    assert third.cost_usd == pytest.approx(COST)
    assert sessions.get(first.session_id).total_cost_usd == pytest.approx(3 * COST)  # type: ignore[union-attr]


def test_resume_without_a_stored_transcript_starts_a_new_conversation(stack: Provisioned, work_root: Path) -> None:
    first = run_task(stack, "[[text]] hello")
    assert first.cli_session_id
    aws.s3().delete_object(
        Bucket=get_settings().artifacts_bucket, Key=transcripts.key(first.session_id, first.cli_session_id)
    )
    second = run_task(stack, "[[args]] again", session_id=first.session_id)
    assert second.status == TaskStatus.COMPLETED
    assert "--resume" not in json.loads(second.result or "[]")
    assert second.cost_usd == pytest.approx(COST)
    notices = [e.payload for e in output.read_events(second.task_id) if e.payload.get("kind") == "notice"]
    assert notices and "new one" in notices[0]["text"]


def test_cli_arguments_follow_the_agent(stack: Provisioned, work_root: Path) -> None:
    task = run_task(stack, "[[args]] -p looks like a flag", agent="planning", max_budget_usd=1.25)
    assert task.status == TaskStatus.COMPLETED, task.error
    argv = json.loads(task.result or "[]")
    assert argv[:5] == ["-p", "--output-format", "stream-json", "--verbose", "--permission-mode"]
    assert argv[argv.index("--permission-mode") + 1] == "plan"
    assert argv[argv.index("--max-turns") + 1] == "40"
    assert argv[argv.index("--max-budget-usd") + 1] == "1.25"
    assert "Edit" in argv and "Write" in argv  # planning's disallowed tools
    assert argv[argv.index("--mcp-config") + 1].endswith("mcp.json")
    assert argv[-2:] == ["--", "[[args]] -p looks like a flag"]
    assert any(a.startswith("--append-system-prompt=") and task.task_id in a for a in argv)
    # A planning run's final answer is kept as the task's plan.
    assert task.plan == task.result


def test_max_turns_is_recorded_as_error_max_turns(stack: Provisioned, work_root: Path) -> None:
    task = run_task(stack, "[[turns:40]] loop", agent="brain")  # brain: --max-turns 30
    assert task.status == TaskStatus.FAILED
    assert task.error_kind == "error_max_turns"
    assert "maximum number of turns (30)" in (task.error or "")
    assert task.cost_usd == pytest.approx(30 * COST)
    assert task.num_turns == 30


def test_api_error_result_is_a_failure(stack: Provisioned, work_root: Path) -> None:
    task = run_task(stack, "[[error]]")
    assert task.status == TaskStatus.FAILED and task.error_kind == "api_error"
    assert "API Error: 500" in (task.error or "")


def test_crash_fails_with_the_stderr_tail(stack: Provisioned, work_root: Path) -> None:
    task = run_task(stack, "[[crash]]")
    assert task.status == TaskStatus.FAILED and task.error_kind == "no_result"
    assert "exited with code 3" in (task.error or "") and "fatal: simulated crash" in (task.error or "")
    assert task.cost_usd == 0


def test_missing_cli_fails_clearly(stack: Provisioned, work_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_CLI_PATH", "/nonexistent/claude")
    get_settings.cache_clear()
    task = run_task(stack, "hello")
    assert task.status == TaskStatus.FAILED and task.error_kind == "cli_missing"
    assert task.error == (
        "claude CLI not found at /nonexistent/claude; install it with "
        "`npm install -g @anthropic-ai/claude-code@2.1.197`"
    )
    events = output.read_events(task.task_id)
    assert events[-1].type.value == "task.failed" and events[-1].payload["error_kind"] == "cli_missing"


def test_noise_and_unknown_lines_are_kept_and_tolerated(stack: Provisioned, work_root: Path) -> None:
    task = run_task(stack, "[[noise]] [[text:fine]]")
    assert task.status == TaskStatus.COMPLETED and task.result == "fine"
    payloads = [e.payload for e in output.read_events(task.task_id) if e.type.value == "task.output"]
    kinds = {p["kind"] for p in payloads}
    assert {"text", "rate_limit_event", "tool_progress"} <= kinds
    assert any(p.get("text", "").startswith("npm WARN") for p in payloads)
    assert any(p.get("text") == "{not json" for p in payloads)


def test_huge_line_and_flood_stay_bounded(stack: Provisioned, work_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runner import config

    monkeypatch.setattr(config, "MAX_OUTPUT_BYTES", 2 * 1024 * 1024)
    huge = run_task(stack, "[[huge:600000]]")
    assert huge.status == TaskStatus.COMPLETED
    assert huge.result is not None and len(huge.result.encode()) <= config.MAX_RESULT_BYTES
    assert "truncated" in huge.result
    big = [e.payload for e in output.read_events(huge.task_id) if e.payload.get("truncated")]
    assert big and big[0]["kind"] == "assistant" and big[0]["bytes"] > 600000
    assert len(big[0]["text"]) <= config.PREVIEW_BYTES

    flood = run_task(stack, "[[flood:6]]")
    assert flood.status == TaskStatus.COMPLETED
    assert flood.result is not None and len(flood.result.encode()) <= config.MAX_RESULT_BYTES
    events = output.read_events(flood.task_id)
    stored = sum(len(e.model_dump_json()) for e in events)
    assert stored < 4 * 1024 * 1024  # capped near MAX_OUTPUT_BYTES, not the 6 MB the CLI printed
    assert events[-1].payload["output_dropped_lines"] > 0
    assert any(e.payload.get("kind") == "notice" for e in events)

    no_newline = run_task(stack, "[[nonewline:3]]")
    assert no_newline.status == TaskStatus.FAILED and no_newline.error_kind == "no_result"
    cut = [e.payload for e in output.read_events(no_newline.task_id) if e.payload.get("truncated")]
    assert cut and cut[0]["bytes"] >= 3 * 1024 * 1024


def test_budget_refusal_and_task_cap(stack: Provisioned, work_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    capped = run_task(stack, "[[turns:5]] [[cost:0.5]] spend", max_budget_usd=1.0)
    assert capped.status == TaskStatus.FAILED and capped.error_kind == "error_max_budget_usd"
    assert capped.cost_usd == pytest.approx(1.0)

    monkeypatch.setenv("DAILY_BUDGET_USD", "1.0")
    get_settings.cache_clear()
    refused = run_task(stack, "[[text]] one more")
    assert refused.status == TaskStatus.FAILED and refused.error_kind == "budget"
    assert "daily budget reached" in (refused.error or "")
    assert refused.attempt == 0 and refused.cost_usd == 0
    events = output.read_events(refused.task_id)
    assert [e.type.value for e in events] == ["task.created", "task.failed"]


def test_unknown_agent_fails(stack: Provisioned, work_root: Path) -> None:
    task = run_task(stack, "hello", agent="nobody")
    assert task.status == TaskStatus.FAILED and task.error_kind == "unknown_agent"
    assert tasks.get(task.task_id).attempt == 0  # type: ignore[union-attr]
