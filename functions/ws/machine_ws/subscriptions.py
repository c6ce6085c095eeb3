"""Subscribe (with its replay) and unsubscribe.

- A session subscribe first replays, from the stored output, the events after N of each task of the session that
  is queued or running or named in `last_seq` (0 for tasks not named), oldest task first.
- A task subscribe replays the task's stored events with seq > N (a late subscriber to a finished task gets its
  whole output).
- `topic: all` only registers (dashboards get lifecycle events live; there is nothing to replay).

A subscribe is answered with `{"type": "subscribed", ...}` after its replay frames; it carries `task_last_seq` (a
number, or a map for a session), the last seq the server knows of per task: a client holding less subscribes again
with its last seq (a subscriber arriving near a task's end can miss live pushes sent to a stale subscriber list).
"""

from __future__ import annotations

from agent_machine.models import ALL_TASKS_TOPIC, Subscription, TaskStatus
from agent_machine.store import connections, output, tasks

from machine_ws.protocol import SubscribeMessage, session_last_seq, subscription, task_last_seq
from machine_ws.replies import Replies

MAX_SESSION_TASKS = 500  # a session's tasks considered for replay (newest first)
_ACTIVE = frozenset({TaskStatus.QUEUED.value, TaskStatus.RUNNING.value})


def subscribe(ws: Replies, msg: SubscribeMessage) -> None:
    sub = subscription(msg)
    # Register first, then read the stored output: an event written in between is both stored and pushed,
    # and the client dedupes by (task_id, seq). Nothing can fall between the replay and the live stream.
    if msg.session_id is not None:
        last_seq = session_last_seq(msg)
        if _register(ws, sub):
            _subscribe_session(ws, msg.session_id, last_seq)
    elif msg.task_id is not None:
        after = task_last_seq(msg)
        if _register(ws, sub):
            _subscribe_task(ws, msg.task_id, after)
    elif _register(ws, sub):
        ws.reply({"type": "subscribed", "topic": ALL_TASKS_TOPIC})


def unsubscribe(ws: Replies, msg: SubscribeMessage) -> None:
    connections.unsubscribe(ws.connection_id, subscription(msg))
    named = (("session_id", msg.session_id), ("task_id", msg.task_id), ("topic", msg.topic))
    ws.reply({"type": "unsubscribed", **{k: v for k, v in named if v is not None}})


def _register(ws: Replies, sub: Subscription) -> bool:
    if connections.subscribe(ws.connection_id, sub):
        return True
    ws.error("this connection is not registered (expired?): reconnect", "subscribe")
    return False


def _replay_task(ws: Replies, task_id: str, after: int) -> tuple[int, int]:
    """Send the task's stored events after `after`; returns (how many, the last seq sent or `after`)."""
    events = output.read_events(task_id, after)
    ws.replay(events)
    return len(events), (events[-1].seq if events else after)


def _subscribe_task(ws: Replies, task_id: str, after: int) -> None:
    task = tasks.get(task_id)
    if task is None:
        connections.unsubscribe(ws.connection_id, Subscription(kind="task", id=task_id))
        ws.error(f"unknown task {task_id}", "subscribe")
        return
    replayed, last = _replay_task(ws, task_id, after)
    if task.status.terminal and last < task.last_seq and not ws.gone:
        # Booked terminal before our read: its events are stored by now (the runner stores the terminal event
        # before booking). Read once more rather than leave the client behind.
        more, last = _replay_task(ws, task_id, last)
        replayed += more
    ws.reply(
        {
            "type": "subscribed",
            "task_id": task_id,
            "session_id": task.session_id,
            "status": task.status.value,
            "replayed": replayed,
            "last_seq": last,
            "task_last_seq": max(task.last_seq, last),
        }
    )


def _session_tasks(session_id: str, last_seq: dict[str, int]) -> tuple[dict[str, str], dict[str, int]]:
    """The session's tasks (newest first, at most MAX_SESSION_TASKS, plus those named in `last_seq`): their
    statuses and the last seq booked for each."""
    statuses: dict[str, str] = {}
    known_last: dict[str, int] = {}
    cursor: str | None = None
    while len(statuses) < MAX_SESSION_TASKS:
        page = tasks.list_tasks(session_id=session_id, limit=min(100, MAX_SESSION_TASKS - len(statuses)), cursor=cursor)
        for t in page.items:
            statuses[t.task_id] = t.status.value
            known_last[t.task_id] = t.last_seq
        cursor = page.cursor
        if not cursor:
            break
    for task_id in last_seq:
        if task_id not in statuses:  # older than the listing reaches, or not of this session at all
            known = tasks.get(task_id)
            if known is not None and known.session_id == session_id:
                statuses[task_id] = known.status.value
                known_last[task_id] = known.last_seq
    return statuses, known_last


def _subscribe_session(ws: Replies, session_id: str, last_seq: dict[str, int]) -> None:
    statuses, known_last = _session_tasks(session_id, last_seq)
    wanted = [t for t, status in statuses.items() if status in _ACTIVE or t in last_seq]
    replayed = 0
    sent: dict[str, int] = {}
    for task_id in reversed(wanted):  # oldest first, as the conversation reads
        if ws.gone:
            return
        n, last = _replay_task(ws, task_id, last_seq.get(task_id, 0))
        if statuses[task_id] not in _ACTIVE and last < known_last.get(task_id, 0) and not ws.gone:
            more, last = _replay_task(ws, task_id, last)
            n += more
        replayed += n
        sent[task_id] = last
    ws.reply(
        {
            "type": "subscribed",
            "session_id": session_id,
            "replayed": replayed,
            "last_seq": sent,
            "tasks": {t: statuses[t] for t in wanted},
            "task_last_seq": {t: max(known_last.get(t, 0), sent.get(t, 0)) for t in wanted},
        }
    )
