"""Checks on the payload values a task keeps as its context (RepoContext): the runner clones, fetches and reports
back with them, so each must look like what it claims to be. Invalid values are dropped (the reason is recorded
with the delivery), never passed on; the senders reject a delivery whose thread key itself is invalid.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from agent_machine.models import RepoContext

JIRA_KEY = re.compile(r"^[A-Z][A-Z0-9_]+-\d{1,18}$")
GITHUB_FULL_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")
_URL = re.compile(r"^https?://[^\s\x00-\x1f\x7f<>\"'`\\]{1,2000}$")
_REF = re.compile(r"^[A-Za-z0-9._/+@-]{1,255}$")
SENTRY_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

# Ints from payloads: DynamoDB numbers hold 38 digits, and nothing a sender numbers comes near 2**53.
MAX_PAYLOAD_INT = 2**53
PayloadInt = Annotated[int, Field(ge=-MAX_PAYLOAD_INT, le=MAX_PAYLOAD_INT)]


def is_jira_key(value: str | None) -> bool:
    return bool(value) and JIRA_KEY.fullmatch(value or "") is not None


def is_full_name(value: str | None) -> bool:
    return bool(value) and GITHUB_FULL_NAME.fullmatch(value or "") is not None and ".." not in (value or "")


def is_url(value: object) -> bool:
    return isinstance(value, str) and _URL.fullmatch(value) is not None


def is_ref(value: object) -> bool:
    """A git ref or sha: no whitespace or control characters, no option-looking or path-escaping shapes."""
    if not isinstance(value, str) or _REF.fullmatch(value) is None:
        return False
    return not value.startswith(("-", "/")) and ".." not in value and not value.endswith((".lock", "/"))


def url_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and is_url(value) else None


def _is_sentry_id(value: object) -> bool:
    return isinstance(value, str) and SENTRY_ID.fullmatch(value) is not None


_CHECKS: dict[str, Callable[[Any], bool]] = {
    "full_name": is_full_name,
    "clone_url": is_url,
    "ref": is_ref,
    "issue_url": is_url,
    "comment_url": is_url,
    "jira_issue_key": is_jira_key,
    "jira_base_url": is_url,
    "sentry_url": is_url,
    "sentry_issue_id": _is_sentry_id,
}


def checked(repo: RepoContext | None) -> tuple[RepoContext | None, list[str]]:
    """The context with every invalid field dropped, and the names of the dropped fields."""
    if repo is None:
        return None, []
    dropped = [name for name, ok in _CHECKS.items() if getattr(repo, name) is not None and not ok(getattr(repo, name))]
    for name in ("issue_number", "pr_number"):
        value = getattr(repo, name)
        if value is not None and not 0 < value <= MAX_PAYLOAD_INT:
            dropped.append(name)
    if not dropped:
        return repo, []
    return repo.model_copy(update=dict.fromkeys(dropped)), dropped
