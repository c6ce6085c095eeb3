"""POST /api/chat: a message to the brain, in a new session or an existing one.

The message becomes the CLI's prompt, an argument of its command line: a NUL byte cannot be one (exec refuses it)
and a lone surrogate cannot be encoded, so both, with the other control characters (terminal escapes...) but tab
and line breaks, are refused here with a 422 rather than queued as a task that can only fail.
"""

from __future__ import annotations

from agent_machine.models import control_character
from fastapi import APIRouter, Security
from pydantic import BaseModel, Field, field_validator

from machine_api.deps import bearer_scheme
from machine_api.errors import ApiError

router = APIRouter(prefix="/api", tags=["chat"], dependencies=[Security(bearer_scheme)])


class ChatRequest(BaseModel):
    message: str = Field(min_length=1, max_length=100_000)
    session_id: str | None = Field(None, min_length=1, max_length=128)

    @field_validator("message", "session_id")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        problem = control_character(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value


class ChatAccepted(BaseModel):
    task_id: str
    session_id: str


@router.post(
    "/chat",
    status_code=202,
    response_model=ChatAccepted,
    summary="Send a chat message (queues a task)",
    responses={404: {"description": "Unknown session"}},
)
def chat(request: ChatRequest) -> ChatAccepted:
    from agent_machine.domain import chat as chat_domain  # lazy: keeps boto3 off the API cold start

    try:
        started = chat_domain.start_chat(request.message, request.session_id)
    except chat_domain.InvalidMessage as exc:
        raise ApiError(422, "invalid", str(exc)) from exc
    except chat_domain.UnknownSession as exc:
        raise ApiError(404, "unknown_session", f"no session {request.session_id}") from exc
    except chat_domain.EnqueueFailed as exc:
        raise ApiError(503, "unavailable", "the task could not be enqueued; retry") from exc
    return ChatAccepted(task_id=started.task_id, session_id=started.session_id)
