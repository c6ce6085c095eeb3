"""Chat: one user message becomes a brain task in a new or existing session (REST POST /api/chat and the
WebSocket `chat` action both call start_chat). The message comes from the dashboard's authenticated user, so it is
the task's prompt as is (unlike webhook payloads, which are quoted as data).

AWS calls: one TransactWriteItems (task + new session, or task + conditional touch of the existing session) and
one SendMessage. An unknown session_id fails the transaction's condition: UnknownSession, nothing written.
"""

from __future__ import annotations

from pydantic import BaseModel

from agent_machine.domain import submission
from agent_machine.domain.agents import BRAIN, get_agent
from agent_machine.domain.submission import EnqueueFailed, UnknownSession
from agent_machine.models import TaskSource, control_character

MAX_MESSAGE_CHARS = 100_000
MAX_SESSION_ID_CHARS = 128

__all__ = ["ChatStarted", "EnqueueFailed", "InvalidMessage", "UnknownSession", "start_chat"]


class InvalidMessage(ValueError):
    """Empty or too long a message, or a malformed session id."""


class ChatStarted(BaseModel):
    task_id: str
    session_id: str
    agent: str
    new_session: bool


def start_chat(message: str, session_id: str | None = None, *, agent: str = BRAIN) -> ChatStarted:
    """Raises InvalidMessage, UnknownSession (the session does not exist), agents.UnknownAgent, EnqueueFailed."""
    for name, value in (("message", message), ("session_id", session_id)):
        problem = control_character(value) if value is not None else None
        if problem:
            raise InvalidMessage(f"{name}: {problem}")
    text = message.strip()
    if not text:
        raise InvalidMessage("the message is empty")
    if len(text) > MAX_MESSAGE_CHARS:
        raise InvalidMessage(f"the message is longer than {MAX_MESSAGE_CHARS} characters")
    if session_id is not None and (not session_id.strip() or len(session_id) > MAX_SESSION_ID_CHARS):
        raise InvalidMessage("session_id is not a valid session id")
    if agent != BRAIN:
        get_agent(agent)  # UnknownAgent for a name that is neither built in nor defined
    task, session = submission.new_task(text, session_id=session_id, agent=agent, source=TaskSource.CHAT)
    submission.submit(task, session)
    submission.announce_created(task)
    return ChatStarted(
        task_id=task.task_id, session_id=task.session_id, agent=task.agent, new_session=session is not None
    )
