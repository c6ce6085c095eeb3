"""Stop reaches a Fargate run the way it reaches a Lambda one (issue 13): the API's stop flags the task, the
runner's heartbeat (HEARTBEAT_SECONDS) reads the flag and interrupts the CLI, and the run is booked stopped with
its cost. Against the moto server's ECS, the Fargate runner as a real process (`python -m runner.fargate_main`)."""

from __future__ import annotations

import time

import pytest
from agent_machine.models import TaskStatus
from agent_machine.store import output, tasks
from local_runtime.provision import Provisioned

from tests.fakes.fake_claude import COST_PER_RESPONSE_USD as COST
from tests.integration.fargate_support import Ecs
from tests.integration.runner_support import invoke, receive, submit, wait_until

pytestmark = pytest.mark.timeout(180)


def test_stop_reaches_a_fargate_run_through_its_heartbeat(stack: Provisioned, ecs: Ecs) -> None:
    task = submit("[[hang]] on fargate", agent="executor")
    invoke(stack, receive(task.task_id))
    fargate = ecs.run_started(task.task_id)
    wait_until(lambda: any(e.payload.get("kind") == "assistant" for e in output.read_events(task.task_id)), timeout=60)
    asked = time.monotonic()
    assert tasks.request_stop(task.task_id) is not None  # what the API's stop does for a running task
    done = wait_until(lambda: (t := tasks.get(task.task_id)) and t.status.terminal and t, timeout=60)
    took = time.monotonic() - asked
    assert fargate.wait(60) == 0
    # Stopped by the flag (not by ecs:StopTask, which books "terminated"), with the cost of what it did.
    assert done.status == TaskStatus.STOPPED and done.error_kind == "stopped", done
    assert done.run_mode == "fargate" and done.cost_usd == pytest.approx(COST)
    assert output.read_events(task.task_id)[-1].type.value == "task.stopped"
    # One heartbeat notices it; the rest is the CLI's exit and the booking. Bounded generously for a loaded
    # machine: the point is that it is the heartbeat, not the watchdog (FARGATE_WATCHDOG_SECONDS) or a timeout.
    assert took < 20, took
