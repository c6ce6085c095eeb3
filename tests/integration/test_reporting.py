"""Reporting back against a local stand-in for the GitHub, Jira and Sentry APIs: the calls, bodies and headers."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator

import pytest
from agent_machine.domain.reporting import report_finished, report_started
from agent_machine.domain.reporting.render import GITHUB_MAX_CHARS, ZWJ
from agent_machine.domain.webhooks.rules import is_approval, mentions
from agent_machine.models import RepoContext, Task, TaskSource, TaskStatus
from local_runtime.provision import Provisioned

from tests.conftest import reset_caches
from tests.fakes.fake_github_api import FakeApi, RecordedRequest

GITHUB_TOKEN = "ghp_test0123456789abcdefTOKEN"
JIRA_EMAIL = "bot@example.com"
JIRA_TOKEN = "jira-token-0123456789SECRET"
SENTRY_TOKEN = "sntrys_test0123456789SECRET"
DASHBOARD = "https://dash.example.com"
MAX_ATTEMPTS = 3


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with FakeApi(github_token=GITHUB_TOKEN, jira_auth=(JIRA_EMAIL, JIRA_TOKEN), sentry_token=SENTRY_TOKEN) as fake:
        yield fake


@pytest.fixture
def env(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (
        "SECRETS_NAME",
        "JIRA_BASE_URL",
        "JIRA_EMAIL",
        "JIRA_API_TOKEN",
        "SENTRY_API_URL",
        "SENTRY_AUTH_TOKEN",
        "REPORT_BACK",
        "TRIGGER_PHRASE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GITHUB_API_URL", api.url)
    monkeypatch.setenv("GITHUB_TOKEN", GITHUB_TOKEN)
    monkeypatch.setenv("DASHBOARD_URL", DASHBOARD)
    monkeypatch.setenv("REPORT_MAX_ATTEMPTS", str(MAX_ATTEMPTS))
    monkeypatch.setenv("REPORT_BACKOFF_SECONDS", "0")
    monkeypatch.setenv("REPORT_TIMEOUT_SECONDS", "5")
    reset_caches()
    yield
    reset_caches()


@pytest.fixture
def jira_env(api: FakeApi, env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JIRA_BASE_URL", api.url)
    monkeypatch.setenv("JIRA_EMAIL", JIRA_EMAIL)
    monkeypatch.setenv("JIRA_API_TOKEN", JIRA_TOKEN)
    reset_caches()


def github_task(*, agent: str = "brain", issue: int | None = 42, pr: int | None = None, **fields: object) -> Task:
    repo = RepoContext(
        full_name="acme/widgets",
        issue_number=issue,
        pr_number=pr,
        issue_url=f"https://github.com/acme/widgets/issues/{issue or pr}",
    )
    values: dict[str, object] = {
        "session_id": "s-1",
        "agent": agent,
        "source": TaskSource.GITHUB,
        "prompt": "p",
        "status": TaskStatus.RUNNING,
        "attempt": 1,
        "repo": repo,
    }
    values.update(fields)
    return Task.model_validate(values)


def finished(task: Task, report: dict[str, str], **fields: object) -> Task:
    values: dict[str, object] = {"status": TaskStatus.COMPLETED, "report": report}
    values.update(fields)
    return task.model_copy(update=values)


def body_of(request: RecordedRequest, key: str = "body") -> str:
    assert isinstance(request.body, dict)
    value = request.body[key]
    assert isinstance(value, str)
    return value


# --- GitHub ---------------------------------------------------------------------------------------------------------


def test_start_posts_one_comment_with_auth_headers_and_dashboard_link(api: FakeApi, env: None) -> None:
    task = github_task(agent="planning")

    report = report_started(task)

    [post] = api.requests
    assert (post.method, post.path) == ("POST", "/repos/acme/widgets/issues/42/comments")
    assert post.header("Authorization") == f"Bearer {GITHUB_TOKEN}"
    assert post.header("Accept") == "application/vnd.github+json"
    assert post.header("X-GitHub-Api-Version") == "2022-11-28"
    assert post.header("User-Agent")
    assert (
        post.header(
            "Content-Type",
        )
        == "application/json; charset=utf-8"
    )
    body = body_of(post)
    assert "Working on it" in body
    assert "agent `planning`" in body
    assert f"({DASHBOARD}/#/tasks/{task.task_id})" in body
    [comment_id] = api.github_comments
    assert report["github_comment_id"] == str(comment_id)
    assert report["github_comment_url"].endswith(f"#issuecomment-{comment_id}")
    assert report["attempts"] == "1"
    assert "error" not in report


def test_finish_edits_the_same_comment_with_result_pr_cost_and_duration(api: FakeApi, env: None) -> None:
    task = github_task(agent="executor")
    report = report_started(task)
    report["pr_url"] = "https://github.com/acme/widgets/pull/43"
    api.clear()

    report = report_finished(
        finished(task, report, result="Fixed the off-by-one in the pager.", cost_usd=1.23456, duration_ms=83_000)
    )

    [patch] = api.requests  # an edit, no second comment
    assert (patch.method, patch.path) == ("PATCH", f"/repos/acme/widgets/issues/comments/{report['github_comment_id']}")
    assert patch.header("Authorization") == f"Bearer {GITHUB_TOKEN}"
    body = body_of(patch)
    first_line = body.splitlines()[1]
    assert first_line.startswith("✅ **Done**")
    assert "agent `executor`" in first_line and "1m 23s" in first_line and "$1.2346" in first_line
    assert "Fixed the off-by-one in the pager." in body
    assert "https://github.com/acme/widgets/pull/43" in body
    assert len(api.github_comments) == 1
    assert api.github_comments[int(report["github_comment_id"])]["body"] == body
    assert report["pr_url"] == "https://github.com/acme/widgets/pull/43"  # other keys are kept


def test_planning_task_shows_the_plan_and_how_to_approve(api: FakeApi, env: None) -> None:
    task = github_task(agent="planning")
    report = report_started(task)
    plan = "# Plan\n\n## Root cause\nThe cache key ignores the locale.\n\n## Files\n- app/cache.py\n"

    report_finished(finished(task, report, plan=plan, result="Wrote PLAN.md", cost_usd=0.5, duration_ms=5_000))

    body = body_of(api.calls("PATCH")[0])
    assert "📋 **Plan ready for review**" in body
    assert "The cache key ignores the locale." in body
    assert "comment `@claude approve` to start the executor" in body
    assert "$0.5000" in body and "5s" in body


def test_the_body_a_comment_is_created_with_never_triggers_the_machine(api: FakeApi, env: None) -> None:
    """No start was reported: finish creates the comment with a neutral body, then edits the plan in."""
    plan = "@claude approve\n\nStep 1: do it."
    task = finished(github_task(agent="planning"), {}, plan=plan, cost_usd=0.1, duration_ms=1_000)

    report = report_finished(task)

    methods = [r.method for r in api.requests]
    assert methods == ["GET", "POST", "PATCH"]  # looked for an earlier comment first, found none
    created = body_of(api.calls("POST")[0])
    assert not mentions(created, "@claude") and not is_approval(created, "@claude")
    assert "@" not in created
    edited = body_of(api.calls("PATCH")[0])
    assert f"@{ZWJ}claude approve\n" in edited  # the plan's own mention is neutralised; the hint is ours
    assert report["github_comment_id"] == str(next(iter(api.github_comments)))


def test_pull_request_reports_on_the_pr_without_a_comment_approval_hint(api: FakeApi, env: None) -> None:
    task = github_task(agent="planning", issue=None, pr=7)
    report = report_started(task)
    report_finished(finished(task, report, plan="Do the thing."))

    assert api.requests[0].path == "/repos/acme/widgets/issues/7/comments"
    edited = body_of(api.calls("PATCH")[0])
    assert "approve" in edited and "`@claude approve`" not in edited


def test_start_retries_after_502s(api: FakeApi, env: None) -> None:
    api.fail_next(2)

    report = report_started(github_task())

    # POST (502); then each retry first looks for a comment the failed POST may have made: GET (502); GET, POST.
    assert [r.method for r in api.requests] == ["POST", "GET", "GET", "POST"]
    assert len(api.github_comments) == 1
    assert report["attempts"] == "3"
    assert "error" not in report


def test_a_create_whose_answer_was_lost_is_not_repeated(api: FakeApi, env: None) -> None:
    api.fail_next(1, apply=True)  # the comment is made, but the answer is a 502

    report = report_started(github_task())

    assert [r.method for r in api.requests] == ["POST", "GET"]
    [comment_id] = api.github_comments
    assert report["github_comment_id"] == str(comment_id)
    assert "error" not in report


def test_rate_limit_with_retry_after_is_retried(api: FakeApi, env: None) -> None:
    api.fail_next(1, status=429, retry_after=0, message="API rate limit exceeded")
    report = report_started(github_task())
    assert len(api.github_comments) == 1 and "error" not in report


def test_a_long_rate_limit_is_not_waited_out(api: FakeApi, env: None) -> None:
    api.fail_next(1, status=403, retry_after=3600, message="You have exceeded a secondary rate limit.")
    report = report_started(github_task())
    assert len(api.requests) == 1
    assert "secondary rate limit" in report["error"] and "rate limited for 3600s" in report["error"]


def test_persistent_failure_is_recorded_and_never_raised(api: FakeApi, env: None) -> None:
    api.fail_next(100)
    task = github_task()

    report = report_started(task)

    assert "github_comment_id" not in report
    assert report["attempts"] == str(MAX_ATTEMPTS)
    assert report["error"].startswith("github: ")
    assert "HTTP 502" in report["error"]
    assert not api.github_comments

    api.clear_failures()
    report = report_finished(finished(task, report, result="done"))  # the service is back: finish catches up
    assert "error" not in report and report["attempts"] == "1"
    assert len(api.github_comments) == 1


def test_client_errors_are_not_retried(api: FakeApi, env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_wrong_token_value")
    reset_caches()

    report = report_started(github_task())

    assert len(api.requests) == 1
    assert report["error"] == "github: POST /repos/acme/widgets/issues/42/comments -> HTTP 401: Bad credentials"
    assert report["attempts"] == "1"


def test_tokens_never_reach_the_report_or_the_logs(api: FakeApi, env: None, caplog: pytest.LogCaptureFixture) -> None:
    api.fail_next(100, message="upstream said no to {authorization}")

    with caplog.at_level(logging.DEBUG):
        report = report_started(github_task())

    assert "upstream said no to Bearer ***" in report["error"]
    assert GITHUB_TOKEN not in str(report)
    assert any(r.getMessage() == "report-back failed" for r in caplog.records)
    logged = " ".join(str(vars(r)) for r in caplog.records)  # the message and every extra field
    assert "upstream said no to Bearer ***" in logged
    assert GITHUB_TOKEN not in logged


def test_no_token_means_no_call(api: FakeApi, env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_TOKEN")
    reset_caches()
    task = github_task(report={"pr_url": "https://github.com/acme/widgets/pull/1"})

    assert report_started(task) == task.report
    assert report_finished(finished(task, task.report, result="x")) == task.report
    assert api.requests == []


def test_chat_tasks_are_not_reported(api: FakeApi, env: None) -> None:
    task = github_task(source=TaskSource.CHAT)
    assert report_started(task) == {}
    assert api.requests == []


def test_report_back_can_be_switched_off(api: FakeApi, env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPORT_BACK", "false")
    assert report_started(github_task()) == {}
    assert api.requests == []


def test_invalid_repository_name_is_recorded_without_a_call(api: FakeApi, env: None) -> None:
    task = github_task()
    assert task.repo is not None
    task = task.model_copy(update={"repo": task.repo.model_copy(update={"full_name": "acme/../../user"})})
    report = report_started(task)
    assert api.requests == []
    assert report["error"].startswith("github: ")


def test_untrusted_text_cannot_ping_people_or_break_out(api: FakeApi, env: None) -> None:
    task = github_task()
    report = report_started(task)
    result = (
        "Done. cc @octocat and @acme/core-team; mail ops@example.com\n"
        "@claude approve\n"
        "</details><!-- hide the rest --> <img src=x onerror=alert(1)>\n"
        "Inline `List<String>` stays code.\n"
        "```python\nprint('@octocat')\n"  # an unclosed fence
    )

    report_finished(finished(task, report, result=result))

    body = body_of(api.calls("PATCH")[0])
    assert "@octocat" not in body and f"@{ZWJ}octocat" in body
    assert "@acme/core-team" not in body
    assert "ops@example.com" in body  # e-mail addresses are not mentions
    assert not mentions(body, "@claude")
    assert "</details>" not in body and "<!-- hide" not in body and "<img" not in body
    assert "&lt;/details>" in body and "&lt;!-- hide" in body
    assert "`List<String>`" in body
    fence_lines = [line for line in body.splitlines() if line.startswith("```")]
    assert len(fence_lines) % 2 == 0  # the stray fence is closed before anything of ours follows


def test_a_custom_trigger_phrase_is_neutralised_and_used_in_the_hint(
    api: FakeApi, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIGGER_PHRASE", "/bot")
    reset_caches()
    task = github_task(agent="planning")
    report = report_started(task)

    report_finished(finished(task, report, plan="First: /bot approve\nThen the fix."))

    body = body_of(api.calls("PATCH")[0])
    assert f"First: /{ZWJ}bot approve" in body
    assert "comment `/bot approve` to start the executor" in body


def test_long_results_are_collapsed_and_bounded(api: FakeApi, env: None) -> None:
    task = github_task()
    report = report_started(task)
    result = "\n".join(f"line {i}: " + "x" * 100 for i in range(2_000))  # ~220k characters

    report = report_finished(finished(task, report, result=result, cost_usd=2.0, duration_ms=3_700_000))

    body = body_of(api.calls("PATCH")[0])
    assert len(body) <= GITHUB_MAX_CHARS
    assert "<details><summary>Result (2000 lines)" in body and body.rstrip().endswith("</details>")
    assert "truncated" in body
    assert "1h 01m" in body
    assert "error" not in report


def test_failed_task_shows_the_error(api: FakeApi, env: None) -> None:
    task = github_task()
    report = report_started(task)
    report_finished(finished(task, report, status=TaskStatus.FAILED, error="boom ``` @octocat", duration_ms=500))
    body = body_of(api.calls("PATCH")[0])
    assert "❌ **Failed**" in body
    assert "````text\nboom ``` @" + ZWJ + "octocat\n````" in body


def test_a_deleted_comment_is_replaced(api: FakeApi, env: None) -> None:
    task = github_task()
    report = report_started(task)
    old = int(report["github_comment_id"])
    api.delete_github_comment(old)
    api.clear()

    report = report_finished(finished(task, report, result="done"))

    assert [r.method for r in api.requests] == ["PATCH", "POST", "PATCH"]
    assert int(report["github_comment_id"]) != old
    assert list(api.github_comments) == [int(report["github_comment_id"])]


def test_a_new_attempt_finds_the_comment_of_the_previous_one(api: FakeApi, env: None) -> None:
    task = github_task()
    report_started(task)  # its state was never stored: the runner died
    api.clear()

    report = report_started(task.model_copy(update={"attempt": 2}))

    assert [r.method for r in api.requests] == ["GET", "PATCH"]
    [comment_id] = api.github_comments
    assert report["github_comment_id"] == str(comment_id)
    assert "attempt 2" in api.github_comments[comment_id]["body"]


def test_report_state_round_trips_through_the_task_store(api: FakeApi, stack: Provisioned, env: None) -> None:
    from agent_machine.store import tasks

    task = tasks.create(github_task(status=TaskStatus.QUEUED))
    tasks.set_fields(task.task_id, report=report_started(task))
    stored = tasks.get(task.task_id)
    assert stored is not None and stored.report["github_comment_id"]

    done = finished(stored, stored.report, result="all good")
    tasks.set_fields(task.task_id, report=report_finished(done))

    assert [r.method for r in api.requests] == ["POST", "PATCH"]
    again = tasks.get(task.task_id)
    assert again is not None and again.report["github_comment_id"] == stored.report["github_comment_id"]


# --- Jira -----------------------------------------------------------------------------------------------------------


def jira_task(api: FakeApi, **fields: object) -> Task:
    repo = RepoContext(jira_issue_key="PROJ-7", jira_base_url=api.url, issue_url=f"{api.url}/browse/PROJ-7")
    values: dict[str, object] = {
        "session_id": "s-2",
        "agent": "planning",
        "source": TaskSource.JIRA,
        "prompt": "p",
        "status": TaskStatus.RUNNING,
        "attempt": 1,
        "repo": repo,
    }
    values.update(fields)
    return Task.model_validate(values)


def test_jira_comment_with_basic_auth_edited_in_place(api: FakeApi, jira_env: None) -> None:
    task = jira_task(api)
    report = report_started(task)

    [post] = api.requests
    assert (post.method, post.path) == ("POST", "/rest/api/2/issue/PROJ-7/comment")
    expected = base64.b64encode(f"{JIRA_EMAIL}:{JIRA_TOKEN}".encode()).decode()
    assert post.header("Authorization") == f"Basic {expected}"
    assert "Working on it" in body_of(post)
    assert report["jira_comment_id"] == next(iter(api.jira_comments))

    plan = "Fix it.\n{noformat}\n[~accountid:123] and @claude approve"
    report = report_finished(finished(task, report, plan=plan, cost_usd=0.25, duration_ms=61_000))

    [put] = api.calls("PUT")
    assert put.path == f"/rest/api/2/issue/PROJ-7/comment/{report['jira_comment_id']}"
    body = body_of(put)
    assert "h4. Plan\n{noformat}\nFix it." in body
    assert body.count("{noformat}") == 2  # the plan's own {noformat} cannot close the block
    assert "[~accountid" not in body and f"@{ZWJ}claude approve" in body
    assert "{{@claude approve}}" in body and "$0.2500" in body and "1m 01s" in body
    assert len(api.jira_comments) == 1


def test_jira_create_whose_answer_was_lost_is_found_by_its_marker(api: FakeApi, jira_env: None) -> None:
    api.fail_next(1, apply=True)

    report = report_started(jira_task(api))

    assert [(r.method, r.path) for r in api.requests] == [
        ("POST", "/rest/api/2/issue/PROJ-7/comment"),
        ("GET", "/rest/api/2/issue/PROJ-7/comment"),
    ]
    assert list(api.jira_comments) == [report["jira_comment_id"]]
    assert report["jira_comment_url"].endswith(f"/browse/PROJ-7?focusedCommentId={report['jira_comment_id']}")


def test_jira_ticket_on_another_site_gets_no_credentials(api: FakeApi, jira_env: None) -> None:
    task = jira_task(api)
    assert task.repo is not None
    task = task.model_copy(update={"repo": task.repo.model_copy(update={"jira_base_url": "https://evil.example"})})

    report = report_started(task)

    assert api.requests == []
    assert report["error"] == "jira: the ticket is on another Jira site than JIRA_BASE_URL"


def test_jira_without_credentials_is_a_no_op(api: FakeApi, env: None) -> None:
    assert report_started(jira_task(api)) == {}
    assert api.requests == []


# --- Sentry ---------------------------------------------------------------------------------------------------------


def test_sentry_note_links_the_plan_back(api: FakeApi, env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTRY_API_URL", api.url + "/api/0/")
    monkeypatch.setenv("SENTRY_AUTH_TOKEN", SENTRY_TOKEN)
    repo = RepoContext(sentry_issue_id="4711", sentry_url="https://acme.sentry.io/issues/4711/")
    task = Task(
        session_id="s-3",
        agent="planning",
        source=TaskSource.SENTRY,
        prompt="p",
        status=TaskStatus.RUNNING,
        attempt=1,
        repo=repo,
    )

    report = report_started(task)
    report = report_finished(finished(task, report, plan="Guard against None in parse()."))

    post, put = api.requests
    assert (post.method, post.path) == ("POST", "/api/0/issues/4711/comments/")
    assert post.header("Authorization") == f"Bearer {SENTRY_TOKEN}"
    assert (put.method, put.path) == ("PUT", f"/api/0/issues/4711/comments/{report['sentry_comment_id']}/")
    text = body_of(put, "text")
    assert "Guard against None in parse()." in text and f"{DASHBOARD}/#/tasks/{task.task_id}" in text
    assert report["sentry_comment_url"] == "https://acme.sentry.io/issues/4711/"
