"""report_started / report_finished: keep one sticky comment per task up to date where the task came from.

Never raises: a report-back that cannot be done is retried (bounded), then written into the returned report
state ("error", "attempts") for the dashboard to show, and the task goes on. The caller stores the returned
state (tasks.set_fields(task_id, report=...)); nothing here writes to the store.

Creating a comment is the one step that must not be repeated blindly: the ingress acts on new comments, and a
create whose answer was lost may still have happened. So a comment is always created with a neutral "opening"
body (no untrusted text, no trigger phrase) and then edited to the full text; and before creating again (a retry,
a new attempt of the task, a finish with no known comment) the target is searched for this task's marker.

No secret is posted: the task's texts are redacted (agent_machine.redaction) before they are rendered, so the
marker is escaped like any text, and each body is redacted again as it goes out.
"""

from __future__ import annotations

import dataclasses
import time
import traceback

from agent_machine import redaction
from agent_machine.domain.reporting import render
from agent_machine.domain.reporting.config import (
    ReportingSettings,
    github_config,
    jira_config,
    origin,
    reporting_settings,
    sentry_config,
)
from agent_machine.domain.reporting.http import HttpFailure, Redactor, Retrier
from agent_machine.domain.reporting.targets import (
    CommentRef,
    GitHubTarget,
    InvalidContext,
    JiraTarget,
    SentryTarget,
    Target,
)
from agent_machine.models import Task, TaskSource, TaskStatus
from agent_machine.observability import get_logger
from agent_machine.settings import Settings, get_settings

MAX_ERROR_CHARS = 500
MAX_CHILDREN_LISTED = 20


def report_started(task: Task) -> dict[str, str]:
    """On start (and on each new attempt): create the sticky comment, or edit it if the task already has one."""
    return _report(task, final=False)


def report_finished(task: Task) -> dict[str, str]:
    """At the end: edit the sticky comment to the result or plan, PR link, cost and duration, or the error."""
    return _report(task, final=True)


def _report(task: Task, *, final: bool) -> dict[str, str]:
    report = dict(task.report)
    # A task another agent delegated inherits its parent's issue: it does not comment there itself (the parent's
    # one sticky comment lists its children instead).
    if task.source in (TaskSource.CHAT, TaskSource.AGENT) or task.repo is None:
        return report
    if not final and task.status == TaskStatus.QUEUED:
        task = task.model_copy(update={"status": TaskStatus.RUNNING})  # called as it starts: say so
    redact = Redactor([])
    try:
        return _report_or_raise(task, report, final=final, redact=redact)
    except Exception as exc:  # the last line of defence: reporting back never fails the task
        report["error"] = f"report-back failed: {type(exc).__name__}"
        # The traceback is redacted like everything else: an exception message may quote a header value.
        get_logger().error(
            "report-back failed unexpectedly",
            extra={
                "task_id": task.task_id,
                "error_type": type(exc).__name__,
                "traceback": redact("".join(traceback.format_exception(exc))),
            },
        )
        return report


def _report_or_raise(task: Task, report: dict[str, str], *, final: bool, redact: Redactor) -> dict[str, str]:
    reporting = reporting_settings()
    if not reporting.report_back:
        return report
    settings = get_settings()
    deadline = time.monotonic() + reporting.report_deadline_seconds
    targets, errors = _targets(task, settings, reporting, deadline, redact)
    if not targets and not errors:
        return report  # nothing reportable, or no credentials configured: a no-op
    v = render.view(
        task,
        report,
        dashboard_url=settings.dashboard_url,
        trigger=settings.trigger_phrase,
        children=_children(task) if final else None,
    )
    scrub = redaction.current()
    v = dataclasses.replace(
        v,
        plan=scrub.maybe(v.plan),
        result=scrub.maybe(v.result),
        error=scrub.maybe(v.error),
        pr_url=v.pr_url if v.pr_url is None or scrub.text(v.pr_url) == v.pr_url else None,
    )
    attempts = 0
    for target in targets:
        retrier = Retrier(
            max_attempts=reporting.report_max_attempts,
            base_delay=reporting.report_backoff_seconds,
            max_delay=reporting.report_max_backoff_seconds,
            deadline=deadline,
        )
        try:
            _sync(target, task, v, report, retrier, final=final, redact=redact, scrub=scrub)
        except HttpFailure as exc:
            errors.append(f"{target.name}: {exc.message}")
            get_logger().warning(
                "report-back failed",
                extra={
                    "task_id": task.task_id,
                    "target": target.name,
                    "error": exc.message,
                    "attempts": retrier.attempts_used,
                },
            )
        else:
            get_logger().info(
                "reported back",
                extra={
                    "task_id": task.task_id,
                    "target": target.name,
                    "status": task.status.value,
                    "comment_id": report.get(target.id_key),
                    "attempts": retrier.attempts_used,
                },
            )
        attempts = max(attempts, retrier.attempts_used)
    if errors:
        message = scrub.text(redact("; ".join(errors)))
        report["error"] = message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 1] + "…"
    else:
        report.pop("error", None)  # a later success clears an earlier failure
    if attempts:
        report["attempts"] = str(attempts)
    return report


def _children(task: Task) -> list[Task]:
    """The tasks this one delegated, oldest first (best effort: the comment goes out without them on a blip)."""
    from agent_machine.store import tasks

    try:
        return list(reversed(tasks.list_tasks(parent_task_id=task.task_id, limit=MAX_CHILDREN_LISTED).items))
    except Exception:
        get_logger().warning("could not list the task's children for its report", extra={"task_id": task.task_id})
        return []


def _targets(
    task: Task, settings: Settings, reporting: ReportingSettings, deadline: float, redact: Redactor
) -> tuple[list[Target], list[str]]:
    """The targets this task reports to and has credentials for; plus why any of them cannot be used."""
    repo = task.repo
    targets: list[Target] = []
    problems: list[str] = []
    if repo is None:
        return targets, problems
    timeout = reporting.report_timeout_seconds
    try:
        if repo.full_name and (repo.issue_number or repo.pr_number):
            gh = github_config(settings)
            if gh is not None:
                targets.append(GitHubTarget(gh, task, timeout=timeout, deadline=deadline, redact=redact))
    except InvalidContext as exc:
        problems.append(f"github: {exc}")
    except Exception as exc:  # the token lookup (Secrets Manager) failed
        problems.append(f"github: the token could not be read ({type(exc).__name__})")
    try:
        if repo.jira_issue_key:
            jira = jira_config(settings)
            if jira is not None:
                # Credentials go to the configured site only: a ticket key means nothing on another site.
                if repo.jira_base_url and origin(repo.jira_base_url) != origin(jira.base_url):
                    problems.append("jira: the ticket is on another Jira site than JIRA_BASE_URL")
                else:
                    targets.append(JiraTarget(jira, task, timeout=timeout, deadline=deadline, redact=redact))
    except InvalidContext as exc:
        problems.append(f"jira: {exc}")
    except Exception as exc:
        problems.append(f"jira: the token could not be read ({type(exc).__name__})")
    try:
        if repo.sentry_issue_id:
            sentry = sentry_config(reporting)
            if sentry is not None:
                targets.append(SentryTarget(sentry, task, timeout=timeout, deadline=deadline, redact=redact))
    except InvalidContext as exc:
        problems.append(f"sentry: {exc}")
    return targets, problems


def _store(report: dict[str, str], target: Target, ref: CommentRef, redact: Redactor) -> None:
    report[target.id_key] = ref.id
    if ref.url:
        report[target.url_key] = redact(ref.url)


def _sync(
    target: Target,
    task: Task,
    v: render.View,
    report: dict[str, str],
    retrier: Retrier,
    *,
    final: bool,
    redact: Redactor,
    scrub: redaction.Redactor,
) -> None:
    full = scrub.text(target.render(v, opening=False))
    known = report.get(target.id_key)
    if known:
        edited = retrier.run(lambda _attempt: target.update(known, full))
        if edited is not None:
            _store(report, target, edited, redact)
            return
        # Someone deleted the comment: start a new one (the old one cannot come back, so no search first).
        report.pop(target.id_key, None)
        report.pop(target.url_key, None)
        search_first = False
    else:
        # A previous attempt of the task, or a lost report_started, may have created it already.
        search_first = final or task.attempt > 1
    opening = scrub.text(target.render(v, opening=True))

    def create(attempt: int) -> tuple[CommentRef, bool]:
        if search_first or attempt > 1:  # a failed create may still have happened
            found = target.find(v.marker)
            if found is not None:
                return found, True
        return target.create(opening), False

    ref, found = retrier.run(create)
    _store(report, target, ref, redact)
    if (ref.body != full) if found else (full != opening):
        edited = retrier.run(lambda _attempt: target.update(ref.id, full))
        if edited is None:
            raise HttpFailure("the comment was deleted before it could be edited", retryable=False)
        _store(report, target, edited, redact)
