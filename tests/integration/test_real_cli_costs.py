"""What the real `claude` 2.1.197 reports for the runs of one resumed session, and what the runner books: each
task its own run's cost and tokens (the fake API answers every request with the same usage), the session their
sum — whatever helper calls (title generation) the CLI makes besides."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from agent_machine.models import TaskStatus
from agent_machine.store import sessions
from local_runtime.provision import Provisioned

from tests.integration import test_real_cli
from tests.integration.runner_support import run_task

# The real CLI's fixtures (the binary, the fake API, the runner configured for them).
claude_path = test_real_cli.claude_path
fake_api = test_real_cli.fake_api
real = test_real_cli.real
result_line = test_real_cli.result_line

pytestmark = [pytest.mark.real_cli, pytest.mark.timeout(300)]

INPUT_TOKENS, OUTPUT_TOKENS = 1200, 42  # per request, as fake_anthropic_api.py answers


def test_three_runs_of_one_session_each_book_their_own_cost(
    stack: Provisioned, real: Path, fake_api: tuple[str, Path]
) -> None:
    _, log = fake_api
    booked = []
    session_id: str | None = None
    for n, prompt in enumerate(["[[text]] first", "[[text]] second", "[[text]] and a third"]):
        before = len(log.read_text().splitlines()) if log.exists() else 0
        task = run_task(stack, prompt, session_id=session_id)
        assert task.status == TaskStatus.COMPLETED, task.error
        session_id = task.session_id
        requests = [json.loads(line) for line in log.read_text().splitlines()[before:]]
        final = result_line(task.task_id)
        # The CLI reports this run's own totals: the task gets exactly them, not a difference from the last.
        assert task.cost_usd == pytest.approx(final["total_cost_usd"]) and task.cost_usd > 0, n
        booked_input = sum(m.input_tokens for m in task.model_usage.values())
        booked_output = sum(m.output_tokens for m in task.model_usage.values())
        assert (booked_input, booked_output) == (INPUT_TOKENS * len(requests), OUTPUT_TOKENS * len(requests)), n
        booked.append(task.cost_usd)
        shutil.rmtree(real, ignore_errors=True)  # the next message on another runner
    assert session_id is not None
    session = sessions.get(session_id)
    assert session is not None and session.total_cost_usd == pytest.approx(sum(booked))
