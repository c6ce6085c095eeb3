"""Reporting back to where a task came from: one sticky comment on the GitHub issue/PR, the Jira ticket or the
Sentry issue, created when the task starts and edited as it moves on and when it ends.

Public API (the runner calls these and stores the returned state with tasks.set_fields(task_id, report=...)):
- report_started(task) -> dict[str, str]
- report_finished(task) -> dict[str, str]
Both are no-ops (returning task.report) for chat tasks and when no credentials are configured, and never raise.
A task another agent delegated (source "agent") does not comment: the parent's GitHub comment lists it, and when
it ends after its parent, its report_finished edits that comment (its failures go into the child's report).

Report state keys: github_comment_id / github_comment_url, jira_comment_id / jira_comment_url, sentry_comment_id
/ sentry_comment_url; "error" (why the last report-back failed, cleared by a later success) and "attempts" (tries
the last report-back needed); "final" (the task's last comment, listing its children, is written and stored: its
children edit it from then on). "pr_url", set by the runner, is read and linked.

Configuration: GITHUB_API_URL + GITHUB_TOKEN; JIRA_BASE_URL + JIRA_EMAIL + JIRA_API_TOKEN; SENTRY_API_URL +
SENTRY_AUTH_TOKEN; DASHBOARD_URL for the link; REPORT_BACK, REPORT_MAX_ATTEMPTS, REPORT_BACKOFF_SECONDS,
REPORT_MAX_BACKOFF_SECONDS, REPORT_TIMEOUT_SECONDS, REPORT_DEADLINE_SECONDS (config.ReportingSettings).
"""

from agent_machine.domain.reporting.service import report_finished, report_started

__all__ = ["report_finished", "report_started"]
