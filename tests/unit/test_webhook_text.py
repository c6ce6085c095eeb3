"""Payload text made safe, and Jira wiki / ADF to plain text."""

from __future__ import annotations

from agent_machine.domain.webhooks.text import adf_to_text, clean_text, jira_text, one_line, wiki_to_text


def test_clean_text() -> None:
    assert clean_text(None) == ""
    assert clean_text("a\x00b\x07c\r\nd\te") == "abc\nd\te"
    assert clean_text("lone \ud800 surrogate") == "lone ? surrogate"
    assert clean_text({"k": [1]}) == '{"k": [1]}'
    assert clean_text("x" * 50, 10).startswith("x" * 10 + "\n[... 40 more characters")


def test_one_line() -> None:
    assert one_line("a\n\n b\tc") == "a b c"
    assert one_line("y" * 500, 10) == "y" * 9 + "…"


def test_wiki() -> None:
    text = wiki_to_text(
        "h1. Title\n*bold* and _it_ with {{code}} [Docs|https://x.y] [~bob] !shot.png|thumb!\n"
        "bq. quoted\n{noformat}raw{noformat}\n||h||h||\n{color:red}red{color}"
    )
    assert text.splitlines()[0] == "Title"
    assert "bold and it with `code` Docs (https://x.y) @bob [attachment: shot.png]" in text
    assert "> quoted" in text and "raw" in text and "|h|h|" in text and "red" in text and "{color" not in text


def test_adf() -> None:
    doc = {
        "type": "doc",
        "content": [
            {"type": "heading", "attrs": {"level": 2}, "content": [{"type": "text", "text": "Bug"}]},
            {
                "type": "paragraph",
                "content": [
                    {"type": "text", "text": "see", "marks": [{"type": "link", "attrs": {"href": "https://l"}}]},
                    {"type": "hardBreak"},
                    {"type": "emoji", "attrs": {"shortName": ":x:"}},
                    {"type": "inlineCard", "attrs": {"url": "https://card"}},
                ],
            },
            {"type": "codeBlock", "attrs": {"language": "py"}, "content": [{"type": "text", "text": "x = 1"}]},
            {"type": "blockquote", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "q"}]}]},
            {
                "type": "orderedList",
                "content": [
                    {
                        "type": "listItem",
                        "content": [{"type": "paragraph", "content": [{"type": "text", "text": "item"}]}],
                    }
                ],
            },
            {"type": "mediaSingle", "content": [{"type": "media", "attrs": {}}]},
            {"type": "rule"},
            "garbage",
            {"type": "unknown", "content": [{"type": "text", "text": "kept"}]},
        ],
    }
    text = adf_to_text(doc)
    for piece in (
        "Bug",
        "see (https://l)",
        ":x:https://card",
        "```py\nx = 1\n```",
        "> q",
        "- item",
        "[attachment]",
        "---",
        "kept",
    ):
        assert piece in text, piece


def test_adf_depth_is_bounded() -> None:
    node: dict[str, object] = {"type": "text", "text": "deep"}
    for _ in range(500):
        node = {"type": "paragraph", "content": [node]}
    assert "[...]" in adf_to_text(node)


def test_jira_text_dispatch() -> None:
    assert jira_text(None) == ""
    assert jira_text("*x*") == "x"
    assert (
        jira_text({"type": "doc", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "y"}]}]})
        == "y"
    )
    assert jira_text(5) == "5"
