"""Prompt templates of dynamic webhooks: `{payload.issue.title}`, `{payload.items[0].name}`, `{payload}`.

Filled by hand (never str.format, which would allow attribute access): a placeholder only walks dict keys and list
indexes of the parsed JSON. Each filled value is payload text, so it goes in as a quoted data block reference:
the template (written by the machine's admin) is the instruction; the values are data.
`{{` and `}}` stand for literal braces.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from agent_machine.domain.webhooks.filters import resolve
from agent_machine.domain.webhooks.prompts import Quoted

MAX_TEMPLATE_CHARS = 20_000
MAX_PLACEHOLDERS = 50
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_\-]*)|\[(\d+)\]|\['([^'\]]*)'\]")


class TemplateError(ValueError):
    pass


def _parse_path(expr: str) -> tuple[str | int, ...]:
    expr = expr.strip()
    if expr == "payload":
        return ()
    if not expr.startswith("payload"):
        raise TemplateError(f"placeholder {{{expr}}} must start with 'payload'")
    rest, steps, pos = expr[len("payload") :], [], 0
    while pos < len(rest):
        match = _STEP.match(rest, pos)
        if not match:
            raise TemplateError(f"placeholder {{{expr}}} is not a path like payload.a.b[0]")
        name, index, quoted = match.groups()
        steps.append(name if name is not None else int(index) if index is not None else quoted)
        pos = match.end()
    return tuple(steps)


def check_template(template: str) -> None:
    """TemplateError if the template cannot be filled (checked when the webhook is defined)."""
    if len(template) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"template is longer than {MAX_TEMPLATE_CHARS} characters")
    count = 0
    for match in _PLACEHOLDER.finditer(template):
        if match.group(1) is not None:
            _parse_path(match.group(1))
            count += 1
    if count > MAX_PLACEHOLDERS:
        raise TemplateError(f"template has more than {MAX_PLACEHOLDERS} placeholders")
    stray = _PLACEHOLDER.sub("", template)
    if "{" in stray or "}" in stray:
        raise TemplateError("unbalanced '{' or '}' (write {{ and }} for literal braces)")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=2, default=str)


@dataclass(frozen=True)
class Filled:
    text: str  # the template with each placeholder replaced by a reference to its data block
    quoted: list[Quoted]


def fill(template: str, payload: Any) -> Filled:
    """Placeholders become `[data: payload.x]` references; their values become quoted data blocks."""
    quoted: list[Quoted] = []
    seen: dict[str, str] = {}

    def replace(match: re.Match[str]) -> str:
        matched = match.group(0)
        if matched == "{{":
            return "{"
        if matched == "}}":
            return "}"
        expr = (match.group(1) or "").strip()
        if expr not in seen:
            value = resolve(payload, _parse_path(expr))
            field = re.sub(r"[^A-Za-z0-9_.\[\]-]", "_", expr)[:100]
            seen[expr] = field
            quoted.append(Quoted(field, _text(value), 50_000 if expr == "payload" else 20_000))
        return f"[data: {seen[expr]}]"

    return Filled(_PLACEHOLDER.sub(replace, template), quoted)
