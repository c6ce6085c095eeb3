"""The dashboard in a real headless Chromium against run-local with the fake CLI.

Chromium is Debian's (`/usr/bin/chromium`, never `playwright install`). Screenshots of the main pages go to
`test-results/screenshots/`, and to `docs/screenshots/` when a file there is missing or UPDATE_SCREENSHOTS=1
(so a test run does not churn the committed images).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    ViewportSize,
    WebSocketRoute,
    expect,
    sync_playwright,
)

from tests.conftest import ROOT
from tests.e2e.conftest import RunningMachine
from tests.fakes.fake_claude import COST_PER_RESPONSE_USD

SPA = ROOT / "dashboard_spa"

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 860}
PHONE: ViewportSize = {"width": 390, "height": 844}
DOCS_SHOTS = ROOT / "docs" / "screenshots"
RUN_SHOTS = ROOT / "test-results" / "screenshots"
TIMEOUT_MS = 45_000
WEBHOOK_SECRET = "deploys-webhook-secret-0123456789"

expect.set_options(timeout=TIMEOUT_MS)


def post_signed(url: str, payload: dict[str, Any]) -> int:
    """A delivery to a dynamic webhook, signed the way its default header expects."""
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", "X-Signature-256": signature}
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return int(resp.status)


def money(value: float) -> str:
    """The dashboard's format for small amounts (4 decimals under $0.10)."""
    return f"${value:.4f}" if 0 < abs(value) < 0.1 else f"${value:.2f}"


@pytest.fixture(scope="module")
def playwright_session() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`make browser`; .ci/run does)")
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def chromium(playwright_session: Playwright) -> Iterator[Browser]:
    browser = playwright_session.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


class Tab:
    """A page plus what went wrong in it (uncaught errors), for the assertions at the end of a test."""

    def __init__(self, context: BrowserContext, machine: RunningMachine) -> None:
        self.context = context
        self.machine = machine
        self.page: Page = context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.console_errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        # Not failures: CSP reports for inline handlers stripped from sanitised Markdown, expected 4xx answers,
        # and network errors while the machine is down or a socket is refused on purpose.
        text = message.text
        expected = ("Content Security Policy", "status of 4", "net::ERR_", "WebSocket connection to")
        if message.type == "error" and not any(e in text for e in expected):
            self.console_errors.append(text)

    def open(self, hash_path: str = "#/chat", *, token: bool = False) -> Page:
        query = f"?token={self.machine.api_token}" if token else ""
        self.page.goto(f"{self.machine.base_url}/{query}{hash_path}")
        return self.page

    def signed_in(self, hash_path: str = "#/chat") -> Page:
        page = self.open(hash_path, token=True)
        expect(page.get_by_test_id("nav")).to_be_visible()
        expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "online")
        return page

    def chat(self, message: str) -> str:
        """Send a message from the composer; returns the new task's id."""
        page = self.page
        before = page.get_by_test_id("turn").count()
        page.get_by_test_id("chat-input").fill(message)
        page.get_by_test_id("chat-send").click()
        expect(page.get_by_test_id("turn")).to_have_count(before + 1)
        task_id = page.get_by_test_id("turn").last.get_attribute("data-task-id")
        assert task_id
        return task_id

    def turn(self, task_id: str) -> Any:
        return self.page.locator(f'[data-testid="turn"][data-task-id="{task_id}"]')

    def shot(self, name: str, *, full_page: bool = False) -> None:
        RUN_SHOTS.mkdir(parents=True, exist_ok=True)
        target = RUN_SHOTS / f"{name}.png"
        self.page.evaluate("document.querySelector('.toasts')?.remove()")
        self.page.wait_for_timeout(250)  # let transitions settle
        self.page.screenshot(path=str(target), full_page=full_page)
        docs = DOCS_SHOTS / f"{name}.png"
        if os.environ.get("UPDATE_SCREENSHOTS") == "1" or not docs.exists():
            DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(target, docs)

    def assert_clean(self) -> None:
        assert self.errors == [], f"uncaught errors in the page: {self.errors}"
        assert self.console_errors == [], f"console errors: {self.console_errors}"


@pytest.fixture
def tab(chromium: Browser, local_machine: RunningMachine) -> Iterator[Tab]:
    context = chromium.new_context(viewport=DESKTOP, color_scheme="light", locale="en-US")
    tab = Tab(context, local_machine)
    yield tab
    context.close()


# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.browser
def test_sign_in_chat_streams_output_and_shows_the_cost(tab: Tab) -> None:
    page = tab.open("#/chat")
    expect(page.get_by_test_id("signin")).to_be_visible()
    page.get_by_test_id("signin-token").fill("not-the-token")
    page.get_by_test_id("signin-submit").click()
    expect(page.get_by_test_id("signin-error")).to_contain_text("refused")

    # The URL token that run-local prints signs in, and leaves the address bar.
    page = tab.signed_in("#/chat")
    assert "token=" not in page.url
    assert page.evaluate("localStorage.getItem('agentMachine.token')") == tab.machine.api_token

    task_id = tab.chat("What is in this repository?")
    turn = tab.turn(task_id)
    expect(turn.get_by_test_id("user-message")).to_have_text("What is in this repository?")
    expect(turn.get_by_test_id("assistant-text").first).to_contain_text("Let me check.")
    tool = turn.get_by_test_id("tool-call")
    expect(tool).to_have_count(1)
    expect(tool).to_contain_text("Bash: echo hello-from-tool")
    assert tool.get_attribute("open") is None  # tool calls are collapsed
    expect(turn.get_by_test_id("assistant-text").last).to_contain_text("All done: What is in this repository?")
    expect(turn.get_by_test_id("reply-cost")).to_contain_text(money(2 * COST_PER_RESPONSE_USD))
    expect(turn.get_by_test_id("reply-status")).to_have_attribute("data-status", "completed")
    tool.locator("summary").click()
    expect(tool).to_contain_text("hello-from-tool")
    expect(page.get_by_test_id("session-cost")).to_contain_text(money(2 * COST_PER_RESPONSE_USD))
    tab.shot("chat")

    # Output streams in as the CLI writes it: the first line shows long before the run ends.
    task_id = tab.chat("[[lines:6:700]] count slowly")
    turn = tab.turn(task_id)
    expect(turn.get_by_test_id("assistant-text").first).to_contain_text("line 1 of 6")
    assert turn.get_by_test_id("reply-footer").count() == 0
    expect(turn.get_by_test_id("reply-footer")).to_have_attribute("data-status", "completed")
    expect(turn.get_by_test_id("assistant-text")).to_have_count(6)
    expect(turn.get_by_test_id("reply-cost")).to_contain_text(money(COST_PER_RESPONSE_USD))

    # The session shows in the list with its running total.
    expect(page.get_by_test_id("session-item")).to_have_count(1)
    expect(page.get_by_test_id("session-cost")).to_contain_text(money(3 * COST_PER_RESPONSE_USD))
    tab.assert_clean()


@pytest.mark.e2e
@pytest.mark.browser
def test_stop_a_hanging_task_with_the_button(tab: Tab) -> None:
    page = tab.signed_in("#/chat")
    task_id = tab.chat("[[hang]] wait for a stop")
    turn = tab.turn(task_id)
    expect(turn.get_by_test_id("assistant-text")).to_have_count(1)
    expect(turn.get_by_test_id("reply-status")).to_have_attribute("data-status", "running")

    turn.get_by_test_id("reply-task-link").click()
    expect(page.get_by_test_id("task-view")).to_be_visible()
    expect(page.get_by_test_id("task-status")).to_have_attribute("data-status", "running")
    expect(page.get_by_test_id("task-prompt")).to_have_text("[[hang]] wait for a stop")
    expect(page.get_by_test_id("task-output").get_by_test_id("assistant-text")).to_have_count(1)
    stop = page.get_by_test_id("task-stop")
    expect(stop).to_be_visible()
    tab.shot("task-running")
    stop.click()

    expect(page.get_by_test_id("task-status")).to_have_attribute("data-status", "stopped")
    expect(stop).to_be_hidden()
    expect(page.get_by_test_id("task-output").get_by_test_id("reply-footer")).to_have_attribute(
        "data-status", "stopped"
    )
    expect(page.get_by_test_id("task-cost")).to_have_text(money(COST_PER_RESPONSE_USD))
    status, detail = tab.machine.api("GET", f"/api/tasks/{task_id}")
    assert status == 200 and isinstance(detail, dict)
    assert detail["task"]["status"] == "stopped"

    # The chat shows it stopped too.
    page.go_back()
    expect(tab.turn(task_id).get_by_test_id("reply-status")).to_have_attribute("data-status", "stopped")
    tab.assert_clean()


@pytest.mark.e2e
@pytest.mark.browser
def test_reload_mid_task_replays_the_output(tab: Tab) -> None:
    page = tab.signed_in("#/chat")
    task_id = tab.chat("[[lines:10:600]] a long answer")
    turn = tab.turn(task_id)
    expect(turn.get_by_test_id("assistant-text").nth(2)).to_be_visible()
    chat_url = page.url
    assert "#/chat/" in chat_url

    page.reload()
    turn = tab.turn(task_id)
    expect(turn).to_be_visible()
    # Everything written before the reload is there again, then the rest streams in, each line exactly once.
    expect(turn.get_by_test_id("reply-footer")).to_have_attribute("data-status", "completed")
    texts = turn.get_by_test_id("assistant-text").all_inner_texts()
    assert texts == [f"line {i} of 10" for i in range(1, 11)]

    # The socket drops mid-task: the page reconnects by itself and replays what it missed.
    task_id = tab.chat("[[lines:8:600]] and another")
    turn = tab.turn(task_id)
    expect(turn.get_by_test_id("assistant-text").nth(1)).to_be_visible()
    page.evaluate("window.agentMachine.live.ws.close()")
    expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "online")
    expect(turn.get_by_test_id("reply-footer")).to_have_attribute("data-status", "completed")
    assert turn.get_by_test_id("assistant-text").all_inner_texts() == [f"line {i} of 8" for i in range(1, 9)]

    # The task page of a finished task shows its whole output to a late visitor.
    page.goto(f"{tab.machine.base_url}/#/tasks/{task_id}")
    output = page.get_by_test_id("task-output")
    expect(output.get_by_test_id("assistant-text")).to_have_count(8)
    expect(page.get_by_test_id("task-status")).to_have_attribute("data-status", "completed")
    tab.assert_clean()


@pytest.mark.e2e
@pytest.mark.browser
def test_a_connection_that_gets_no_answers_is_replaced(tab: Tab) -> None:
    """Replies that cannot reach the page (the first socket's frames are dropped): it reconnects and replays."""
    sockets: list[int] = []

    def route(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        sockets.append(len(sockets) + 1)
        if len(sockets) > 1:
            server.on_message(lambda message: ws.send(message))
        else:
            server.on_message(lambda message: None)

    tab.page.route_web_socket(re.compile(r"/ws(\?|$)"), route)
    page = tab.signed_in("#/chat")
    task_id = tab.chat("[[lines:3:300]] are you there?")
    turn = tab.turn(task_id)
    expect(turn.get_by_test_id("reply-footer")).to_have_attribute("data-status", "completed")
    assert turn.get_by_test_id("assistant-text").all_inner_texts() == [f"line {i} of 3" for i in range(1, 4)]
    assert len(sockets) >= 2
    expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "online")
    tab.assert_clean()


@pytest.mark.e2e
@pytest.mark.browser
def test_create_edit_and_delete_a_skill(tab: Tab) -> None:
    page = tab.signed_in("#/skills")
    expect(page.get_by_test_id("skills-view")).to_be_visible()
    page.get_by_test_id("registry-new").click()
    form = page.get_by_test_id("registry-form")
    form.get_by_test_id("field-name").fill("release-notes")
    form.get_by_test_id("field-description").fill("Write release notes from merged pull requests")
    form.get_by_test_id("field-content").fill("# Release notes\n\nGroup changes by area; link every PR.")
    form.get_by_test_id("field-agents").fill("brain, planning")
    page.evaluate("window.scrollTo(0, 0)")
    tab.shot("skill-form")
    form.get_by_test_id("registry-save").click()
    item = page.locator('[data-testid="registry-item"][data-name="release-notes"]')
    expect(item).to_contain_text("Write release notes")
    expect(form).to_be_hidden()

    status, listing = tab.machine.api("GET", "/api/skills")
    assert status == 200
    items = listing if isinstance(listing, list) else listing.get("items", []) if isinstance(listing, dict) else []
    skill = next(s for s in items if s["name"] == "release-notes")
    assert skill["agents"] == ["brain", "planning"]
    assert skill["content"].startswith("# Release notes")

    item.get_by_test_id("registry-edit").click()
    form = page.get_by_test_id("registry-form")
    expect(form.get_by_test_id("field-name")).to_have_attribute("readonly", "")
    form.get_by_test_id("field-description").fill("Release notes, grouped by area")
    form.get_by_test_id("registry-save").click()
    expect(item).to_contain_text("grouped by area")
    tab.shot("skills")

    # A bad name is refused with a readable message, and nothing is created.
    page.get_by_test_id("registry-new").click()
    form = page.get_by_test_id("registry-form")
    form.get_by_test_id("field-name").evaluate("el => el.removeAttribute('pattern')")
    form.get_by_test_id("field-name").fill("Bad Name")
    form.get_by_test_id("registry-save").click()
    expect(form.get_by_test_id("registry-error")).not_to_be_empty()
    form.get_by_test_id("registry-cancel").click()

    item.get_by_test_id("registry-delete").click()
    item.get_by_test_id("registry-delete").click()  # the second click confirms
    expect(item).to_have_count(0)
    tab.assert_clean()


@pytest.mark.e2e
@pytest.mark.browser
def test_main_pages_render_and_are_captured(tab: Tab) -> None:
    page = tab.signed_in("#/chat")
    task_id = tab.chat("Summarise the open issues")
    expect(tab.turn(task_id).get_by_test_id("reply-footer")).to_have_attribute("data-status", "completed")
    tab.chat("[[text:Here is a table:\n\n| area | open |\n|---|---|\n| api | 3 |\n| ui | 1 |]] table please")
    expect(page.get_by_test_id("turn").last.locator("table")).to_be_visible()
    expect(page.get_by_test_id("turn").last.get_by_test_id("reply-footer")).to_be_visible()

    page.get_by_test_id("nav-tasks").click()
    rows = page.get_by_test_id("task-row")
    expect(rows).to_have_count(2)
    expect(rows.first).to_have_attribute("data-status", "completed")
    expect(page.get_by_test_id("tasks-table")).to_contain_text("Chat")
    tab.shot("tasks")
    page.get_by_test_id("filter-status").select_option("failed")
    expect(rows).to_have_count(0)
    page.get_by_test_id("filter-status").select_option("completed")
    expect(rows).to_have_count(2)

    rows.last.get_by_test_id("task-link").click()
    expect(page.get_by_test_id("task-status")).to_have_attribute("data-status", "completed")
    expect(page.get_by_test_id("task-result")).to_contain_text("All done")
    tab.shot("task", full_page=True)

    page.get_by_test_id("nav-costs").click()
    expect(page.get_by_test_id("cost-today")).to_contain_text("$")
    expect(page.get_by_test_id("budget")).to_be_visible()
    tab.shot("costs", full_page=True)

    page.get_by_test_id("nav-agents").click()
    expect(page.locator('[data-testid="registry-item"][data-name="brain"]')).to_be_visible()
    tab.shot("agents")

    # A webhook defined in the dashboard takes a signed delivery, which the status page then lists.
    page.get_by_test_id("nav-webhooks").click()
    expect(page.locator('[data-testid="registry-item"][data-name="github"]')).to_be_visible()
    page.get_by_test_id("registry-new").click()
    form = page.get_by_test_id("registry-form")
    form.get_by_test_id("field-name").fill("deploys")
    form.get_by_test_id("field-description").fill("Deployment notices from CI")
    form.get_by_test_id("field-prompt_template").fill("A deployment finished: {payload}")
    form.get_by_test_id("field-secret").fill(WEBHOOK_SECRET)
    form.get_by_test_id("registry-save").click()
    deploys = page.locator('[data-testid="registry-item"][data-name="deploys"]')
    expect(deploys.get_by_test_id("webhook-url")).to_have_text(f"{tab.machine.base_url}/webhooks/deploys")
    expect(deploys).to_contain_text("signed")
    tab.shot("webhooks")
    status = post_signed(f"{tab.machine.base_url}/webhooks/deploys", {"service": "api", "state": "done"})
    assert 200 <= status < 300

    page.get_by_test_id("nav-status").click()
    expect(page.get_by_test_id("status-queue")).to_be_visible()
    expect(page.get_by_test_id("status-limit")).to_contain_text(re.compile(r"\d"))
    expect(page.get_by_test_id("delivery-row")).to_have_count(1)
    expect(page.get_by_test_id("delivery-row")).to_contain_text("task created")
    tab.shot("status")

    # Phone width: the same pages stay usable.
    page.set_viewport_size(PHONE)
    page.get_by_test_id("nav-chat").click()
    expect(page.get_by_test_id("chat-input")).to_be_visible()
    expect(page.get_by_test_id("sessions-toggle")).to_be_visible()
    page.get_by_test_id("sessions-toggle").click()
    page.get_by_test_id("session-item").filter(has_text="Summarise the open issues").click()
    expect(page.get_by_test_id("turn")).to_have_count(2)
    tab.shot("phone-chat")
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1, f"the page scrolls sideways on a phone by {overflow}px"
    page.get_by_test_id("nav-tasks").click()
    expect(page.get_by_test_id("task-row")).to_have_count(3)  # the two chats and the webhook's planning task
    expect(page.get_by_test_id("tasks-table")).to_contain_text("webhook: deploys")
    tab.shot("phone-tasks")
    tab.assert_clean()


@pytest.mark.e2e
@pytest.mark.browser
def test_a_socket_without_the_token_is_refused_and_offline_is_shown(tab: Tab) -> None:
    page = tab.signed_in("#/tasks")
    refused = page.evaluate(
        """(url) => new Promise((resolve) => {
            const ws = new WebSocket(url);
            ws.onopen = () => resolve("open");
            ws.onclose = () => resolve("closed");
        })""",
        f"{tab.machine.ws_url}?token=wrong",
    )
    assert refused == "closed"
    opened = page.evaluate(
        """(url) => new Promise((resolve) => {
            const ws = new WebSocket(url);
            ws.onopen = () => { ws.close(); resolve("open"); };
            ws.onclose = () => resolve("closed");
        })""",
        f"{tab.machine.ws_url}?token={tab.machine.api_token}",
    )
    assert opened == "open"

    # The machine goes away: the page says so, and keeps trying.
    tab.machine.stop()
    expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "offline")
    expect(page.get_by_test_id("offline-banner")).to_be_visible()
    tab.shot("offline")
    tab.assert_clean()


# ----------------------------------------------------------------------------------------------------------------
# The SPA's own checks (no browser, no machine): its JS unit tests, and the vendored libraries vs the lockfile.
def test_spa_unit_tests_pass_under_node() -> None:
    node = shutil.which("node")
    assert node is not None, "node is missing (the dashboard's unit tests run with node --test)"
    result = subprocess.run([node, "--test", "tests/"], cwd=SPA, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"^# pass [1-9]", result.stdout, re.MULTILINE), result.stdout[-2000:]


def test_vendored_libraries_are_the_locked_versions() -> None:
    lock = json.loads((SPA / "package-lock.json").read_text())
    vendored = json.loads((SPA / "vendor" / "VERSIONS.json").read_text())
    locked = {name: lock["packages"][f"node_modules/{name}"]["version"] for name in vendored}
    assert vendored == locked
    manifest = json.loads((SPA / "package.json").read_text())
    assert manifest["devDependencies"] == vendored  # pinned exactly
    assert f"marked v{vendored['marked']}" in (SPA / "vendor" / "marked.esm.js").read_text()[:400]
    assert f"DOMPurify {vendored['dompurify']}" in (SPA / "vendor" / "purify.es.mjs").read_text()[:400]
    # No CDN at run time: every script and stylesheet the page loads is one of ours.
    index = (SPA / "index.html").read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", index)
    for source in [SPA / "app.js", *sorted((SPA / "js").rglob("*.js"))]:
        for target in re.findall(r"from \"([^\"]+)\"", source.read_text()):
            assert target.startswith("."), f"{source.name} imports {target}"
            assert (source.parent / target).resolve().is_file(), f"{source.name} imports missing {target}"
