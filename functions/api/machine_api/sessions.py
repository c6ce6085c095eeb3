"""Sessions: recent sessions, and one session with its tasks and totals."""

from __future__ import annotations

from typing import Annotated

from agent_machine.models import Session, Task
from fastapi import APIRouter, Query, Security
from pydantic import BaseModel

from machine_api.deps import bearer_scheme
from machine_api.errors import ApiError
from machine_api.paging import cursor_checked

router = APIRouter(prefix="/api/sessions", tags=["sessions"], dependencies=[Security(bearer_scheme)])


class SessionList(BaseModel):
    items: list[Session]
    cursor: str | None


class SessionTotals(BaseModel):
    tasks: int
    cost_usd: float
    input_tokens: int
    output_tokens: int


class SessionDetail(BaseModel):
    session: Session
    tasks: list[Task]
    tasks_cursor: str | None
    totals: SessionTotals


@router.get("", response_model=SessionList, summary="Sessions, most recently active first")
def list_sessions(
    limit: Annotated[int, Query(ge=1, le=500)] = 50, cursor: Annotated[str | None, Query(max_length=2048)] = None
) -> SessionList:
    from agent_machine.store import sessions  # lazy: keeps boto3 off the API cold start

    with cursor_checked():
        items, next_cursor = sessions.list_sessions(limit=limit, cursor=cursor)
    return SessionList(items=items, cursor=next_cursor)


@router.get("/{session_id}", response_model=SessionDetail, summary="A session, its tasks (newest first), totals")
def get_session(
    session_id: str,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> SessionDetail:
    from agent_machine.store import sessions, tasks  # lazy: keeps boto3 off the API cold start

    session = sessions.get(session_id) if 0 < len(session_id) <= 128 else None
    if session is None:
        raise ApiError(404, "not_found", f"no session {session_id[:128]}")
    with cursor_checked():
        page = tasks.list_tasks(session_id=session_id, limit=limit, cursor=cursor)
    totals = SessionTotals(
        tasks=session.task_count,
        cost_usd=session.total_cost_usd,
        input_tokens=session.total_input_tokens,
        output_tokens=session.total_output_tokens,
    )
    return SessionDetail(session=session, tasks=page.items, tasks_cursor=page.cursor, totals=totals)
