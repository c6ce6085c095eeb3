"""The dynamic webhooks' filter language: a parser, not eval."""

from __future__ import annotations

from typing import Any

import pytest
from agent_machine.domain.webhooks.filters import FilterError, compile_filter

PAYLOAD: dict[str, Any] = {
    "action": "opened",
    "n": 3,
    "draft": False,
    "labels": [{"name": "bug"}, {"name": "ui"}],
    "title": "Crash on save",
    "tags": ["a", "b"],
    "odd key": {"x": 1},
    "none": None,
}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("$.action == 'opened'", True),
        ('$.action == "closed"', False),
        ("$.action != 'closed'", True),
        ("$.n > 2 && $.n <= 3", True),
        ("$.n >= 4 or $.draft == false", True),
        ("not $.draft", True),
        ("!($.n < 1)", True),
        ("$.labels[0].name == 'bug'", True),
        ("$.labels[-1].name == 'ui'", True),
        ("$.labels[5].name == 'bug'", False),
        ("$['odd key'].x == 1", True),
        ("$.title contains 'Crash'", True),
        ("$.tags contains 'b'", True),
        ("$.action in ['opened', 'reopened']", True),
        ("$.missing", False),
        ("$.missing == null", True),
        ("$.none == null", True),
        ("$.n == '3'", False),
        ("$.n > 'a'", False),
        ("$.draft == 0", False),
        ("$.action", True),
        ("$.n == 3.0", True),
        ("'Crash' in $.title", True),
        ("$.action == 'opened' and ($.n == 1 or $.labels[1].name == 'ui')", True),
    ],
)
def test_evaluates(expr: str, expected: bool) -> None:
    assert compile_filter(expr).matches(PAYLOAD) is expected


@pytest.mark.parametrize(
    "expr",
    [
        "",
        "$.a ==",
        "__import__('os')",
        "eval('1')",
        "$.a == 'x",
        "$..a",
        "$.a[",
        "$.a[x]",
        "($.a",
        "$.a == [1, $.b]",
        "$.a = 'x'",
        "$.a ; $.b",
        "(" * 40 + "$.a" + ")" * 40,
        "x" * 1001,
        "$.a == 'x' $.b",
    ],
)
def test_rejects(expr: str) -> None:
    with pytest.raises(FilterError):
        compile_filter(expr)


def test_non_dict_payloads() -> None:
    assert compile_filter("$[0] == 1").matches([1, 2])
    assert not compile_filter("$.a == 1").matches([1])
    assert not compile_filter("$.a.b == 1").matches({"a": "string"})
