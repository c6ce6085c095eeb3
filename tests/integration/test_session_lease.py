"""One running task per session (issue 13): the session's lease, taken atomically with the claim, renewed by the
heartbeat, released after booking, expiring when its holder dies; busy tasks wait and run in order of creation.

Against the moto server; the runs go through the runner's real Lambda handler with the fake CLI as a subprocess,
fed by a poller that does what the SQS event source does (concurrent invocations, batch item failures kept)."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from agent_machine import aws
from agent_machine.domain import lifecycle
from agent_machine.models import Task, TaskStatus
from agent_machine.settings import get_settings
from agent_machine.store import sessions, tasks
from local_runtime.provision import Provisioned
from runner import config, transcripts

from tests.integration.runner_support import invoke, submit, wait_until

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def work_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "runner"
    monkeypatch.setenv("RUNNER_WORK_ROOT", str(root))
    monkeypatch.setattr(config, "SESSION_BUSY_DELAY_SECONDS", 1)  # busy tasks look again sooner
    yield root


class EventSource:
    """Polls the task queue and hands each message to the runner's handler on its own worker, as the SQS event
    source mapping does with concurrent Lambda invocations."""

    def __init__(self, stack: Provisioned, workers: int) -> None:
        self.stack = stack
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.slots = threading.Semaphore(workers)
        self.done = threading.Event()
        self.futures: list[Future[Any]] = []
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def poll(self) -> None:
        url = get_settings().task_queue_url
        while not self.done.is_set():
            resp = aws.sqs().receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, AttributeNames=["All"], VisibilityTimeout=120
            )
            for msg in resp.get("Messages", []):
                self.slots.acquire()
                self.futures.append(self.pool.submit(self.run, dict(msg)))

    def run(self, msg: dict[str, Any]) -> None:
        try:
            invoke(self.stack, msg, timeout_seconds=600)
        finally:
            self.slots.release()

    def __enter__(self) -> EventSource:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()
        self.pool.shutdown(wait=True)
        for future in self.futures:
            future.result()  # a handler that raised fails the test


def test_five_messages_at_once_run_one_at_a_time_in_order_each_resuming_the_last(
    stack: Provisioned, work_root: Path
) -> None:
    first = submit("[[args]] msg-0")
    session_id = first.session_id
    submitted = [first] + [submit(f"[[args]] msg-{i}", session_id=session_id) for i in range(1, 5)]
    ids = [t.task_id for t in submitted]

    def all_finished() -> list[Task] | None:
        found = {t.task_id: t for t in tasks.get_many(ids)}
        return [found[i] for i in ids] if all(found[i].status.terminal for i in ids) else None

    with EventSource(stack, workers=5):
        done = wait_until(all_finished, timeout=200, interval=0.5)

    assert [t.status for t in done] == [TaskStatus.COMPLETED] * 5, [t.error for t in done]
    by_creation = sorted(done, key=lambda t: (t.created_at, t.task_id))
    # In order of arrival, never two at once.
    for before, after in itertools.pairwise(by_creation):
        assert before.finished_at is not None and after.started_at is not None
        assert before.finished_at <= after.started_at, (before.task_id, after.task_id)
    # The first starts the conversation, each next one resumes the one the previous left: one CLI session.
    cli_session = by_creation[0].cli_session_id
    assert cli_session
    argvs = [json.loads(t.result or "[]") for t in by_creation]
    assert "--resume" not in argvs[0]
    for argv in argvs[1:]:
        assert argv[argv.index("--resume") + 1] == cli_session
    assert {t.cli_session_id for t in by_creation} == {cli_session}
    # One transcript, holding the five prompts in order.
    body = (
        aws.s3()
        .get_object(Bucket=get_settings().artifacts_bucket, Key=transcripts.key(session_id, cli_session))["Body"]
        .read()
        .decode()
    )
    prompts = [t.prompt.split()[-1] for t in by_creation]
    positions = [body.find(p) for p in prompts]
    assert -1 not in positions and positions == sorted(positions)
    # The last booking let the lease go.
    assert sessions.lease_holder(session_id) is None


def test_two_claims_for_one_session_only_one_gets_the_lease(stack: Provisioned) -> None:
    one = submit("[[text]] one")
    two = submit("[[text]] two", session_id=one.session_id)
    barrier = threading.Barrier(2)

    def claim(task: Task, runner: str) -> Task | lifecycle.Refused | lifecycle.SessionBusy | None:
        barrier.wait()
        return lifecycle.claim(task, runner, "lambda", agent_cap_usd=None)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(claim, [one, two], ["lambda:r1", "lambda:r2"]))

    winners = [r for r in results if isinstance(r, Task)]
    assert len(winners) == 1 and sum(isinstance(r, lifecycle.SessionBusy) for r in results) == 1
    winner = winners[0]
    loser = two if winner.task_id == one.task_id else one
    holder = sessions.lease_holder(one.session_id)
    assert holder is not None and holder[0] == winner.task_id
    # The loser is untouched (still queued, nothing held), and can run once the winner is booked.
    stored = tasks.get(loser.task_id)
    assert stored is not None and stored.status == TaskStatus.QUEUED and stored.reserved_usd is None
    assert lifecycle.finish(winner, TaskStatus.COMPLETED, runner_id=winner.runner_id, result="ok")
    assert sessions.lease_holder(one.session_id) is None
    again = lifecycle.claim(loser, "lambda:r3", "lambda", agent_cap_usd=None)
    assert isinstance(again, Task) and again.status == TaskStatus.RUNNING


def test_a_dead_holders_lease_expires_and_a_live_one_is_renewed(stack: Provisioned) -> None:
    one = submit("[[text]] one")
    two = submit("[[text]] two", session_id=one.session_id)
    claimed = lifecycle.claim(one, "lambda:dead", "lambda", agent_cap_usd=None, lease_seconds=2.0)
    assert isinstance(claimed, Task)
    assert isinstance(lifecycle.claim(two, "lambda:r2", "lambda", agent_cap_usd=None), lifecycle.SessionBusy)
    # Its holder renews it (as the heartbeat does) while alive ...
    assert sessions.take_lease(one.session_id, one.task_id, "lambda:dead", seconds=2.0)
    # ... and nobody else can, until it has expired.
    assert not sessions.take_lease(one.session_id, two.task_id, "lambda:r2", seconds=2.0)
    holder = sessions.lease_holder(one.session_id)
    assert holder is not None
    wait_until(lambda: time.time() > holder[1] + 0.1, timeout=30, interval=0.2)
    taken = lifecycle.claim(two, "lambda:r2", "lambda", agent_cap_usd=None)
    assert isinstance(taken, Task)
    # The dead holder's late booking does not take the new holder's lease away.
    assert lifecycle.finish(claimed, TaskStatus.FAILED, runner_id="lambda:dead", error="lost", error_kind="lost")
    after = sessions.lease_holder(one.session_id)
    assert after is not None and after[0] == two.task_id
