"""Trigger rules: the phrase as a word, approve / stop commands, labels, the author allow-list."""

from __future__ import annotations

import pytest
from agent_machine.domain.webhooks.rules import has_label, is_approval, is_stop, mentions, trusted_association
from agent_machine.settings import Settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@claude fix it", True),
        ("hey @Claude, look", True),
        ("(@claude)", True),
        ("@claudette", False),
        ("mail x@claude.ai", False),
        ("@claude-bot", False),
        ("", False),
        (None, False),
        ("claude", False),
    ],
)
def test_mentions(text: str | None, expected: bool) -> None:
    assert mentions(text, "@claude") is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("approve", True),
        ("Approved!", True),
        ("/approve", True),
        ("LGTM", True),
        ("@claude approve", True),
        ("@claude, approved. go", True),
        ("@claude why not approve it?", False),
        ("I approve of cats", False),
        ("approve this and that", False),
        (None, False),
    ],
)
def test_approval(text: str | None, expected: bool) -> None:
    assert is_approval(text, "@claude") is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@claude stop", True),
        ("@claude: cancel please", True),
        ("@claude abort!", True),
        ("stop", False),
        ("@claude don't stop", False),
        ("@claude stopwatch", False),
    ],
)
def test_stop(text: str, expected: bool) -> None:
    assert is_stop(text, "@claude") is expected


def test_labels_and_trust() -> None:
    assert has_label(["Bug", " Claude "], "claude")
    assert not has_label([None, "claude-code"], "claude")
    assert not has_label(["x"], "")
    settings = Settings(allowed_author_associations="owner, member")
    assert trusted_association("OWNER", settings)
    assert trusted_association("member", settings)
    assert not trusted_association("COLLABORATOR", settings)
    assert not trusted_association(None, settings)
