"""What a run came to: the final answer, the status and error kind, and the task's share of the CLI's cost and
usage (../shared/claude-cli-protocol.md, "Exit codes and signals").

The cost of a resumed run. The protocol notes say `total_cost_usd` and `modelUsage` continue from the session's
saved totals after `--resume` (and the test fake does that), so a task's cost is the difference from the total
at the end of the previous run. The real 2.1.197 in `-p` mode on a fresh config folder — which is what every
task gets here — reports this run's totals only, and its `modelUsage` also counts helper calls (title
generation) that `usage` does not. Both are handled (`reports_cumulative`): a result is cumulative only if
nothing went down from the previous totals and its main model's tokens cover the previous ones plus this run's
(`usage`, always per run); otherwise it is this run's alone. The session's totals are kept cumulative either
way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from agent_machine import redaction
from agent_machine.models import ModelUsage, TaskStatus, TokenUsage

from runner import config
from runner.stream import AssistantLine, ResultLine, ResultUsage, StreamLine, SystemLine

# Why the runner itself ended a run (None: the CLI ended on its own).
Interruption = Literal["stop", "timeout", "lost", "shutdown", "terminated"]


def clip(text: str | None, max_bytes: int) -> str | None:
    """Text cut to at most max_bytes of UTF-8 (DynamoDB items are bounded), marked when cut. Secrets are redacted
    before the cut, which could otherwise leave the start of one behind."""
    if text is None:
        return None
    text = redaction.latest().text(text)
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    marker = f"\n… [truncated: {len(data)} bytes in all]"
    return data[: max_bytes - len(marker.encode())].decode("utf-8", errors="ignore") + marker


@dataclass
class RunState:
    """Fed every parsed line; keeps only what the outcome needs."""

    cli_session_id: str | None = None
    init: SystemLine | None = None
    result: ResultLine | None = None
    plan: str | None = None
    last_message_id: str | None = None
    last_message_texts: list[str] = field(default_factory=list)
    last_message_bytes: int = 0  # kept texts are bounded: beyond MAX_RESULT_BYTES only the size is counted
    json_lines: int = 0
    text_lines: int = 0
    result_read_at: float | None = None  # time.monotonic() when the (last) result line was read

    def feed(self, line: StreamLine) -> None:
        self.json_lines += 1
        if line.session_id and self.cli_session_id is None:
            self.cli_session_id = line.session_id
        if isinstance(line, SystemLine) and line.subtype == "init":
            self.init = line
            self.cli_session_id = line.session_id or self.cli_session_id
        elif isinstance(line, AssistantLine) and line.parent_tool_use_id is None:
            # One response comes as several lines (one content block each) sharing message.id.
            if line.message.id != self.last_message_id:
                self.last_message_id = line.message.id
                self.last_message_texts = []
                self.last_message_bytes = 0
            for text in line.texts():
                if text and self.last_message_bytes <= config.MAX_RESULT_BYTES:
                    self.last_message_texts.append(text)
                self.last_message_bytes += len(text)
            for use in line.tool_uses():
                if use.get("name") == "ExitPlanMode" and isinstance(use.get("input"), dict):
                    plan = use["input"].get("plan")
                    if isinstance(plan, str) and plan.strip():
                        self.plan = plan
        elif isinstance(line, ResultLine):
            self.result = line
            self.result_read_at = time.monotonic()
            self.cli_session_id = line.session_id or self.cli_session_id

    def final_text(self) -> str | None:
        """The answer, rebuilt from the last assistant message's text blocks (result.result may hold only part)."""
        if self.last_message_texts:
            text = "\n\n".join(self.last_message_texts)
            if self.last_message_bytes > config.MAX_RESULT_BYTES:
                text += f"\n… [truncated: the answer was about {self.last_message_bytes} characters]"
            return text
        if self.result is not None and self.result.result:
            return self.result.result
        return None


@dataclass(frozen=True)
class Prior:
    """The CLI's cumulative totals at the end of the session's previous run (what --resume continues from)."""

    total_cost_usd: float = 0.0
    model_usage: dict[str, ModelUsage] = field(default_factory=dict)


# The outcome's texts: whatever sets them (the run's lines, an exception's message, a PLAN.md), they are stored,
# pushed and posted back, so they never hold a secret.
_REDACTED_FIELDS = frozenset({"result", "error", "plan"})


@dataclass
class Outcome:
    status: TaskStatus
    result: str | None = None
    error: str | None = None
    error_kind: str | None = None
    cost_usd: float = 0.0
    cli_total_cost_usd: float | None = None
    usage: TokenUsage = field(default_factory=TokenUsage)
    model_usage: dict[str, ModelUsage] = field(default_factory=dict)
    cumulative_model_usage: dict[str, ModelUsage] = field(default_factory=dict)
    num_turns: int = 0
    duration_ms: int = 0
    cli_session_id: str | None = None
    plan: str | None = None
    exit_code: int | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _REDACTED_FIELDS and isinstance(value, str):
            value = redaction.latest().text(value)
        super().__setattr__(name, value)

    def event_payload(self) -> dict[str, Any]:
        """The terminal event's payload (task.completed / task.failed / task.stopped)."""
        payload: dict[str, Any] = {
            "status": self.status.value,
            "cost_usd": self.cost_usd,
            "duration_ms": self.duration_ms,
            "num_turns": self.num_turns,
            "usage": self.usage.model_dump(),
            "model_usage": {k: v.model_dump() for k, v in self.model_usage.items()},
            "cli_session_id": self.cli_session_id,
        }
        if self.result is not None:
            payload["result"] = self.result
        if self.error is not None:
            payload["error"] = self.error
            payload["error_kind"] = self.error_kind
        if self.plan is not None:
            payload["plan"] = self.plan
        return payload


def cumulative_model_usage(result: ResultLine) -> dict[str, ModelUsage]:
    return {
        name: ModelUsage(
            input_tokens=m.input_tokens,
            output_tokens=m.output_tokens,
            cache_read_input_tokens=m.cache_read_input_tokens,
            cache_creation_input_tokens=m.cache_creation_input_tokens,
            cost_usd=m.cost_usd,
        )
        for name, m in result.model_usage.items()
    }


def _minus(now: ModelUsage, before: ModelUsage | None) -> ModelUsage:
    if before is None:
        return now
    return ModelUsage(
        input_tokens=max(0, now.input_tokens - before.input_tokens),
        output_tokens=max(0, now.output_tokens - before.output_tokens),
        cache_read_input_tokens=max(0, now.cache_read_input_tokens - before.cache_read_input_tokens),
        cache_creation_input_tokens=max(0, now.cache_creation_input_tokens - before.cache_creation_input_tokens),
        cost_usd=round(max(0.0, now.cost_usd - before.cost_usd), 10),
    )


def _plus(a: dict[str, ModelUsage], b: dict[str, ModelUsage]) -> dict[str, ModelUsage]:
    out = dict(a)
    for name, u in b.items():
        v = out.get(name)
        out[name] = (
            u
            if v is None
            else ModelUsage(
                input_tokens=v.input_tokens + u.input_tokens,
                output_tokens=v.output_tokens + u.output_tokens,
                cache_read_input_tokens=v.cache_read_input_tokens + u.cache_read_input_tokens,
                cache_creation_input_tokens=v.cache_creation_input_tokens + u.cache_creation_input_tokens,
                cost_usd=round(v.cost_usd + u.cost_usd, 10),
            )
        )
    return out


def _tokens(u: TokenUsage | ResultUsage | None) -> int:
    if u is None:
        return 0
    return u.input_tokens + u.output_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens


def _main_entry(usage: dict[str, ModelUsage], model: str | None) -> ModelUsage | None:
    """The main model's entry (the init line's model; modelUsage may name it with a date suffix)."""
    if not model:
        return None
    if model in usage:
        return usage[model]
    matches = [u for name, u in usage.items() if name.startswith(model) or model.startswith(name)]
    return matches[0] if len(matches) == 1 else None


def reports_cumulative(result: ResultLine, before: Prior, main_model: str | None = None) -> bool:
    """Whether a resumed run's totals include the previous runs' (see the module docstring).

    Cumulative totals never go down: the cost and every model the session used before must be at least what
    they were. And they hold this run's main-loop tokens (`usage`) on top of the previous ones — checked on the
    main model's entry when it is known, since `modelUsage` also counts helper calls (title generation) that
    `usage` leaves out and that can outweigh a short previous run."""
    if before.total_cost_usd <= 0 and not before.model_usage:
        return False  # nothing before: per-run and cumulative are the same
    epsilon = 1e-9
    if (result.total_cost_usd or 0.0) + epsilon < before.total_cost_usd:
        return False
    if not before.model_usage:
        return True  # no token figures: trust the notes
    reported = cumulative_model_usage(result)
    for name, prev in before.model_usage.items():
        now = reported.get(name)
        if now is None or _tokens(now) < _tokens(prev) or now.cost_usd + epsilon < prev.cost_usd:
            return False
    this_run = _tokens(result.usage)
    main_now, main_before = _main_entry(reported, main_model), _main_entry(before.model_usage, main_model)
    if main_now is not None and main_before is not None:
        return _tokens(main_now) >= _tokens(main_before) + this_run
    return sum(_tokens(u) for u in reported.values()) >= sum(_tokens(u) for u in before.model_usage.values()) + this_run


def interruption_status(reason: Interruption) -> tuple[TaskStatus, str, str]:
    if reason == "timeout":
        return TaskStatus.TIMED_OUT, "timed_out", "the task ran out of time and was interrupted"
    if reason == "shutdown":
        return TaskStatus.STOPPED, "shutdown", "the machine shut down while the task ran"
    if reason == "terminated":
        return TaskStatus.STOPPED, "terminated", "the runner was terminated (SIGTERM) while the task ran"
    return TaskStatus.STOPPED, "stopped", "stopped by request"


def decide(
    state: RunState,
    *,
    exit_code: int | None,
    interruption: Interruption | None,
    stderr_tail: str,
    resumed_cli_session: str | None,
    prior: Prior | None,
    timeout_detail: str = "",
    finished_before_interruption: bool = False,
) -> Outcome:
    """The task's outcome from the run's lines, exit code and why (if at all) the runner interrupted it.

    `finished_before_interruption`: a successful result had been read when the interruption was asked for (a
    stop racing the run's end): the run completed, whatever came after."""
    result = state.result
    out = Outcome(
        status=TaskStatus.FAILED,
        exit_code=exit_code,
        cli_session_id=state.cli_session_id,
        plan=clip(state.plan, config.MAX_PLAN_BYTES),
    )
    if result is not None:
        total = result.total_cost_usd or 0.0
        reported = cumulative_model_usage(result)
        resumed = resumed_cli_session is not None and result.session_id == resumed_cli_session
        before = prior if (resumed and prior is not None) else Prior()
        main_model = state.init.model if state.init is not None else None
        if reports_cumulative(result, before, main_model):
            out.cost_usd = round(max(0.0, total - before.total_cost_usd), 10)
            out.model_usage = {name: _minus(m, before.model_usage.get(name)) for name, m in reported.items()}
            out.cli_total_cost_usd, out.cumulative_model_usage = total, reported
        else:
            out.cost_usd = round(total, 10)
            out.model_usage = reported
            out.cli_total_cost_usd = round(before.total_cost_usd + total, 10)
            out.cumulative_model_usage = _plus(before.model_usage, reported)
        if result.usage is not None:
            out.usage = TokenUsage(
                input_tokens=result.usage.input_tokens,
                output_tokens=result.usage.output_tokens,
                cache_read_input_tokens=result.usage.cache_read_input_tokens,
                cache_creation_input_tokens=result.usage.cache_creation_input_tokens,
            )
        out.num_turns = result.num_turns
        out.duration_ms = result.duration_ms
    answer = clip(state.final_text(), config.MAX_RESULT_BYTES)

    if finished_before_interruption and interruption != "lost" and result is not None and result.succeeded:
        interruption = None
    if interruption is not None and interruption != "lost":
        status, kind, message = interruption_status(interruption)
        out.status, out.error_kind = status, kind
        out.error = message + (f" ({timeout_detail})" if timeout_detail and interruption == "timeout" else "")
        if result is None:
            out.error += "; the CLI gave no final result, so its cost so far is unknown"
        out.result = answer
        return out
    if result is None:
        code = "signal" if exit_code is not None and exit_code < 0 else "code"
        shown = -exit_code if exit_code is not None and exit_code < 0 else exit_code
        tail = stderr_tail.strip() or "(nothing on stderr)"
        out.error = clip(f"claude exited with {code} {shown} without a result. stderr:\n{tail}", config.MAX_ERROR_BYTES)
        out.error_kind = "no_result"
        return out
    if result.succeeded:
        out.status = TaskStatus.COMPLETED
        out.result = answer if answer is not None else ""
        return out
    out.result = answer if result.subtype != "success" else None
    if result.subtype == "success":  # is_error with subtype success: an API or authentication error
        out.error_kind = "api_error"
        out.error = clip(result.result or "the CLI reported an error", config.MAX_ERROR_BYTES)
    else:
        out.error_kind = result.subtype or "error"
        out.error = clip(result.error_text(), config.MAX_ERROR_BYTES)
    return out
