"""Prompt templates of dynamic webhooks: placeholders walk JSON only; values become quoted data."""

from __future__ import annotations

import pytest
from agent_machine.domain.webhooks.templates import TemplateError, check_template, fill


def test_fill_references_and_quotes_values() -> None:
    filled = fill(
        "Fix {payload.issue.title} ({payload.items[1]}) {{literal}} {payload.missing}",
        {"issue": {"title": "Crash"}, "items": ["a", {"b": 1}]},
    )
    assert filled.text == (
        "Fix [data: payload.issue.title] ([data: payload.items[1]]) {literal} [data: payload.missing]"
    )
    values = {q.field: q.text for q in filled.quoted}
    assert values == {"payload.issue.title": "Crash", "payload.items[1]": '{\n  "b": 1\n}', "payload.missing": ""}


def test_whole_payload_and_dunder_keys_stay_in_the_json() -> None:
    filled = fill("{payload} {payload.__class__} {payload['a b']}", {"a b": 2})
    texts = [q.text for q in filled.quoted]
    assert texts[0] == '{\n  "a b": 2\n}'
    assert texts[1] == ""  # a dict key lookup, never an attribute
    assert texts[2] == "2"


@pytest.mark.parametrize(
    "template", ["{os.environ}", "{payload.a.}", "{", "}", "{payload[x]}", "{payload.a}" * 51, "x" * 20_001]
)
def test_check_rejects(template: str) -> None:
    with pytest.raises(TemplateError):
        check_template(template)


def test_check_accepts() -> None:
    check_template("A webhook event arrived:\n{payload}")
    check_template("{{json}} {payload.a[0]['b c'].d}")
