"""Trigger rules shared by the senders: the phrase, the label, the author allow-list, approve and stop."""

from __future__ import annotations

import re
from collections.abc import Iterable

from agent_machine.settings import Settings

_APPROVE_WORDS = r"(?:approve[ds]?|approval|lgtm|go ahead|ship it)"
_ONLY_APPROVE = re.compile(rf"^\s*/?{_APPROVE_WORDS}\s*[.!]*\s*$", re.IGNORECASE)
_STOP_WORDS = re.compile(r"^\W*(?:stop|cancel|abort)\b", re.IGNORECASE)


def mentions(text: str | None, phrase: str) -> bool:
    """The phrase as a word of its own ("@claude" matches "@claude," but not "@claudette" or "x@claude")."""
    if not text or not phrase:
        return False
    pattern = rf"(?<![\w@]){re.escape(phrase)}(?![\w-])"
    return re.search(pattern, text, re.IGNORECASE) is not None


def after_mention(text: str, phrase: str) -> str:
    """What follows the first mention (the command part of "@claude stop please")."""
    match = re.search(rf"(?<![\w@]){re.escape(phrase)}(?![\w-])", text, re.IGNORECASE)
    return text[match.end() :] if match else ""


def is_approval(text: str | None, phrase: str) -> bool:
    """ "@claude approve" (approve right after the mention), or a comment that is only "approve" / "LGTM"."""
    if not text:
        return False
    if _ONLY_APPROVE.match(text):
        return True
    if mentions(text, phrase):
        rest = after_mention(text, phrase)
        return re.match(rf"^\W*{_APPROVE_WORDS}\b", rest, re.IGNORECASE) is not None
    return False


def is_stop(text: str | None, phrase: str) -> bool:
    """ "@claude stop" (or cancel / abort) right after the mention."""
    if not text or not mentions(text, phrase):
        return False
    return _STOP_WORDS.match(after_mention(text, phrase)) is not None


def has_label(labels: Iterable[str | None], label: str) -> bool:
    wanted = label.strip().lower()
    return bool(wanted) and any((name or "").strip().lower() == wanted for name in labels)


def trusted_association(association: str | None, settings: Settings) -> bool:
    allowed = {a.strip().upper() for a in settings.allowed_author_associations}
    return (association or "NONE").strip().upper() in allowed
