"""From a run's lines to the task's outcome: status, error kind, final answer, and the cost of a resumed run."""

from __future__ import annotations

from typing import Any

import pytest
from agent_machine.models import ModelUsage, TaskStatus
from runner import config
from runner.results import Prior, RunState, clip, decide
from runner.stream import parse_json_object


def feed(*objs: dict[str, Any]) -> RunState:
    state = RunState()
    for obj in objs:
        state.feed(parse_json_object(obj))
    return state


def assistant(mid: str, text: str | None = None, parent: str | None = None, **block: Any) -> dict[str, Any]:
    content = [{"type": "text", "text": text}] if text is not None else [block]
    return {
        "type": "assistant",
        "session_id": "cli-1",
        "parent_tool_use_id": parent,
        "message": {"id": mid, "content": content},
    }


def result(
    subtype: str = "success",
    *,
    is_error: bool = False,
    cost: float = 0.01,
    tokens: int = 100,
    models: dict[str, tuple[int, float]] | None = None,
    session: str = "cli-1",
    **extra: Any,
) -> dict[str, Any]:
    model_usage = {
        name: {"inputTokens": t, "outputTokens": 0, "costUSD": c}
        for name, (t, c) in (models or {"m": (tokens, cost)}).items()
    }
    return {
        "type": "result",
        "subtype": subtype,
        "is_error": is_error,
        "session_id": session,
        "total_cost_usd": cost,
        "num_turns": 2,
        "duration_ms": 50,
        "usage": {"input_tokens": tokens, "output_tokens": 0},
        "modelUsage": model_usage,
        **extra,
    }


def outcome(state: RunState, **kwargs: Any) -> Any:
    args: dict[str, Any] = {
        "exit_code": 0,
        "interruption": None,
        "stderr_tail": "",
        "resumed_cli_session": None,
        "prior": None,
    }
    args.update(kwargs)
    return decide(state, **args)


def test_success_rebuilds_the_answer_from_the_last_message() -> None:
    state = feed(
        assistant("m1", "Let me check."),
        assistant("m2", "Part one."),
        assistant("m3", "ignored", parent="toolu_1"),  # a sub-agent's line
        assistant("m2", "Part two."),
        result(result="Part two."),
    )
    out = outcome(state)
    assert out.status == TaskStatus.COMPLETED and out.result == "Part one.\n\nPart two."
    assert out.cost_usd == 0.01 and out.num_turns == 2 and out.usage.input_tokens == 100


@pytest.mark.parametrize(
    ("subtype", "kind"),
    [
        ("error_max_turns", "error_max_turns"),
        ("error_max_budget_usd", "error_max_budget_usd"),
        ("error_during_execution", "error_during_execution"),
    ],
)
def test_error_results_keep_their_kind(subtype: str, kind: str) -> None:
    out = outcome(feed(result(subtype, is_error=True, errors=["Reached maximum number of turns (3)"])), exit_code=1)
    assert out.status == TaskStatus.FAILED and out.error_kind == kind
    assert out.error == "Reached maximum number of turns (3)" and out.cost_usd == 0.01


def test_is_error_with_success_subtype_is_an_api_error() -> None:
    out = outcome(feed(result(is_error=True, result="API Error: 500 boom")), exit_code=1)
    assert out.status == TaskStatus.FAILED and out.error_kind == "api_error" and out.error == "API Error: 500 boom"


def test_no_result_is_a_failure_with_the_stderr_tail() -> None:
    out = outcome(feed(assistant("m1", "hi")), exit_code=3, stderr_tail="line 1\nfatal: boom")
    assert out.status == TaskStatus.FAILED and out.error_kind == "no_result"
    assert out.error == "claude exited with code 3 without a result. stderr:\nline 1\nfatal: boom"
    killed = outcome(RunState(), exit_code=-9)
    assert "exited with signal 9" in (killed.error or "") and "(nothing on stderr)" in (killed.error or "")


@pytest.mark.parametrize(
    ("reason", "status", "kind"),
    [
        ("stop", TaskStatus.STOPPED, "stopped"),
        ("timeout", TaskStatus.TIMED_OUT, "timed_out"),
        ("shutdown", TaskStatus.STOPPED, "shutdown"),
    ],
)
def test_interruptions_win_over_the_result(reason: str, status: TaskStatus, kind: str) -> None:
    state = feed(
        assistant("m1", "partial"),
        result("error_during_execution", is_error=True, cost=0.02, errors=["Request interrupted by user"]),
    )
    out = outcome(state, interruption=reason, timeout_detail="60 s")
    assert out.status == status and out.error_kind == kind and out.cost_usd == 0.02 and out.result == "partial"


def test_cumulative_totals_of_a_resumed_run_are_diffed() -> None:
    """The fake CLI (and the protocol notes): totals continue from the previous run's."""
    prior = Prior(total_cost_usd=0.02, model_usage={"m": ModelUsage(input_tokens=200, cost_usd=0.02)})
    state = feed(result(cost=0.03, tokens=100, models={"m": (300, 0.03)}))
    out = outcome(state, resumed_cli_session="cli-1", prior=prior)
    assert out.cost_usd == pytest.approx(0.01)
    assert out.model_usage["m"].input_tokens == 100 and out.model_usage["m"].cost_usd == pytest.approx(0.01)
    assert out.cli_total_cost_usd == pytest.approx(0.03)


def test_per_run_totals_of_a_resumed_run_are_taken_as_they_are() -> None:
    """The real 2.1.197 in -p mode on a fresh config folder: the resumed run's own totals."""
    prior = Prior(total_cost_usd=0.02, model_usage={"m": ModelUsage(input_tokens=200, cost_usd=0.02)})
    state = feed(result(cost=0.01, tokens=100, models={"m": (100, 0.01)}))
    out = outcome(state, resumed_cli_session="cli-1", prior=prior)
    assert out.cost_usd == pytest.approx(0.01) and out.model_usage["m"].input_tokens == 100
    assert out.cli_total_cost_usd == pytest.approx(0.03)  # the session's total stays cumulative
    assert out.cumulative_model_usage["m"].input_tokens == 300


def test_a_new_cli_session_ignores_the_previous_totals() -> None:
    prior = Prior(total_cost_usd=5.0, model_usage={"m": ModelUsage(input_tokens=9999, cost_usd=5.0)})
    out = outcome(feed(result(cost=0.01, session="cli-2")), resumed_cli_session="cli-1", prior=prior)
    assert out.cost_usd == 0.01 and out.cli_total_cost_usd == 0.01


def test_exit_plan_mode_input_is_the_plan() -> None:
    state = feed(assistant("m1", type="tool_use", id="t1", name="ExitPlanMode", input={"plan": "# Plan: x"}))
    assert state.plan == "# Plan: x"


def test_kept_text_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "MAX_RESULT_BYTES", 1000)
    state = feed(*[assistant("m1", "x" * 300) for _ in range(100)], result())
    assert len(state.last_message_texts) <= 5
    out = outcome(state)
    assert out.result is not None and len(out.result.encode()) <= 1000 and "truncated" in out.result


def test_clip_respects_utf8() -> None:
    text = "é" * 100
    clipped = clip(text, 60)
    assert clipped is not None and len(clipped.encode()) <= 60 and clipped.startswith("é")
    assert clip("short", 60) == "short" and clip(None, 5) is None
