"""The task page in headless Chromium against run-local: all of a long task's output (REST pages after the first
500 events), and the report-back state (comment link, error, attempts)."""

# ruff: noqa: F811  (the browser fixtures are imported from test_dashboard_browser)
from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from playwright.sync_api import Route, WebSocketRoute, expect

from tests.e2e.conftest import RunningMachine
from tests.e2e.test_dashboard_browser import Tab, chromium, playwright_session, tab  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def finished(machine: RunningMachine, message: str, timeout: float = 90) -> dict[str, Any]:
    status, accepted = machine.api("POST", "/api/chat", {"message": message})
    assert status == 202 and isinstance(accepted, dict)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, detail = machine.api("GET", f"/api/tasks/{accepted['task_id']}?limit=1")
        assert isinstance(detail, dict)
        if detail["task"]["status"] not in ("queued", "running"):
            task: dict[str, Any] = detail["task"]
            return task
        time.sleep(0.3)
    raise AssertionError("the task did not finish")


def test_the_task_page_shows_all_output_of_a_long_task_from_rest(tab: Tab) -> None:
    task = finished(tab.machine, "[[lines:1200]] a long one")
    _, first = tab.machine.api("GET", f"/api/tasks/{task['task_id']}")
    assert isinstance(first, dict) and first["has_more"] is True  # more than one page of output

    # The socket reaches nothing: the page has only the REST API (and its pages) to show the output.
    def dead(ws: WebSocketRoute) -> None:
        ws.on_message(lambda message: None)

    tab.page.route_web_socket(re.compile(r"/ws(\?|$)"), dead)
    page = tab.open(f"#/tasks/{task['task_id']}", token=True)
    output = page.get_by_test_id("task-output")
    expect(output.get_by_test_id("assistant-text")).to_have_count(1200, timeout=60_000)
    texts = output.get_by_test_id("assistant-text").all_inner_texts()
    assert texts[0] == "line 1 of 1200" and texts[-1] == "line 1200 of 1200"
    assert len(set(texts)) == 1200
    expect(page.get_by_test_id("task-status")).to_have_attribute("data-status", "completed")
    assert tab.errors == []


def test_the_task_page_shows_the_report_back_state(tab: Tab) -> None:
    task = finished(tab.machine, "[[text:reported]]")
    report: dict[str, str] = {
        "github_comment_id": "77",
        "github_comment_url": "https://github.com/acme/app/issues/5#issuecomment-77",
        "error": "GitHub answered 502 Bad Gateway",
        "attempts": "4",
    }

    def with_report(route: Route) -> None:
        response = route.fetch()
        data = response.json()
        data["task"]["report"] = report
        route.fulfill(response=response, body=json.dumps(data))

    tab.page.route(re.compile(rf"/api/tasks/{task['task_id']}(\?.*)?$"), with_report)
    page = tab.signed_in(f"#/tasks/{task['task_id']}")
    fact = page.get_by_test_id("task-report")
    expect(fact).to_be_visible()
    link = fact.get_by_test_id("task-report-link")
    expect(link).to_have_attribute("href", report["github_comment_url"])
    expect(link).to_have_text("GitHub comment")
    expect(fact.get_by_test_id("task-report-error")).to_have_text("failed: GitHub answered 502 Bad Gateway")
    expect(fact).to_contain_text("4 attempts")
    tab.page.unroute_all(behavior="ignoreErrors")
    tab.assert_clean()


def test_a_task_without_report_state_shows_no_report_fact(tab: Tab) -> None:
    task = finished(tab.machine, "[[text:plain]]")
    page = tab.signed_in(f"#/tasks/{task['task_id']}")
    expect(page.get_by_test_id("task-status")).to_have_attribute("data-status", "completed")
    expect(page.get_by_test_id("task-report")).to_have_count(0)
    tab.assert_clean()
