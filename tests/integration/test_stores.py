"""The data layer against a real moto server: conditional transitions and atomic totals."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from agent_machine.domain import lifecycle, submission
from agent_machine.models import Task, TaskSource, TaskStatus, TokenUsage
from agent_machine.store import costs, sessions, tasks
from local_runtime.provision import Provisioned


def submit_chat(prompt: str = "hello", session_id: str | None = None) -> Task:
    task, session = submission.new_task(prompt, session_id=session_id)
    return submission.submit(task, session).task


def test_two_runners_cannot_both_start_a_task(stack: Provisioned) -> None:
    task = submit_chat()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: tasks.start(task.task_id, f"runner-{i}", "lambda"), range(8)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    stored = tasks.get(task.task_id)
    assert stored is not None and stored.status is TaskStatus.RUNNING and stored.attempt == 1
    assert stored.runner_id == winners[0].runner_id


def test_finish_books_cost_exactly_once_and_only_by_the_owner(stack: Provisioned) -> None:
    task = submit_chat()
    started = tasks.start(task.task_id, "r1", "lambda")
    assert started is not None
    usage = TokenUsage(input_tokens=1200, output_tokens=42)
    assert not lifecycle.finish(started, TaskStatus.COMPLETED, runner_id="someone-else", cost_usd=1.0, usage=usage)
    assert lifecycle.finish(started, TaskStatus.COMPLETED, runner_id="r1", result="ok", cost_usd=0.25, usage=usage)
    assert not lifecycle.finish(started, TaskStatus.COMPLETED, runner_id="r1", cost_usd=0.25, usage=usage)
    session = sessions.get(task.session_id)
    assert session is not None and session.total_cost_usd == pytest.approx(0.25)
    assert session.total_input_tokens == 1200
    assert costs.day_total(costs.today()) == pytest.approx(0.25)
    keys = {r.key: r for r in costs.day_records(costs.today())}
    assert keys["AGENT#brain"].cost_usd == pytest.approx(0.25)
    assert keys["SOURCE#chat"].tasks == 1
    assert keys[f"SESSION#{task.session_id}"].cost_usd == pytest.approx(0.25)


def test_concurrent_finishes_add_up_atomically(stack: Provisioned) -> None:
    first = submit_chat()
    others = [submit_chat(f"more {i}", session_id=first.session_id) for i in range(9)]
    all_tasks = [first, *others]
    started = [tasks.start(t.task_id, "r", "lambda") for t in all_tasks]

    def finish(t: Task | None) -> bool:
        assert t is not None
        return lifecycle.finish(t, TaskStatus.COMPLETED, runner_id="r", cost_usd=0.1)

    with ThreadPoolExecutor(10) as pool:
        assert all(pool.map(finish, started))
    session = sessions.get(first.session_id)
    assert session is not None
    assert session.total_cost_usd == pytest.approx(1.0)
    assert session.task_count == 10


def test_stop_a_queued_task_at_once_and_flag_a_running_one(stack: Provisioned) -> None:
    queued = submit_chat()
    stopped = tasks.request_stop(queued.task_id)
    assert stopped is not None and stopped.status is TaskStatus.STOPPED
    assert tasks.start(queued.task_id, "r", "lambda") is None  # a stopped task never starts

    running = submit_chat()
    assert tasks.start(running.task_id, "r", "lambda")
    flagged = tasks.request_stop(running.task_id)
    assert flagged is not None and flagged.status is TaskStatus.RUNNING and flagged.stop_requested
    beat = tasks.heartbeat(running.task_id, "r", last_seq=5)
    assert beat is not None and beat.stop_requested and beat.last_seq == 5
    assert tasks.heartbeat(running.task_id, "not-the-owner", last_seq=6) is None


def test_unknown_session_is_refused_without_writing(stack: Provisioned) -> None:
    task, _ = submission.new_task("hi", session_id="no-such-session")
    with pytest.raises(submission.UnknownSession):
        submission.submit(task, None)
    assert tasks.get(task.task_id) is None


def test_listing_is_newest_first_with_filters_and_cursor(stack: Provisioned) -> None:
    created = [submit_chat(f"task {i}") for i in range(7)]
    page = tasks.list_tasks(limit=3)
    assert [t.task_id for t in page.items] == [t.task_id for t in reversed(created)][:3]
    assert page.cursor
    rest = tasks.list_tasks(limit=10, cursor=page.cursor)
    assert [t.task_id for t in rest.items] == [t.task_id for t in reversed(created)][3:]
    assert rest.cursor is None
    assert tasks.list_tasks(source=TaskSource.GITHUB).items == []
    assert len(tasks.list_tasks(status=TaskStatus.QUEUED, agent="brain", limit=100).items) == 7
    assert tasks.count_by_status(TaskStatus.QUEUED) == 7


def test_output_reads_a_page_at_a_time(stack: Provisioned) -> None:
    from agent_machine.models import EventType, TaskEvent
    from agent_machine.store import output

    events = [
        TaskEvent(type=EventType.OUTPUT, task_id="t1", session_id="s", seq=i, payload={"text": "x" * 100})
        for i in range(1, 26)
    ]
    for start in range(0, 25, 10):
        output.put_chunk("t1", events[start : start + 10])
    page, more = output.read_page("t1", 0, max_events=12)
    assert [e.seq for e in page] == list(range(1, 13)) and more
    page, more = output.read_page("t1", 12, max_events=100)
    assert [e.seq for e in page] == list(range(13, 26)) and not more
    page, more = output.read_page("t1", 0, max_bytes=1000)
    assert 1 <= len(page) < 10 and more
    assert [e.seq for e in output.read_events("t1", 20)] == [21, 22, 23, 24, 25]


def test_a_chunk_never_overwrites_stored_seqs(stack: Provisioned) -> None:
    """A runner that lost its task (stale heartbeat, requeued by the sweeper) may still flush: its chunk cannot
    replace what the new run stored at the same seqs."""
    from agent_machine.models import EventType, TaskEvent
    from agent_machine.store import output

    def chunk(first: int, text: str) -> list[TaskEvent]:
        return [
            TaskEvent(type=EventType.OUTPUT, task_id="t2", session_id="s", seq=i, payload={"text": text})
            for i in range(first, first + 3)
        ]

    assert output.put_chunk("t2", chunk(1, "new run"))
    assert not output.put_chunk("t2", chunk(1, "lost run"))
    assert [(e.seq, e.payload["text"]) for e in output.read_events("t2")] == [(i, "new run") for i in (1, 2, 3)]
