"""A task's delegated children: the slots and the share of its cap they hold (the rules; store/tasks writes them).

- A child is created through `submission` (the same path as chat and webhooks) as a child of its parent
  (`parent_task_id`, `depth + 1`), in its own session, source "agent".
- Fan-out and budget are *reserved* on the parent's task item, in the same transaction that creates the child
  (`tasks.ChildSlot`): one more child only while the parent has fewer than `max_children`, and its cap only while
  the parent's reserved total is still the value read (optimistic concurrency, retried). Concurrent creations can
  therefore never pass the caps, and a reservation exists exactly when its child does (a child that cannot be
  queued is taken back by the submission, and its slot is released). Reservations are kept: a finished child
  still counts against its parent's fan-out, and against its budget for what it spent.
- A child's cap is what was asked (else its agent's own cap), at most what is left of the parent's cap:
  `left = parent cap - caps reserved + what finished children left unspent of their caps` (a running child counts
  for its whole cap, a finished one for its cost plus what it reserved for its own children). With less than
  MIN_CHILD_BUDGET_USD left, no child. Grandchildren reserve from their own parent's cap, so a whole tree below a
  task never gets more than that task's cap.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from decimal import Decimal

from botocore.exceptions import ClientError

from agent_machine.domain import agents, budgets, submission
from agent_machine.models import RepoContext, Session, Task, TaskSource
from agent_machine.observability import get_logger
from agent_machine.store import tasks
from agent_machine.store.errors import WriteConflict

MIN_CHILD_BUDGET_USD = 0.01  # less than this left of the parent's cap: no more children
RESERVE_ATTEMPTS = 40  # optimistic retries of a reservation that raced another one
FINISHED_CHILDREN_SLACK = 50  # children listed beyond max_children when adding up what finished ones left


class ChildRefused(Exception):
    """The rules do not allow this child (or it could not be created); the message says why, to the agent."""


@dataclass(frozen=True)
class ChildRequest:
    """What a parent asks for. `wanted_usd`: the cap asked for, else the child's agent's own (None: what is left)."""

    prompt: str
    agent: str
    title: str | None = None
    wanted_usd: float | None = None
    repo: RepoContext | None = None
    plan: str | None = None


def task_budget(task: Task) -> float:
    """The task's spending cap as its run applies it: the task's, the agent's, the default."""
    try:
        agent_cap = agents.get_agent(task.agent).max_budget_usd
    except agents.UnknownAgent:
        agent_cap = None
    return budgets.task_cap(task.max_budget_usd, agent_cap)


def unspent_by_finished_children(task_id: str, *, max_children: int) -> Decimal:
    """What the task's finished children left unused of their caps (handed back to the parent's budget): cap -
    own cost - what each reserved for its own children. Read through the by_parent index: a child that just
    finished may not be there yet, which only delays this."""
    unspent = Decimal(0)
    for child in tasks.list_tasks(parent_task_id=task_id, limit=max_children + FINISHED_CHILDREN_SLACK).items:
        if child.status.terminal and child.max_budget_usd:
            # What the child reserved for its own children is counted as spent (their refunds stay its own).
            _count, reserved_below = tasks.children_reserved(child.task_id)
            left = Decimal(repr(child.max_budget_usd)) - Decimal(repr(child.cost_usd)) - reserved_below
            unspent += max(Decimal(0), left)
    return unspent


def committed(task_id: str, reserved: Decimal, *, max_children: int) -> Decimal:
    """What of a task's cap its children spent or may still spend, given the caps it `reserved` for them."""
    return reserved - unspent_by_finished_children(task_id, max_children=max_children)


def budget_left(parent: Task, *, max_children: int) -> float:
    """What of the parent's cap is left for more children (never below 0)."""
    _count, reserved = tasks.children_reserved(parent.task_id)
    spent_or_held = committed(parent.task_id, reserved, max_children=max_children)
    return round(max(0.0, task_budget(parent) - float(spent_or_held)), 6)


def _new_child(parent: Task, request: ChildRequest, cap: float) -> tuple[Task, Session | None]:
    task, session = submission.new_task(
        request.prompt,
        agent=request.agent,
        source=TaskSource.AGENT,
        source_name=parent.agent,
        title=request.title,
        parent=parent,
        max_budget_usd=cap,
    )
    update: dict[str, object] = {}
    if request.repo is not None:
        update["repo"] = request.repo
    if request.plan is not None:
        update["plan"] = request.plan
    return (task.model_copy(update=update) if update else task), session


def create(parent: Task, request: ChildRequest, *, max_children: int) -> Task:
    """Reserve a slot and a cap on the parent and submit the child with it, in one transaction (retried when
    another child was reserved meanwhile). The child is answered queued, with its cap. Raises ChildRefused."""
    for attempt in range(RESERVE_ATTEMPTS):
        count, reserved = tasks.children_reserved(parent.task_id)
        if count >= max_children:
            raise ChildRefused(f"this task already has {count} children, the most it may start.")
        spent_or_held = committed(parent.task_id, reserved, max_children=max_children)
        parent_cap = task_budget(parent)
        remaining = float(Decimal(repr(parent_cap)) - spent_or_held)
        if remaining < MIN_CHILD_BUDGET_USD:
            raise ChildRefused(
                f"no budget left for another child: this task's cap is ${parent_cap:.2f} and "
                f"${float(spent_or_held):.2f} of it is spent or reserved by its children."
            )
        cap = round(min(request.wanted_usd or remaining, remaining), 6)
        if cap < MIN_CHILD_BUDGET_USD:
            raise ChildRefused(f"a child's max_budget_usd must be at least ${MIN_CHILD_BUDGET_USD}")
        task, session = _new_child(parent, request, cap)
        slot = tasks.ChildSlot(
            parent_task_id=parent.task_id, cap_usd=cap, seen_reserved_usd=reserved, max_children=max_children
        )
        try:
            submission.submit(task, session, child_slot=slot)
        except submission.EnqueueFailed:
            # The submission took the task back (or failed it); the slot it took goes back too.
            _release(parent.task_id, cap)
            raise ChildRefused("the child could not be queued (the queue is unreachable); try again later") from None
        except (submission.AlreadyRecorded, WriteConflict):
            # Another child was reserved meanwhile: read again (the count may be full now).
            time.sleep(random.uniform(0.005, 0.05) * min(attempt + 1, 5))
            continue
        return task
    raise ChildRefused("the machine is busy creating other children of this task; try again")


def _release(parent_task_id: str, cap: float) -> None:
    """Give back a slot whose child was undone. Best effort: a failure only leaves the parent with less room,
    never more."""
    try:
        released = tasks.release_child_slot(parent_task_id, cap)
    except ClientError:
        released = False
    if not released:
        get_logger().warning("could not release a child's reservation", extra={"task_id": parent_task_id})
