"""The report-back text: GitHub Markdown, Jira wiki markup, Sentry Markdown. Pure functions of the task.

Plans, results and errors are the CLI's output, which can echo webhook text: they are untrusted. They must not
ping anyone (an @mention would notify people, and the trigger phrase could make the bot act on its own comment),
must not break out of the section they are put in (a stray `</details>`, an HTML comment or an unclosed code
fence would swallow or hide what follows), and must fit the target's size limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from agent_machine.domain.agents import PLANNING
from agent_machine.models import NAME_PATTERN, Task, TaskStatus

ZWJ = "\u200d"  # zero-width joiner: invisible, but "@\u200dname" is no longer a mention

GITHUB_MAX_CHARS = 65_536  # GitHub rejects longer comment bodies
GITHUB_BUDGET = 60_000  # headroom for what neutralising adds
JIRA_BUDGET = 30_000  # Jira's default comment limit is 32,767
SENTRY_BUDGET = 8_000  # a note, not a document: the dashboard has the rest
COLLAPSE_CHARS = 1_500
COLLAPSE_LINES = 25
TRUNCATED = "[… truncated: the full text is on the dashboard]"

MARKER_PREFIX = "agent-machine:task:"

_MENTION = re.compile(r"(?<![A-Za-z0-9_])@(?=[A-Za-z0-9_])")
_JIRA_MENTION = re.compile(r"\[(?=~)")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
_SAFE_URL = re.compile(r"^https?://[^\s<>()\[\]{}|\"'`\\]{1,500}$")
_NOFORMAT = re.compile(r"\{(?=noformat\})", re.IGNORECASE)
_BRANCH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./-]{0,199}$")  # what the runner pushes (runner/publish.py)


@dataclass(frozen=True)
class Look:
    emoji: str
    headline: str


LOOKS: dict[TaskStatus, Look] = {
    TaskStatus.QUEUED: Look("⏳", "Queued"),
    TaskStatus.RUNNING: Look("🤖", "Working on it…"),
    TaskStatus.COMPLETED: Look("✅", "Done"),
    TaskStatus.FAILED: Look("❌", "Failed"),
    TaskStatus.STOPPED: Look("⏹️", "Stopped"),
    TaskStatus.TIMED_OUT: Look("⌛", "Timed out"),
}
PLAN_READY = Look("📋", "Plan ready for review")


@dataclass(frozen=True)
class Where:
    """What the target can do with an approval: GitHub issues and Jira tickets take an approve comment."""

    noun: str  # "issue", "pull request", "ticket", "Sentry issue"
    comment_approves: bool


@dataclass(frozen=True)
class View:
    """The task as the reports show it, with nothing target-specific yet."""

    task_id: str
    agent: str
    status: TaskStatus
    look: Look
    attempt: int
    duration: str | None
    cost: str | None
    dashboard: str | None
    pr_url: str | None
    plan: str | None
    result: str | None
    error: str | None
    trigger: str
    # The branch the runner pushed, and why something was not pushed (the latter may quote the agent's text).
    branch: str | None = None
    publish_error: str | None = None
    # Tasks it delegated (agent, task id, status): their own report-back is skipped, so the parent's one
    # comment names them. Agent names and statuses are checked names, ids are ours: no untrusted text.
    children: tuple[tuple[str, str, str], ...] = ()

    @property
    def marker(self) -> str:
        return MARKER_PREFIX + self.task_id


def format_duration(ms: int) -> str:
    seconds = max(0, ms) // 1000
    if ms < 1000:
        return f"{max(0, ms)}ms"
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def safe_url(url: str | None) -> str | None:
    """A URL we put into a link: http(s), no characters that could end the link or the markup around it."""
    return url if url and _SAFE_URL.fullmatch(url) else None


def dashboard_link(dashboard_url: str | None, task_id: str) -> str | None:
    if not dashboard_url:
        return None
    return safe_url(f"{dashboard_url.rstrip('/')}/#/tasks/{task_id}")


def view(
    task: Task,
    report: dict[str, str],
    *,
    dashboard_url: str | None,
    trigger: str,
    children: list[Task] | None = None,
) -> View:
    terminal = task.status.terminal
    planned = task.status == TaskStatus.COMPLETED and task.agent == PLANNING and bool(task.plan)
    look = PLAN_READY if planned else LOOKS.get(task.status, Look("•", task.status.value))
    failed = terminal and task.status != TaskStatus.COMPLETED
    return View(
        task_id=task.task_id,
        agent=task.agent if NAME_PATTERN.fullmatch(task.agent) else "agent",  # it goes into markup unescaped
        status=task.status,
        look=look,
        attempt=task.attempt,
        duration=format_duration(task.duration_ms) if terminal and task.duration_ms else None,
        cost=f"${task.cost_usd:.4f}" if terminal else None,
        dashboard=dashboard_link(dashboard_url, task.task_id),
        pr_url=safe_url(report.get("pr_url")),
        plan=task.plan if planned else None,
        # A planning task's result usually restates its plan: show the plan alone.
        result=task.result if task.status == TaskStatus.COMPLETED and not planned else None,
        error=(task.error or task.status.value.replace("_", " ")) if failed else None,
        trigger=trigger,
        branch=branch if (branch := report.get("branch")) and _BRANCH.fullmatch(branch) else None,
        publish_error=report.get("publish_error") or None,
        children=tuple(
            (c.agent if NAME_PATTERN.fullmatch(c.agent) else "agent", c.task_id, c.status.value.replace("_", " "))
            for c in children or []
        ),
    )


# --- neutralising untrusted text ----------------------------------------------------------------------------------


def neutralise_mentions(text: str, trigger: str) -> str:
    """@name -> @\u200dname everywhere (code too: harmless there), and the trigger phrase whatever it is."""
    text = _MENTION.sub("@" + ZWJ, text)
    if len(trigger) > 1 and not trigger.startswith("@"):
        text = re.sub(
            re.escape(trigger[0]) + f"(?={re.escape(trigger[1:])})", trigger[0] + ZWJ, text, flags=re.IGNORECASE
        )
    return text


def _escape_html_outside_code_spans(line: str) -> str:
    out: list[str] = []
    pos = 0
    for match in _CODE_SPAN.finditer(line):
        out.append(_TAG_START.sub("&lt;", line[pos : match.start()]))
        out.append(match.group(0))
        pos = match.end()
    out.append(_TAG_START.sub("&lt;", line[pos:]))
    return "".join(out)


def neutralise_markdown(text: str, trigger: str) -> str:
    """Untrusted Markdown made inert: no mentions, no raw HTML (tags, comments, <details>) outside code, and
    every code fence closed, so nothing after it in our comment is swallowed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    out: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        match = _FENCE.match(line)
        if fence is not None:
            if (
                match
                and match.group(1)[0] == fence[0]
                and len(match.group(1)) >= len(fence)
                and not match.group(2).strip()
            ):
                fence = None
            out.append(line)
        elif match and not (match.group(1)[0] == "`" and "`" in match.group(2)):
            fence = match.group(1)
            out.append(line)
        else:
            out.append(_escape_html_outside_code_spans(line))
    if fence is not None:
        out.append(fence)
    return neutralise_mentions("\n".join(out), trigger)


def fence_for(text: str) -> str:
    """A backtick fence longer than any run of backticks in the text: the text cannot close it."""
    longest = max((len(m.group(0)) for m in re.finditer(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    newline = cut.rfind("\n")
    if newline > limit * 0.8:
        cut = cut[:newline]
    return cut.rstrip() + "\n\n" + TRUNCATED


def bounded(text: str, limit: int, make_safe: Callable[[str], str]) -> str:
    """make_safe(text) cut so the result fits `limit` (neutralising can lengthen text: cut, check, repeat)."""
    budget = limit
    for _ in range(6):
        safe = make_safe(_cut(text, budget))
        if len(safe) <= limit:
            return safe
        budget -= (len(safe) - limit) + 64
        if budget <= 0:
            break
    return TRUNCATED


def is_long(text: str) -> bool:
    return len(text) > COLLAPSE_CHARS or text.count("\n") >= COLLAPSE_LINES


# --- GitHub ---------------------------------------------------------------------------------------------------------


def _github_status_line(v: View, *, opening: bool) -> str:
    look = LOOKS[TaskStatus.RUNNING] if opening else v.look
    parts = [f"{look.emoji} **{look.headline}**", f"agent `{v.agent}`"]
    if opening:
        return " · ".join(parts)
    if v.attempt > 1 and not v.status.terminal:
        parts.append(f"attempt {v.attempt}")
    parts += [f"⏱️ {v.duration}"] if v.duration else []
    parts += [f"💰 {v.cost}"] if v.cost else []
    return " · ".join(parts)


def github_body(v: View, where: Where, *, opening: bool = False) -> str:
    """The sticky comment. `opening` is the body a comment is created with: never any untrusted text or the
    trigger phrase, because the ingress acts on new comments (never on edits)."""
    head = [f"<!-- {v.marker} -->", _github_status_line(v, opening=opening)]
    head.append(f"[Task `{v.task_id[:8]}` on the dashboard]({v.dashboard})" if v.dashboard else f"Task `{v.task_id}`")
    sections: list[str] = []
    if not opening:
        sections = _github_sections(v, where, fixed=len("\n".join(head)))
    body = "\n".join(head) + "\n" + "".join(f"\n{s}\n" for s in sections if s)
    return body if len(body) <= GITHUB_MAX_CHARS else body[: GITHUB_MAX_CHARS - len(TRUNCATED) - 1] + "\n" + TRUNCATED


def _github_sections(v: View, where: Where, *, fixed: int) -> list[str]:
    sections: list[str] = []
    if v.pr_url:
        sections.append(f"**Pull request:** {v.pr_url}" + (f" (branch `{v.branch}`)" if v.branch else ""))
    elif v.branch:
        sections.append(f"**Branch:** `{v.branch}`")
    if v.publish_error:
        note = bounded(v.publish_error, 1_000, lambda t: neutralise_mentions(t, v.trigger))
        fence = fence_for(note)
        sections.append(f"**Not pushed:**\n{fence}text\n{note}\n{fence}")
    hint = ""
    if v.plan is not None:
        if where.comment_approves:
            hint = f"**To approve:** comment `{v.trigger} approve` to start the executor with this plan" + (
                " (or use Approve on the dashboard)." if v.dashboard else "."
            )
        else:
            hint = "**To approve:** use Approve on the task in the dashboard to start the executor with this plan."
    budget = GITHUB_BUDGET - fixed - sum(len(s) for s in sections) - len(hint) - 400
    if v.plan is not None:
        sections.append(_github_section("Plan", "PLAN.md", v.plan, budget, v.trigger))
        sections.append(hint)
    elif v.result:
        sections.append(_github_section("Result", "Result", v.result, budget, v.trigger))
    if v.error:
        error = bounded(v.error, 4_000, lambda t: neutralise_mentions(t, v.trigger))
        fence = fence_for(error)
        sections.append(f"**Error:**\n{fence}text\n{error}\n{fence}")
    if v.children:
        sections.append(_github_children(v))
    return sections


def _github_children(v: View) -> str:
    lines = ["**Delegated tasks:**"]
    base = v.dashboard.rsplit("/#/tasks/", 1)[0] if v.dashboard else None
    for agent, task_id, status in v.children:
        link = dashboard_link(base, task_id) if base else None
        name = f"[`{task_id[:8]}`]({link})" if link else f"`{task_id}`"
        lines.append(f"- `{agent}` task {name}: {status}")
    return "\n".join(lines)


def _github_section(title: str, summary: str, text: str, budget: int, trigger: str) -> str:
    safe = bounded(text.strip(), max(1_000, budget), lambda t: neutralise_markdown(t, trigger))
    if not is_long(text):
        return f"#### {title}\n\n{safe}"
    lines = text.count("\n") + 1
    # The blank lines around the text make GitHub render it as Markdown inside the <details>.
    return (
        f"#### {title}\n\n<details><summary>{summary} ({lines} lines) — click to expand</summary>\n\n"
        f"{safe}\n\n</details>"
    )


# --- Jira (REST v2 wiki markup) ------------------------------------------------------------------------------------


def neutralise_jira(text: str, trigger: str) -> str:
    """Untrusted text for a {noformat} block: it cannot end the block, and holds no mention of any kind."""
    text = _NOFORMAT.sub("{" + ZWJ, text)
    text = _JIRA_MENTION.sub("[" + ZWJ, text)
    return neutralise_mentions(text, trigger)


def jira_body(v: View, where: Where, *, opening: bool = False) -> str:
    look = LOOKS[TaskStatus.RUNNING] if opening else v.look
    parts = [f"{look.emoji} *{look.headline}*", f"agent {{{{{v.agent}}}}}"]
    if not opening:
        parts += [f"⏱️ {v.duration}"] if v.duration else []
        parts += [f"💰 {v.cost}"] if v.cost else []
    link = f"[Task {v.task_id[:8]} on the dashboard|{v.dashboard}]" if v.dashboard else f"Task {v.task_id}"
    blocks = [" · ".join(parts) + "\n" + link]
    if not opening:
        blocks += _jira_sections(v, where, fixed=len(blocks[0]))
    blocks.append(f"{{color:#97a0af}}{v.marker}{{color}}")
    return "\n\n".join(blocks)


def _jira_sections(v: View, where: Where, *, fixed: int) -> list[str]:
    blocks: list[str] = []
    if v.pr_url:
        blocks.append(f"*Pull request:* [{v.pr_url}|{v.pr_url}]")
    if v.branch:
        blocks.append(f"*Branch:* {{{{{v.branch}}}}}")
    if v.publish_error:
        note = bounded(v.publish_error, 1_000, lambda t: neutralise_jira(t, v.trigger))
        blocks.append(f"*Not pushed:*\n{{noformat}}\n{note}\n{{noformat}}")
    text, title = (v.plan, "Plan") if v.plan is not None else (v.result, "Result")
    if text:
        budget = JIRA_BUDGET - fixed - sum(len(b) for b in blocks) - 600
        safe = bounded(text.strip(), max(1_000, budget), lambda t: neutralise_jira(t, v.trigger))
        blocks.append(f"h4. {title}\n{{noformat}}\n{safe}\n{{noformat}}")
    if v.plan is not None:
        if where.comment_approves:
            blocks.append(f"*To approve:* comment {{{{{v.trigger} approve}}}} to start the executor with this plan.")
        else:
            blocks.append("*To approve:* use Approve on the task in the dashboard.")
    if v.error:
        error = bounded(v.error, 4_000, lambda t: neutralise_jira(t, v.trigger))
        blocks.append(f"*Error:*\n{{noformat}}\n{error}\n{{noformat}}")
    return blocks


# --- Sentry (a note on the issue; Markdown) -----------------------------------------------------------------------


def sentry_body(v: View, where: Where, *, opening: bool = False) -> str:
    look = LOOKS[TaskStatus.RUNNING] if opening else v.look
    parts = [f"{look.emoji} **{look.headline}**", f"agent `{v.agent}`"]
    if not opening:
        parts += [f"⏱️ {v.duration}"] if v.duration else []
        parts += [f"💰 {v.cost}"] if v.cost else []
    blocks = [" · ".join(parts), f"Task on the dashboard: {v.dashboard}" if v.dashboard else f"Task {v.task_id}"]
    if not opening:
        if v.pr_url:
            blocks.append(f"Pull request: {v.pr_url}")
        if v.branch:
            blocks.append(f"Branch: `{v.branch}`")
        if v.publish_error:
            note = bounded(v.publish_error, 1_000, lambda t: neutralise_mentions(t, v.trigger))
            fence = fence_for(note)
            blocks.append(f"Not pushed:\n{fence}\n{note}\n{fence}")
        text, title = (v.plan, "Plan") if v.plan is not None else (v.result, "Result")
        if text:
            safe = bounded(text.strip(), SENTRY_BUDGET, lambda t: neutralise_mentions(t, v.trigger))
            fence = fence_for(safe)
            blocks.append(f"{title}:\n{fence}\n{safe}\n{fence}")
        if v.plan is not None:
            blocks.append("To approve: use Approve on the task in the dashboard.")
        if v.error:
            error = bounded(v.error, 2_000, lambda t: neutralise_mentions(t, v.trigger))
            fence = fence_for(error)
            blocks.append(f"Error:\n{fence}\n{error}\n{fence}")
    blocks.append(v.marker)
    return "\n\n".join(blocks)
