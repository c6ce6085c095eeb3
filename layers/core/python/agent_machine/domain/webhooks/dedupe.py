"""Source-event keys: one task per event at the sender, however many webhooks deliver it.

The delivery-id guard ("<sender>#<delivery id>", see `ingest`) stops redeliveries, but one event can arrive as
several deliveries with different ids: a repository's and its organisation's webhooks both pointing here, two Jira
webhooks covering one project, two Sentry integrations. Each delivery that would create a task therefore also
claims the event's source key, named by what the sender itself numbers, in the same transaction as the task (a
second conditional item in the Events table, expiring with the delivery records). The second delivery of an event
fails that condition and is answered like a redelivery (same status code, the first delivery's task) with
status "duplicate"; it is recorded as ignored, so its own redeliveries get the same answer.

Keys ("dedupe#" + sender + parts; <a> the action, <repo> owner/name lower-cased, <site> the Jira base URL
lower-cased; "[+ x]" is added for actions that can repeat on one object, see below):

    github issue_comment                dedupe#github#comment#<comment.id>#<a>[#<comment.updated_at>]
    github pull_request_review_comment  dedupe#github#review_comment#<comment.id>#<a>[#<comment.updated_at>]
    github pull_request_review          dedupe#github#review#<review.id>#submitted  (other actions: no key)
    github issues                       dedupe#github#issue#<repo>#<issue.number>#<a>[#<issue.updated_at>]
    github issues labeled / unlabeled   dedupe#github#issue#<repo>#<issue.number>#<a>#<label.name>#<updated_at>
    github pull_request (the same)      dedupe#github#pr#<repo>#<pull_request.number>#<a>...
    jira comment_created, or jira:issue_updated with a comment
                                        dedupe#jira#<site>#comment#<comment.id>#<webhookEvent>
    jira jira:issue_created             dedupe#jira#<site>#issue#<issue.id>#jira:issue_created
    jira jira:issue_updated             dedupe#jira#<site>#issue#<issue.id>#changelog#<changelog.id>
    sentry issue                        dedupe#sentry#issue#<issue.id>#<a>
    sentry event_alert / error          dedupe#sentry#<resource>#<issue_id>#<event_id>#<a>
    sentry metric_alert                 dedupe#sentry#metric_alert#<metric_alert.id>#<a>
    sentry legacy plugin                dedupe#sentry#legacy#<project>#<group id>#<event.event_id>

What stays a different event: an action that happens once per object (created, opened, submitted, deleted) is
keyed by the object and action alone; an action that can repeat on one object also carries the sender's own mark
of that occurrence, the same in every webhook's copy: the label name and the issue's (PR's) updated_at for a label
(adding a second label, or removing and adding one again, is a new event), the comment's updated_at for an edited
comment, the issue's (PR's) updated_at for its other actions, Jira's changelog id for an issue update, Sentry's
event id for an alert about one issue (a new alert is a new event; two rules firing on one event are one). A Jira
comment is keyed per webhookEvent: Jira's comment_created and issue_updated deliveries of one comment are told
apart here and made one task by the comment's derived task id instead (answered "this comment was already
handled", as before). No key (None) when a part is missing: such deliveries are deduped by delivery id only.
Dynamic webhooks have no source key (nothing in their payloads is known to name an event).
"""

from __future__ import annotations

import hashlib
from typing import Any

from agent_machine.domain.webhooks.context import MAX_PAYLOAD_INT
from agent_machine.domain.webhooks.text import one_line

PREFIX = "dedupe#"
MAX_PART_CHARS = 200
MAX_KEY_BYTES = 1024  # DynamoDB allows 2048 for a partition key; longer keys are hashed

# Actions that happen at most once to one object: the object and the action name the event.
ONCE_ACTIONS = frozenset({"created", "opened", "submitted", "deleted"})


def part(value: object) -> str | None:
    """A key part from a payload value: a bounded int or a non-empty string (cleaned, bounded); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if abs(value) <= MAX_PAYLOAD_INT else None
    if isinstance(value, str):
        text = one_line(value, MAX_PART_CHARS)
        return text or None
    return None


def key(sender: str, *parts: str | None) -> str | None:
    """The source key of a sender's event; None when any part is missing."""
    if any(p is None for p in parts):
        return None
    text = "#".join([sender, *(p for p in parts if p is not None)])
    if len(text.encode()) > MAX_KEY_BYTES:  # hostile or odd payloads: still one key per event, bounded
        text = f"{sender}#sha256-{hashlib.sha256(text.encode()).hexdigest()}"
    return PREFIX + text


def obj(payload: object, *path: str) -> Any:
    """payload[path[0]][path[1]]... of a JSON object, None where a step is missing or not an object."""
    value: Any = payload
    for step in path:
        if not isinstance(value, dict):
            return None
        value = value.get(step)
    return value
