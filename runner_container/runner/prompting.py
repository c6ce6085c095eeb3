"""What the CLI is told about its task beyond the prompt: the agent's instructions and the task's context (ids,
source, repository, issue links, the approved plan), appended to the system prompt.

Values from webhooks are untrusted: each one reaches the system prompt as one bounded line (`one_line`), so it
cannot start a heading or an instruction of its own.
"""

from __future__ import annotations

import re

from agent_machine.domain import agents as agent_registry
from agent_machine.models import AgentSpec, Task

from runner.results import clip

MAX_PLAN_IN_PROMPT = 60 * 1024  # one argv string may not exceed 128 KB (Linux MAX_ARG_STRLEN)
MAX_CONTEXT_VALUE_CHARS = 300
_LINE_BREAKING = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def one_line(value: object, max_chars: int = MAX_CONTEXT_VALUE_CHARS) -> str:
    """A value from a webhook as one bounded line of the system prompt: control characters and line breaks
    become spaces, so a crafted value cannot start a heading or an instruction of its own."""
    text = " ".join(_LINE_BREAKING.sub(" ", str(value)).split())
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def task_context(task: Task) -> str:
    lines = [
        "## This task on the agent machine",
        f"- task id: {task.task_id} (agent: {task.agent}, source: {task.source.value}"
        + (f" / {one_line(task.source_name)}" if task.source_name else "")
        + ")",
    ]
    if task.parent_task_id:
        lines.append(f"- delegated by task {task.parent_task_id} (depth {task.depth})")
    repo = task.repo
    if repo is not None:
        if repo.full_name:
            lines.append(
                f"- repository: {one_line(repo.full_name)}"
                + (f" at {one_line(repo.ref)}" if repo.ref else "")
                + (" (cloned into the current folder)" if repo.clone_url else "")
            )
        for label, value in (
            ("issue", repo.issue_number),
            ("pull request", repo.pr_number),
            ("issue URL", repo.issue_url),
            ("Jira issue", repo.jira_issue_key),
            ("Sentry issue", repo.sentry_url or repo.sentry_issue_id),
        ):
            if value:
                lines.append(f"- {label}: {one_line(value)}")
    text = "\n".join(lines)
    if task.plan and task.agent != agent_registry.PLANNING and task.plan.strip() not in task.prompt:
        text += "\n\n## The approved plan for this task\n\n" + (clip(task.plan, MAX_PLAN_IN_PROMPT) or "")
    return text


def system_prompt_addition(task: Task, agent: AgentSpec) -> str:
    parts = [agent.instructions.strip()] if agent.instructions.strip() else []
    parts.append(task_context(task))
    return "\n\n".join(parts)
