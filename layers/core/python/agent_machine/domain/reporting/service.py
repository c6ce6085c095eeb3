"""report_started / report_finished: keep one sticky comment per task up to date where the task came from.

Never raises: a report-back that cannot be done is retried (bounded), then written into the returned report
state ("error", "attempts") for the dashboard to show, and the task goes on. The caller stores the returned
state (tasks.set_fields(task_id, report=...)); the one write here is the final state of a task with children.

Children: a delegated task never comments; its parent's GitHub comment lists its children with their statuses.
A child that ends after its parent's last edit brings that list up to date itself (`_refresh_parent`), with the
same retries, after its own booking. Who does it is decided without a lock: the parent's final report stores its
state with FINAL_KEY and then reads the children again; a child reads the parent after it is booked. Whichever
reads second sees the other, and every editor reads the children again after its edit and edits again if they
changed, so the comment ends up showing the children as they ended. Jira and Sentry notes do not list children.

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
from agent_machine.store import tasks

MAX_ERROR_CHARS = 500
MAX_CHILDREN_LISTED = 20
# In a report state: the task's final comment, listing its children, is written and this state stored, so a
# child that ends from now on edits that comment itself.
FINAL_KEY = "final"


def report_started(task: Task) -> dict[str, str]:
    """On start (and on each new attempt): create the sticky comment, or edit it if the task already has one."""
    return _report(task, final=False)


def report_finished(task: Task, *, within_seconds: float | None = None) -> dict[str, str]:
    """At the end: edit the sticky comment to the result or plan, PR link, cost and duration, or the error.
    `within_seconds`: a caller with less time than REPORT_DEADLINE_SECONDS left (a function near its timeout)."""
    return _report(task, final=True, within_seconds=within_seconds)


def _report(task: Task, *, final: bool, within_seconds: float | None = None) -> dict[str, str]:
    report = dict(task.report)
    # A task another agent delegated inherits its parent's issue: it does not comment there itself (the parent's
    # one sticky comment lists its children instead, and an ending child brings that list up to date).
    if task.source == TaskSource.AGENT and final:
        try:
            return _refresh_parent(task, report, within_seconds)
        except Exception as exc:  # as below: reporting back never fails the task
            get_logger().error(
                "updating the parent task's comment failed unexpectedly",
                extra={"task_id": task.task_id, "error_type": type(exc).__name__},
            )
            report["error"] = f"report-back failed: {type(exc).__name__}"
            return report
    if task.source in (TaskSource.CHAT, TaskSource.AGENT) or task.repo is None:
        return report
    if not final and task.status == TaskStatus.QUEUED:
        task = task.model_copy(update={"status": TaskStatus.RUNNING})  # called as it starts: say so
    redact = Redactor([])
    try:
        return _report_or_raise(task, report, final=final, redact=redact, within_seconds=within_seconds)
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


def _report_or_raise(
    task: Task, report: dict[str, str], *, final: bool, redact: Redactor, within_seconds: float | None
) -> dict[str, str]:
    reporting = reporting_settings()
    if not reporting.report_back:
        return report
    settings = get_settings()
    deadline = _deadline(reporting, within_seconds)
    targets, errors = _targets(task, settings, reporting, deadline, redact)
    if not targets and not errors:
        return report  # nothing reportable, or no credentials configured: a no-op
    children = _children(task) if final else None
    scrub = redaction.current()
    v = _view(task, report, children, settings, scrub)
    attempts = 0
    github: GitHubTarget | None = None
    for target in targets:
        retrier = _retrier(reporting, deadline)
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
            if isinstance(target, GitHubTarget):
                github = target
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
    if github is not None and children and report.get(github.id_key):
        # Only the GitHub comment lists children. Its state is stored now (with FINAL_KEY): from here on a child
        # that ends edits the comment itself; one that ended since `children` was read is shown by the re-check.
        report[FINAL_KEY] = "true"
        _store_final(task, report)
        retrier = _retrier(reporting, deadline)
        try:
            _keep_children_current(github, task, report, children, settings, scrub, retrier)
        except HttpFailure as exc:
            errors.append(f"github: {exc.message}")
        attempts = max(attempts, retrier.attempts_used)
    if errors:
        report["error"] = _clip(scrub.text(redact("; ".join(errors))))
    else:
        report.pop("error", None)  # a later success clears an earlier failure
    if attempts:
        report["attempts"] = str(attempts)
    return report


def _deadline(reporting: ReportingSettings, within_seconds: float | None) -> float:
    seconds = reporting.report_deadline_seconds
    return time.monotonic() + (seconds if within_seconds is None else max(0.0, min(seconds, within_seconds)))


def _retrier(reporting: ReportingSettings, deadline: float) -> Retrier:
    return Retrier(
        max_attempts=reporting.report_max_attempts,
        base_delay=reporting.report_backoff_seconds,
        max_delay=reporting.report_max_backoff_seconds,
        deadline=deadline,
    )


def _view(
    task: Task, report: dict[str, str], children: list[Task] | None, settings: Settings, scrub: redaction.Redactor
) -> render.View:
    v = render.view(
        task, report, dashboard_url=settings.dashboard_url, trigger=settings.trigger_phrase, children=children
    )
    return dataclasses.replace(
        v,
        plan=scrub.maybe(v.plan),
        result=scrub.maybe(v.result),
        error=scrub.maybe(v.error),
        pr_url=v.pr_url if v.pr_url is None or scrub.text(v.pr_url) == v.pr_url else None,
    )


def _children(task: Task) -> list[Task]:
    """The tasks this one delegated, oldest first, each as stored now (the index lists them; their statuses are
    read consistently, since the index's copy may lag a child that just ended). Best effort: the comment goes
    out without them on a blip."""
    try:
        listed = list(reversed(tasks.list_tasks(parent_task_id=task.task_id, limit=MAX_CHILDREN_LISTED).items))
        current = {t.task_id: t for t in tasks.get_many([t.task_id for t in listed])} if listed else {}
        return [current.get(t.task_id, t) for t in listed]
    except Exception:
        get_logger().warning("could not list the task's children for its report", extra={"task_id": task.task_id})
        return []


def _shown(children: list[Task]) -> list[tuple[str, str]]:
    return [(c.task_id, c.status.value) for c in children]


def _store_final(task: Task, report: dict[str, str]) -> None:
    """Store the final report state of a task that has children: they look for FINAL_KEY before they edit its
    comment (the runner stores the same state again when the report returns)."""
    try:
        tasks.set_fields(task.task_id, report=report)
    except Exception:  # the re-check still runs; the runner stores the same state when the report returns
        get_logger().warning("could not store the final report state", extra={"task_id": task.task_id})


def _keep_children_current(
    github: GitHubTarget,
    task: Task,
    report: dict[str, str],
    shown: list[Task],
    settings: Settings,
    scrub: redaction.Redactor,
    retrier: Retrier,
) -> None:
    """After an edit that listed `shown`, read the children again and edit again until the comment shows them as
    they are. Whoever edits last thus reads last: a child that ends later edits the comment itself."""
    comment_id = report[github.id_key]
    for _ in range(MAX_CHILDREN_LISTED + 1):
        children = _children(task)
        if not children or _shown(children) == _shown(shown):
            return
        if _edit(github, comment_id, _view(task, report, children, settings, scrub), scrub, retrier) is None:
            return  # the comment was deleted: nothing to keep current
        shown = children


def _edit(
    github: GitHubTarget, comment_id: str, v: render.View, scrub: redaction.Redactor, retrier: Retrier
) -> CommentRef | None:
    body = scrub.text(github.render(v, opening=False))
    return retrier.run(lambda _attempt: github.update(comment_id, body))


def _refresh_parent(child: Task, report: dict[str, str], within_seconds: float | None) -> dict[str, str]:
    """A delegated task that ended edits its parent's sticky comment (which lists its children) if the parent
    ended first; otherwise the parent's own last edit lists it. Failures are kept in the child's report."""
    reporting = reporting_settings()
    if not reporting.report_back or not child.parent_task_id:
        return report
    parent = tasks.get(child.parent_task_id)
    if parent is None or parent.source in (TaskSource.CHAT, TaskSource.AGENT) or parent.repo is None:
        return report
    comment_id = parent.report.get("github_comment_id")
    if not parent.status.terminal or parent.report.get(FINAL_KEY) != "true" or not comment_id:
        return report
    settings = get_settings()
    gh = github_config(settings)
    if gh is None:
        return report
    deadline = _deadline(reporting, within_seconds)
    redact = Redactor([])
    scrub = redaction.current()
    retrier = _retrier(reporting, deadline)
    try:
        target = GitHubTarget(gh, parent, timeout=reporting.report_timeout_seconds, deadline=deadline, redact=redact)
        children = _children(parent)
        if not children:
            return report  # (a blip reading them: the comment keeps the list it has)
        v = _view(parent, parent.report, children, settings, scrub)
        if _edit(target, comment_id, v, scrub, retrier) is not None:
            _keep_children_current(target, parent, parent.report, children, settings, scrub, retrier)
    except (HttpFailure, InvalidContext) as exc:
        message = exc.message if isinstance(exc, HttpFailure) else str(exc)
        report["error"] = _clip(scrub.text(redact(f"github (the parent task's comment): {message}")))
        get_logger().warning(
            "could not update the parent task's comment",
            extra={"task_id": child.task_id, "parent_task_id": parent.task_id, "error": report["error"]},
        )
    else:
        report.pop("error", None)
        get_logger().info(
            "updated the parent task's comment",
            extra={"task_id": child.task_id, "parent_task_id": parent.task_id, "attempts": retrier.attempts_used},
        )
    report["attempts"] = str(retrier.attempts_used)
    return report


def _clip(message: str) -> str:
    return message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 1] + "…"


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
