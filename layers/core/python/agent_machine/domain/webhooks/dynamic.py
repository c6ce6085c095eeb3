"""User-defined webhooks (`/webhooks/{name}`): generic JSON, HMAC secret, optional filter, target agent, template.

The agent is the one the webhook's definition names: nothing in the payload can choose it or its tools.
Each delivery gets a session of its own.
"""

from __future__ import annotations

from typing import Any

from agent_machine.domain.webhooks.decisions import CreateTask, Decision, Ignore
from agent_machine.domain.webhooks.filters import FilterError, compile_filter
from agent_machine.domain.webhooks.prompts import build_prompt
from agent_machine.domain.webhooks.templates import TemplateError, fill
from agent_machine.domain.webhooks.text import one_line
from agent_machine.models import WebhookSpec

# Names the built-in senders and the machine's own paths use: never a dynamic webhook's name.
RESERVED_NAMES = frozenset({"github", "jira", "sentry", "api", "health", "webhooks", "test"})


def decide(spec: WebhookSpec, payload: Any) -> Decision:
    if not spec.enabled:
        return Ignore(f"webhook '{spec.name}' is disabled")
    if spec.filter:
        try:
            matched = compile_filter(spec.filter).matches(payload)
        except FilterError as exc:  # defined before the filter rules tightened: never a 5xx
            return Ignore(f"the webhook's filter does not parse: {exc}")
        if not matched:
            return Ignore(f"filter did not match: {one_line(spec.filter, 200)}")
    try:
        filled = fill(spec.prompt_template, payload)
    except TemplateError as exc:
        return Ignore(f"the webhook's prompt template does not parse: {exc}")
    prompt = build_prompt(
        f"An event arrived on the webhook '{spec.name}'"
        + (f" ({one_line(spec.description, 200)})" if spec.description else "")
        + ". Your task, as configured for this webhook:\n\n"
        + filled.text,
        context=[("webhook", spec.name)],
        quoted=filled.quoted,
    )
    title = one_line(f"{spec.name}: {filled.text}", 80)
    return CreateTask(
        reason=f"webhook '{spec.name}' matched", agent=spec.agent, prompt=prompt, title=title, thread_title=title
    )
