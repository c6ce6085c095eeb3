"""A Fargate run that never claims its task (it never started, or died before its claim) counts as an attempt
(issue 13): the next delivery of the task's message (the watchdog copy) starts another, and past
MAX_TASK_ATTEMPTS the task fails with error_kind "fargate_never_started". Against the moto server's ECS."""

from __future__ import annotations

import pytest
from agent_machine.models import TaskStatus
from agent_machine.settings import get_settings
from agent_machine.store import output, tasks
from local_runtime.provision import Provisioned
from runner import config, orchestrator

from tests.fakes.fake_claude import COST_PER_RESPONSE_USD as COST
from tests.integration.fargate_support import Ecs
from tests.integration.runner_support import invoke, receive, submit, wait_until

pytestmark = pytest.mark.timeout(180)


def ecs_runs(ecs: Ecs, task_id: str) -> list[str]:
    return list(ecs.client.list_tasks(cluster=ecs.cluster, startedBy=f"agent-machine-{task_id}")["taskArns"])


def deliver(task_id: str) -> orchestrator.Disposition:
    """Another delivery of the task's message (its watchdog copy), to the runner's handler."""
    return orchestrator.handle(orchestrator.Message(task_id=task_id), run_mode="lambda")


def test_a_fargate_run_that_never_claims_is_an_attempt_and_the_next_one_runs_it(
    stack: Provisioned, ecs: Ecs, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = submit("[[text:done on fargate]] implement it", agent="executor")
    assert invoke(stack, receive(task.task_id)) == {"batchItemFailures": []}
    assert len(ecs_runs(ecs, task.task_id)) == 1
    # A delivery while that run may still be starting starts nothing and counts nothing.
    assert deliver(task.task_id) is orchestrator.Disposition.DONE
    assert len(ecs_runs(ecs, task.task_id)) == 1
    waiting = tasks.get(task.task_id)
    assert waiting is not None and waiting.status == TaskStatus.QUEUED and waiting.attempt == 0
    # Once it has had its time, it was lost: counted, and another run is started.
    monkeypatch.setattr(config, "FARGATE_CLAIM_WAIT_SECONDS", 0.0)
    assert deliver(task.task_id) is orchestrator.Disposition.DONE
    assert len(ecs_runs(ecs, task.task_id)) == 2
    counted = tasks.get(task.task_id)
    assert counted is not None and counted.status == TaskStatus.QUEUED and counted.attempt == 1
    # The second run claims and completes it: its claim is the second attempt, and no lost one is left to count.
    fargate = ecs.run(ecs.started(task.task_id))
    assert fargate.wait() == 0
    done = tasks.get(task.task_id)
    assert done is not None and done.status == TaskStatus.COMPLETED, done
    assert done.attempt == 2 and done.cost_usd == pytest.approx(COST)
    assert tasks.dispatched_at(task.task_id) is None
    assert deliver(task.task_id) is orchestrator.Disposition.DONE
    assert len(ecs_runs(ecs, task.task_id)) == 2


def test_fargate_runs_that_never_claim_fail_the_task_after_max_attempts(
    stack: Provisioned, ecs: Ecs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "FARGATE_CLAIM_WAIT_SECONDS", 0.0)
    task = submit("[[text]] implement it", agent="executor")
    invoke(stack, receive(task.task_id))
    attempts = get_settings().max_task_attempts
    for _ in range(attempts):
        assert deliver(task.task_id) is orchestrator.Disposition.DONE
    failed = tasks.get(task.task_id)
    assert failed is not None and failed.status == TaskStatus.FAILED, failed
    assert failed.error_kind == "fargate_never_started" and failed.attempt == attempts
    assert failed.error and "none claimed it" in failed.error
    assert len(ecs_runs(ecs, task.task_id)) == attempts  # the first and one per lost run but the last
    assert output.read_events(task.task_id)[-1].type.value == "task.failed"
    assert deliver(task.task_id) is orchestrator.Disposition.DONE  # finished: nothing more is started
    assert len(ecs_runs(ecs, task.task_id)) == attempts


def test_max_concurrent_tasks_counts_fargate_and_lambda_runs_together(
    stack: Provisioned, ecs: Ecs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_CONCURRENT_TASKS", "1")
    get_settings.cache_clear()
    long_run = submit("[[hang]] on fargate", agent="executor")
    invoke(stack, receive(long_run.task_id))
    fargate = ecs.run_started(long_run.task_id)
    wait_until(lambda: (t := tasks.get(long_run.task_id)) and t.status == TaskStatus.RUNNING, timeout=60)
    # A chat message for Lambda waits while the Fargate run takes the one slot: its message comes back later.
    chat = submit("[[text:hello]] hi")
    message = receive(chat.task_id)
    assert invoke(stack, message) == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
    waiting = tasks.get(chat.task_id)
    assert waiting is not None and waiting.status == TaskStatus.QUEUED and waiting.attempt == 0
    fargate.terminate()
    assert fargate.wait(60) == 0
    assert deliver(chat.task_id) is orchestrator.Disposition.DONE
    done = tasks.get(chat.task_id)
    assert done is not None and done.status == TaskStatus.COMPLETED and done.result == "hello", done
