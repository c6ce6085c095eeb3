"""What a webhook delivery can lead to. Deciding is pure; `ingest` carries a decision out."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from agent_machine.models import RepoContext, Task, TaskSource

# Conversations about one external thing (a GitHub issue, a Jira ticket, a Sentry issue) share one session whose
# id is derived from the thing: the thread's tasks are then one by_session Query away (no Scan, no extra index).
_THREAD_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "agent-machine/thread")


def thread_session_id(thread_key: str) -> str:
    return str(uuid.uuid5(_THREAD_NAMESPACE, thread_key))


def derived_task_id(key: str) -> str:
    """A task id fixed by what the task is for (first planning of an issue, approval n of a plan): a second
    attempt to create the same task fails the transaction's attribute_not_exists(task_id) guard."""
    return str(uuid.uuid5(_THREAD_NAMESPACE, "task:" + key))


def planning_task_id(thread_key: str, attempt: int = 0) -> str:
    """Attempt n of planning a thread (an issue): attempt 0 keeps the original derived id; a new attempt is made
    only when every earlier one ended without completing (ingest decides, on the duplicate path)."""
    suffix = "#planning" if attempt == 0 else f"#planning#{attempt}"
    return derived_task_id(thread_key + suffix)


@dataclass(frozen=True)
class Delivery:
    """What identifies a delivery and where it came from."""

    sender: str  # "github" | "jira" | "sentry" | a dynamic webhook's name
    delivery_id: str
    event: str
    action: str | None
    source: TaskSource
    source_key: str | None = None  # the event at the sender (see `dedupe`): one task however many deliveries

    @property
    def key(self) -> str:
        return f"{self.sender}#{self.delivery_id}"


@dataclass(frozen=True)
class Ignore:
    reason: str


@dataclass(frozen=True)
class Answer:
    """Answered without work (ping, installation)."""

    reason: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CreateTask:
    reason: str
    agent: str
    prompt: str
    title: str
    repo: RepoContext | None = None
    thread_key: str | None = None  # None: a new session of its own
    thread_title: str | None = None
    task_id: str | None = None  # derived id: creating the same task twice is refused
    duplicate_reason: str = "that task already exists"
    parent: Task | None = None
    plan: str | None = None


@dataclass(frozen=True)
class StopThread:
    """A trusted "@claude stop": stop the thread's queued and running tasks."""

    reason: str
    thread_key: str


Decision = Ignore | Answer | CreateTask | StopThread
