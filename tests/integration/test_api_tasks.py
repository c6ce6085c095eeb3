"""Tasks over the REST API: filters, newest first, cursor pagination, output, children, stop and approve."""

from __future__ import annotations

import json
from typing import Any

import pytest
from agent_machine.models import EventType, Task, TaskEvent, TaskSource
from local_runtime.provision import Provisioned

from tests.integration.test_ingress_github import TOKEN, call, queue_bodies


def submit(
    prompt: str,
    *,
    agent: str = "brain",
    source: TaskSource = TaskSource.CHAT,
    session_id: str | None = None,
    parent: Task | None = None,
) -> Task:
    from agent_machine.domain import submission

    task, session = submission.new_task(prompt, session_id=session_id, agent=agent, source=source, parent=parent)
    return submission.submit(task, session).task


def get(path: str, query: str = "") -> tuple[int, Any]:
    return call("GET", path, headers=TOKEN, query=query)


def test_filters_newest_first_and_cursor_pagination(stack: Provisioned) -> None:
    created = [submit(f"chat {i}") for i in range(7)]
    planning = submit("plan it", agent="planning", source=TaskSource.GITHUB)
    status, page = get("/api/tasks", "limit=3")
    assert status == 200
    seen = [t["task_id"] for t in page["items"]]
    while page["cursor"]:
        status, page = get("/api/tasks", f"limit=3&cursor={page['cursor']}")
        assert status == 200
        seen += [t["task_id"] for t in page["items"]]
    assert seen == [planning.task_id] + [t.task_id for t in reversed(created)]
    assert [t["task_id"] for t in get("/api/tasks", "agent=planning")[1]["items"]] == [planning.task_id]
    assert len(get("/api/tasks", "source=chat")[1]["items"]) == 7
    assert len(get("/api/tasks", "status=queued&source=github")[1]["items"]) == 1
    assert get("/api/tasks", "status=running")[1]["items"] == []
    session_page = get("/api/tasks", f"session_id={created[0].session_id}")[1]
    assert [t["task_id"] for t in session_page["items"]] == [created[0].task_id]
    # Filtered pages paginate too.
    first = get("/api/tasks", "source=chat&limit=4")[1]
    rest = get("/api/tasks", f"source=chat&limit=4&cursor={first['cursor']}")[1]
    assert len(first["items"]) == 4 and len(rest["items"]) == 3 and rest["cursor"] is None


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "status=bogus", "source=bogus", "limit=x"])
def test_bad_query_is_422(stack: Provisioned, query: str) -> None:
    status, answer = get("/api/tasks", query)
    assert (status, answer["error"]["code"]) == (422, "invalid")
    assert answer["error"]["details"]


@pytest.mark.parametrize("path", ["/api/tasks", "/api/sessions", "/api/events", "/api/tasks/x/children"])
def test_bad_cursor_is_400(stack: Provisioned, path: str) -> None:
    import base64

    submit("so that the parent exists")
    wrong_key = base64.urlsafe_b64encode(json.dumps({"x": {"S": "1"}}).encode()).decode()
    other_listing = base64.urlsafe_b64encode(
        json.dumps({"task_id": {"S": "a"}, "created_at": {"S": "b"}, "list_pk": {"S": "other"}}).encode()
    ).decode()
    for cursor in ("not-base64!!", wrong_key, base64.urlsafe_b64encode(b"[1]").decode(), other_listing):
        status, answer = get(path, f"cursor={cursor}")
        if path.endswith("/children"):
            assert status == 404  # the unknown task is found first
            continue
        assert (status, answer["error"]["code"]) == (400, "bad_cursor"), cursor


def test_limit_500_is_allowed(stack: Provisioned) -> None:
    assert get("/api/tasks", "limit=500")[0] == 200


def test_task_with_output_and_children(stack: Provisioned) -> None:
    from agent_machine.store import output

    parent = submit("parent")
    child = submit("child", session_id=parent.session_id, parent=parent)
    output.put_chunk(
        parent.task_id,
        [
            TaskEvent(
                type=EventType.OUTPUT,
                task_id=parent.task_id,
                session_id=parent.session_id,
                seq=i,
                payload={"text": f"line {i}"},
            )
            for i in (2, 3, 4)  # seq 1 is the task.created event submit stored
        ],
    )
    status, detail = get(f"/api/tasks/{parent.task_id}")
    assert status == 200
    assert detail["task"]["task_id"] == parent.task_id
    assert [e["type"] for e in detail["output"]] == ["task.created", "task.output", "task.output", "task.output"]
    assert [e["payload"]["text"] for e in detail["output"][1:]] == ["line 2", "line 3", "line 4"]
    assert detail["last_seq"] == 4
    assert [e["seq"] for e in get(f"/api/tasks/{parent.task_id}", "after_seq=2")[1]["output"]] == [3, 4]
    status, children = get(f"/api/tasks/{parent.task_id}/children")
    assert [t["task_id"] for t in children["items"]] == [child.task_id]


@pytest.mark.parametrize("path", ["/api/tasks/nope", "/api/tasks/nope/children", "/api/sessions/nope"])
def test_unknown_ids_are_404(stack: Provisioned, path: str) -> None:
    status, answer = get(path)
    assert (status, answer["error"]["code"]) == (404, "not_found")


def test_stop(stack: Provisioned) -> None:
    from agent_machine.store import tasks

    queued = submit("to stop")
    status, task = call("POST", f"/api/tasks/{queued.task_id}/stop", headers=TOKEN)
    assert (status, task["status"], task["stop_requested"]) == (200, "stopped", True)
    status, answer = call("POST", f"/api/tasks/{queued.task_id}/stop", headers=TOKEN)
    assert (status, answer["error"]["code"]) == (409, "already_finished")
    running = submit("running")
    assert tasks.start(running.task_id, "runner-1", "lambda") is not None
    status, task = call("POST", f"/api/tasks/{running.task_id}/stop", headers=TOKEN)
    assert (status, task["status"], task["stop_requested"]) == (200, "running", True)
    assert call("POST", "/api/tasks/nope/stop", headers=TOKEN)[0] == 404


def test_approve(stack: Provisioned) -> None:
    from agent_machine.store import tasks

    chat_task = submit("not a plan")
    status, answer = call("POST", f"/api/tasks/{chat_task.task_id}/approve", headers=TOKEN)
    assert (status, answer["error"]["code"]) == (409, "not_approvable")
    planning = submit("plan", agent="planning", source=TaskSource.JIRA)
    assert call("POST", f"/api/tasks/{planning.task_id}/approve", headers=TOKEN)[0] == 409  # still queued
    tasks.set_fields(planning.task_id, status="completed")
    assert call("POST", f"/api/tasks/{planning.task_id}/approve", headers=TOKEN)[0] == 409  # no plan
    tasks.set_fields(planning.task_id, plan="Step 1. Do it.")
    queue_bodies(stack)  # drain
    status, approved = call("POST", f"/api/tasks/{planning.task_id}/approve", headers=TOKEN)
    assert status == 202, approved
    assert (approved["agent"], approved["session_id"]) == ("executor", planning.session_id)
    assert queue_bodies(stack) == [{"task_id": approved["task_id"]}]
    executor = tasks.get(approved["task_id"])
    assert executor is not None
    assert (executor.plan, executor.parent_task_id, executor.source) == (
        "Step 1. Do it.",
        planning.task_id,
        TaskSource.JIRA,
    )
    assert call("POST", f"/api/tasks/{planning.task_id}/approve", headers=TOKEN)[0] == 409
    # After the executor failed, the plan can be approved again (a new executor).
    from agent_machine.domain import lifecycle

    assert lifecycle.fail_unfinished(executor.task_id, "boom", "test")
    status, again = call("POST", f"/api/tasks/{planning.task_id}/approve", headers=TOKEN)
    assert status == 202
    assert again["task_id"] != approved["task_id"]
    assert call("POST", "/api/tasks/nope/approve", headers=TOKEN)[0] == 404


def test_sessions_list_and_detail(stack: Provisioned) -> None:
    first = submit("one")
    submit("two", session_id=first.session_id)
    other = submit("three")
    status, page = get("/api/sessions", "limit=1")
    assert status == 200 and len(page["items"]) == 1 and page["cursor"]
    status, rest = get("/api/sessions", f"limit=5&cursor={page['cursor']}")
    ids = {s["session_id"] for s in page["items"] + rest["items"]}
    assert ids == {first.session_id, other.session_id}
    status, detail = get(f"/api/sessions/{first.session_id}")
    assert detail["totals"] == {"tasks": 2, "cost_usd": 0.0, "input_tokens": 0, "output_tokens": 0}
    assert json.dumps(detail)  # serialisable as is
