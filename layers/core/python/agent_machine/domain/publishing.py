"""Publishing a task's events to the WebSocket clients watching it: the one place for the topic rules and the
fan-out. Used by the runner's live stream (`runner.output.Delivery`), by submission's lifecycle events
(task.created, a queued task's task.stopped) and by the WebSocket's replay to one connection.

Who gets what: subscribers of the task's session (`session#<id>`) and of the task itself (`task#<id>`) get every
event; subscribers of `all` (dashboards' task lists) get the lifecycle events only, and a connection that is
both gets them once, as a watcher. The domain decides the topics and the frames (built once per audience, not
per connection), `store.connections` reads the subscribers, `push.Pusher` sends. Nothing is looked up when no
WebSocket API is configured, and the dashboards are looked up only for a batch holding a lifecycle event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from agent_machine.models import ALL_TASKS_TOPIC, EventType, Subscription, Task, TaskEvent
from agent_machine.observability import get_logger
from agent_machine.push import Pusher, frames
from agent_machine.store import connections

LIFECYCLE = frozenset({EventType.CREATED, EventType.STARTED, EventType.COMPLETED, EventType.FAILED, EventType.STOPPED})

# Topics -> the connections subscribed to any of them (the runner passes its cached lookup).
Lookup = Callable[[list[str]], AbstractSet[str]]


def topics_for(task: Task) -> list[str]:
    """The topics whose subscribers get every event of the task: its session's and its own."""
    # Spelled by Subscription.topic: what a client subscribes to and what is published are one rule.
    return [Subscription(kind="session", id=task.session_id).topic, Subscription(kind="task", id=task.task_id).topic]


@dataclass
class Sent:
    """What a publish or a send did: post_to_connection calls made, the connections whose push failed (and why),
    and whether the subscriber lookup failed (then nothing was sent)."""

    posts: int = 0
    errors: dict[str, Exception] = field(default_factory=dict)
    lookup_failed: bool = False

    @property
    def failures(self) -> int:
        return len(self.errors) + int(self.lookup_failed)


def publish(
    task: Task,
    events: Sequence[TaskEvent],
    *,
    texts: Sequence[str] | None = None,
    pusher: Pusher | None = None,
    lookup: Lookup | None = None,
) -> Sent:
    """Push `events` of `task` to its watchers (every event) and to the dashboards watching all tasks (its
    lifecycle events). `texts`: the events' JSON when the caller has encoded them already. Never raises: a
    failed lookup or a broken connection is logged and counted in the result (a push is best effort; the
    stored output is what a reconnecting client replays)."""
    pusher = pusher if pusher is not None else Pusher()
    sent = Sent()
    if not events or not pusher.endpoint_url:
        return sent  # no WebSocket API configured: nothing to push to (and no subscriber lookups)
    # Resolved per call, not bound as a default: tests and the runner's cache stand in for the store's lookup.
    look_up = lookup if lookup is not None else connections.subscribers
    try:
        watchers = frozenset(look_up(topics_for(task))) - pusher.gone
        lifecycle = [e for e in events if e.type in LIFECYCLE]
        dashboards = frozenset(look_up([ALL_TASKS_TOPIC])) - pusher.gone - watchers if lifecycle else frozenset()
    except Exception:
        get_logger().exception("could not look up subscribers", extra={"task_id": task.task_id})
        sent.lookup_failed = True
        return sent
    if watchers:
        send(pusher, watchers, events, texts=texts, into=sent)
    if dashboards:
        send(pusher, dashboards, lifecycle, into=sent)
    return sent


def send(
    pusher: Pusher,
    connection_ids: Iterable[str],
    events: Sequence[TaskEvent],
    *,
    texts: Sequence[str] | None = None,
    into: Sent | None = None,
) -> Sent:
    """The same frames (built once) to every connection, in order of id. Never raises: one broken connection
    must not stop the others, so its error is logged and kept in the result (`errors[connection_id]`)."""
    sent = into if into is not None else Sent()
    if not events:
        return sent
    payloads = frames(events, texts=texts)
    for connection_id in sorted(connection_ids):
        before = pusher.calls
        try:
            pusher.send_frames(connection_id, payloads)
        except Exception as exc:
            sent.errors[connection_id] = exc
            get_logger().warning("push failed", extra={"connection_id": connection_id, "error": repr(exc)})
        sent.posts += pusher.calls - before
    return sent
