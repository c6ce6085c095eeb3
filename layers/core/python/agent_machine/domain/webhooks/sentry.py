"""Sentry deliveries: integration-platform resources (Sentry-Hook-Resource) and the legacy WebHooks plugin.

event_alert (triggered), issue (created), error (created) and metric_alert (critical / warning) -> a planning task
with the error's title, culprit, stack and link; installation is answered; anything else is ignored. Tasks about
one Sentry issue (or one metric incident) share a session, and its first planning task has a derived id: an alert
storm about the same issue makes one planning task, not hundreds.
"""

from __future__ import annotations

from typing import Any

from agent_machine.domain.agents import PLANNING
from agent_machine.domain.webhooks import dedupe
from agent_machine.domain.webhooks.common import Payload
from agent_machine.domain.webhooks.context import url_or_none
from agent_machine.domain.webhooks.decisions import Answer, CreateTask, Decision, Ignore, derived_task_id
from agent_machine.domain.webhooks.prompts import Quoted, build_prompt
from agent_machine.domain.webhooks.text import clean_text, one_line
from agent_machine.models import RepoContext

MAX_FRAMES = 25


class Envelope(Payload):
    action: str | None = None
    data: dict[str, Any] | None = None
    installation: dict[str, Any] | None = None
    actor: dict[str, Any] | None = None


def is_legacy(payload: dict[str, Any]) -> bool:
    """The legacy plugin's shape: top-level project + culprit/message + event, no `data` envelope."""
    return "data" not in payload and "event" in payload and ("culprit" in payload or "message" in payload)


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def stack_text(event: dict[str, Any]) -> str:
    """Exception types, values and the innermost frames, most recent call last (as Python prints them)."""
    lines: list[str] = []
    exceptions = _l(_d(event.get("exception")).get("values")) or _l(
        _d(event.get("sentry.interfaces.Exception")).get("values")
    )
    stacks: list[tuple[str, dict[str, Any]]] = []
    for exc in exceptions:
        exc = _d(exc)
        stacks.append((f"{exc.get('type') or 'Error'}: {exc.get('value') or ''}", _d(exc.get("stacktrace"))))
    if not stacks:
        top = _d(event.get("stacktrace")) or _d(event.get("sentry.interfaces.Stacktrace"))
        if top:
            stacks.append(("", top))
    for header, stacktrace in stacks:
        frames = _l(stacktrace.get("frames"))
        if frames:
            lines.append("Traceback (most recent call last):")
            if len(frames) > MAX_FRAMES:
                lines.append(f"  ... {len(frames) - MAX_FRAMES} earlier frames ...")
            for frame in frames[-MAX_FRAMES:]:
                frame = _d(frame)
                where = frame.get("filename") or frame.get("abs_path") or frame.get("module") or "?"
                lines.append(f'  File "{where}", line {frame.get("lineno")}, in {frame.get("function") or "?"}')
                if frame.get("context_line"):
                    lines.append(f"    {str(frame['context_line']).strip()}")
        if header:
            lines.append(header)
    return clean_text("\n".join(lines), 12_000)


def resource_name(resource: str | None, payload: dict[str, Any]) -> str:
    if resource:
        return one_line(resource, 60)
    return "legacy_webhook" if is_legacy(payload) else "unknown"


def source_key(resource: str | None, payload: dict[str, Any]) -> str | None:
    """The event's source key (see `dedupe`): one Sentry issue, error event, alert or incident change delivered
    twice (two integrations, two request ids) makes one task. Never raises."""
    obj, part = dedupe.obj, dedupe.part
    action = part(payload.get("action"))
    if not resource:
        if not is_legacy(payload):
            return None
        project = part(payload.get("project_slug") or payload.get("project"))
        return dedupe.key("sentry", "legacy", project, part(payload.get("id")), part(obj(payload, "event", "event_id")))
    if resource == "issue":
        return dedupe.key("sentry", "issue", part(obj(payload, "data", "issue", "id")), action)
    if resource in ("event_alert", "error"):
        event = obj(payload, "data", "event" if resource == "event_alert" else "error")
        return dedupe.key("sentry", resource, part(obj(event, "issue_id")), part(obj(event, "event_id")), action)
    if resource == "metric_alert":
        return dedupe.key("sentry", "metric_alert", part(obj(payload, "data", "metric_alert", "id")), action)
    return None


def decide(resource: str | None, payload: dict[str, Any]) -> Decision:
    if not resource:
        if is_legacy(payload):
            return _legacy(payload)
        return Ignore("no Sentry-Hook-Resource header and not a legacy plugin payload")
    envelope = Envelope.model_validate(payload)
    action = envelope.action or ""
    data = envelope.data or {}
    if resource == "installation":
        return Answer(f"installation {one_line(action, 40)} noted")
    if resource == "event_alert":
        if action != "triggered":
            return Ignore(f"event_alert action '{one_line(action, 40)}' is not handled")
        rule = one_line(data.get("triggered_rule") or _d(data.get("issue_alert")).get("title"), 200)
        return _from_event(_d(data.get("event")), f"alert rule '{rule}' triggered", kind="event_alert")
    if resource == "error":
        if action != "created":
            return Ignore(f"error action '{one_line(action, 40)}' is not handled")
        return _from_event(_d(data.get("error")), "a new error", kind="error")
    if resource == "issue":
        if action != "created":
            return Ignore(f"issue action '{one_line(action, 40)}' is not handled")
        return _from_issue(_d(data.get("issue")))
    if resource == "metric_alert":
        if action not in ("critical", "warning"):
            return Ignore(f"metric_alert action '{one_line(action, 40)}' needs no work")
        return _from_metric(data, action)
    return Ignore(f"Sentry resource '{one_line(resource, 40)}' is not handled")


def _task(
    *,
    thread: str | None,
    why: str,
    title: str,
    context: list[tuple[str, object]],
    quoted: list[Quoted],
    link: str | None,
    issue_id: str | None,
) -> CreateTask:
    prompt = build_prompt(
        "You are the planning agent. Sentry reported the error below. Find its cause in the code and write an "
        "implementation plan (PLAN.md) for the fix that a human can approve. Do not change code.",
        context=context,
        quoted=quoted,
    )
    short = one_line(title, 70)
    return CreateTask(
        reason=why,
        agent=PLANNING,
        prompt=prompt,
        title=f"Sentry: {short}",
        repo=RepoContext(sentry_issue_id=issue_id, sentry_url=link),
        thread_key=thread,
        thread_title=f"Sentry: {short}",
        task_id=derived_task_id(f"{thread}#planning") if thread else None,
        duplicate_reason="this Sentry issue already has a planning task",
    )


def _from_event(event: dict[str, Any], why: str, *, kind: str) -> Decision:
    issue_id = one_line(event.get("issue_id"), 40) or None
    metadata = _d(event.get("metadata"))
    title = event.get("title") or metadata.get("title") or metadata.get("value") or event.get("message") or kind
    link = url_or_none(event.get("web_url") or event.get("url"))
    return _task(
        thread=f"sentry:issue:{issue_id}" if issue_id else None,
        why=why,
        title=str(title),
        link=link,
        issue_id=issue_id,
        context=[
            ("sentry issue", issue_id),
            ("link", link),
            ("level", event.get("level")),
            ("platform", event.get("platform")),
            ("release", event.get("release")),
            ("environment", _tag(event, "environment")),
            ("event id", event.get("event_id")),
            ("trigger", why),
        ],
        quoted=[
            Quoted("error.title", str(title), 500),
            Quoted("error.culprit", event.get("culprit") or "", 500),
            Quoted("error.stack", stack_text(event)),
        ],
    )


def _tag(event: dict[str, Any], name: str) -> str | None:
    for tag in _l(event.get("tags")):
        if isinstance(tag, list) and len(tag) == 2 and tag[0] == name:
            return str(tag[1])
    return None


def _from_issue(issue: dict[str, Any]) -> Decision:
    issue_id = one_line(issue.get("id"), 40) or None
    link = url_or_none(issue.get("web_url") or issue.get("permalink"))
    title = issue.get("title") or _d(issue.get("metadata")).get("title") or "Sentry issue"
    return _task(
        thread=f"sentry:issue:{issue_id}" if issue_id else None,
        why="a new Sentry issue",
        title=str(title),
        link=link,
        issue_id=issue_id,
        context=[
            ("sentry issue", issue.get("shortId") or issue_id),
            ("link", link),
            ("level", issue.get("level")),
            ("platform", issue.get("platform")),
            ("project", _d(issue.get("project")).get("slug")),
            ("events", issue.get("count")),
            ("users", issue.get("userCount")),
            ("first seen", issue.get("firstSeen")),
            ("trigger", "issue created"),
        ],
        quoted=[
            Quoted("issue.title", str(title), 500),
            Quoted("issue.culprit", issue.get("culprit") or "", 500),
            Quoted("issue.metadata", clean_text(issue.get("metadata"), 4000)),
        ],
    )


def _from_metric(data: dict[str, Any], action: str) -> Decision:
    alert = _d(data.get("metric_alert"))
    rule = _d(alert.get("alert_rule"))
    incident = one_line(alert.get("id") or alert.get("identifier"), 40) or None
    title = data.get("description_title") or rule.get("name") or alert.get("title") or "metric alert"
    link = url_or_none(data.get("web_url"))
    return _task(
        thread=f"sentry:metric:{incident}" if incident else None,
        why=f"metric alert {action}",
        title=str(title),
        link=link,
        issue_id=None,
        context=[
            ("incident", incident),
            ("link", link),
            ("severity", action),
            ("rule", rule.get("name")),
            ("query", rule.get("query")),
            ("aggregate", rule.get("aggregate")),
            ("projects", ", ".join(str(p) for p in _l(alert.get("projects")))),
        ],
        quoted=[
            Quoted("alert.title", str(title), 500),
            Quoted("alert.description", data.get("description_text") or ""),
        ],
    )


def _legacy(payload: dict[str, Any]) -> Decision:
    event = _d(payload.get("event"))
    group = one_line(payload.get("id"), 40) or None
    title = payload.get("message") or event.get("title") or payload.get("culprit") or "Sentry error"
    link = url_or_none(payload.get("url"))
    return _task(
        thread=f"sentry:legacy:{one_line(payload.get('project_slug') or payload.get('project'), 60)}:{group}"
        if group
        else None,
        why="legacy Sentry webhook",
        title=str(title),
        link=link,
        issue_id=group,
        context=[
            ("sentry issue", group),
            ("link", link),
            ("level", payload.get("level")),
            ("project", payload.get("project_name") or payload.get("project")),
            ("trigger", "legacy Sentry webhook"),
        ],
        quoted=[
            Quoted("error.title", str(title), 500),
            Quoted("error.culprit", payload.get("culprit") or "", 500),
            Quoted("error.stack", stack_text(event)),
        ],
    )
