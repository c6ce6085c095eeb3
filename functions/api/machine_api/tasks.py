"""Tasks: list (filters, cursor, newest first), one task with its output, children, stop, approve."""

from __future__ import annotations

from typing import Annotated, Any

from agent_machine.models import Task, TaskEvent, TaskSource, TaskStatus
from fastapi import APIRouter, Depends, Query, Security
from pydantic import BaseModel

from machine_api.deps import actor, bearer_scheme
from machine_api.errors import ApiError
from machine_api.paging import cursor_checked

router = APIRouter(prefix="/api/tasks", tags=["tasks"], dependencies=[Security(bearer_scheme)])


OUTPUT_PAGE_BYTES = 4 * 1024 * 1024


class TaskList(BaseModel):
    items: list[Task]
    cursor: str | None


class TaskDetail(BaseModel):
    task: Task
    output: list[TaskEvent]
    last_seq: int
    has_more: bool = False  # more output after last_seq: ask again with after_seq=last_seq


class Approved(BaseModel):
    task_id: str
    session_id: str
    parent_task_id: str
    agent: str


def _get(task_id: str) -> Task:
    from agent_machine.store import tasks  # lazy: keeps boto3 off the API cold start

    task = tasks.get(task_id) if 0 < len(task_id) <= 128 else None
    if task is None:
        raise ApiError(404, "not_found", f"no task {task_id[:128]}")
    return task


# A filter (agent, source) can match few items of an index: a request reads at most this many index pages and then
# answers what it found, with a cursor to go on from.
MAX_PAGES_PER_REQUEST = 5


def _page(**kwargs: Any) -> TaskList:
    from agent_machine.store import tasks  # lazy: keeps boto3 off the API cold start

    with cursor_checked():
        page = tasks.list_tasks(**kwargs, max_pages=MAX_PAGES_PER_REQUEST)
    return TaskList(items=page.items, cursor=page.cursor)


@router.get("", response_model=TaskList, summary="Tasks, newest first")
def list_tasks(
    status: TaskStatus | None = None,
    session_id: Annotated[str | None, Query(max_length=128)] = None,
    agent: Annotated[str | None, Query(max_length=63)] = None,
    source: TaskSource | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> TaskList:
    return _page(status=status, session_id=session_id, agent=agent, source=source, limit=limit, cursor=cursor)


@router.get("/{task_id}", response_model=TaskDetail, summary="A task and its output so far")
def get_task(
    task_id: str, after_seq: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=5000)] = 500
) -> TaskDetail:
    from agent_machine.store import output  # lazy: keeps boto3 off the API cold start

    task = _get(task_id)
    # A page at a time: a chatty task's whole output would pass Lambda's 6 MB response limit.
    events, more = output.read_page(task_id, after_seq, max_events=limit, max_bytes=OUTPUT_PAGE_BYTES)
    return TaskDetail(task=task, output=events, last_seq=events[-1].seq if events else after_seq, has_more=more)


@router.get("/{task_id}/children", response_model=TaskList, summary="Tasks this task delegated or led to")
def children(
    task_id: str,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> TaskList:
    _get(task_id)
    return _page(parent_task_id=task_id, limit=limit, cursor=cursor)


@router.post(
    "/{task_id}/stop",
    response_model=Task,
    summary="Stop a queued or running task",
    responses={404: {"description": "No such task"}, 409: {"description": "Already finished"}},
)
def stop(task_id: str) -> Task:
    from agent_machine.store import tasks  # lazy: keeps boto3 off the API cold start

    task = _get(task_id)
    if task.status.terminal:
        raise ApiError(409, "already_finished", f"task {task_id} is {task.status.value}")
    stopped = tasks.request_stop(task_id)
    if stopped is None:
        raise ApiError(409, "already_finished", f"task {task_id} finished meanwhile")
    if stopped.status == TaskStatus.STOPPED:  # stopped while queued: no runner will ever say so
        from agent_machine.domain.submission import publish_stopped  # lazy: keeps boto3 off the API cold start

        publish_stopped(stopped)
    return stopped


@router.post(
    "/{task_id}/approve",
    response_model=Approved,
    status_code=202,
    summary="Approve a completed planning task's plan: queue an executor task with it",
    responses={404: {"description": "No such task"}, 409: {"description": "Nothing to approve"}},
)
def approve(task_id: str, who: Annotated[str, Depends(actor)]) -> Approved:
    from agent_machine.domain.submission import EnqueueFailed  # lazy: keeps boto3 off the API cold start
    from agent_machine.domain.webhooks import plans  # lazy: keeps boto3 off the API cold start

    try:
        task = plans.approve(task_id, actor=who)
    except LookupError as exc:
        raise ApiError(404, "not_found", f"no task {task_id[:128]}") from exc
    except EnqueueFailed as exc:
        raise ApiError(503, "unavailable", "the executor task could not be enqueued; retry") from exc
    return Approved(task_id=task.task_id, session_id=task.session_id, parent_task_id=task_id, agent=task.agent)
