"""Payload text made safe to store and to quote: valid UTF-8, no control characters, bounded length.
Also Jira's two description formats (wiki markup, ADF JSON) turned into plain text."""

from __future__ import annotations

import json
import re
from typing import Any

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BLANK_RUNS = re.compile(r"\n{3,}")

MAX_FIELD_CHARS = 20_000
MAX_LINE_CHARS = 300


def clean_text(value: object, limit: int = MAX_FIELD_CHARS) -> str:
    """Any payload value as printable text: lone surrogates replaced, control characters dropped, truncated."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = text.encode("utf-8", errors="replace").decode("utf-8")  # lone surrogates -> '?'
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    if len(text) > limit:
        text = text[:limit] + f"\n[... {len(text) - limit} more characters truncated]"
    return text


def one_line(value: object, limit: int = MAX_LINE_CHARS) -> str:
    text = " ".join(clean_text(value, limit * 2).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- Jira wiki markup -------------------------------------------------------------------------------------------

_WIKI_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\{\{([^}\n]{1,500})\}\}"), r"`\1`"),
    (re.compile(r"\{(?:code|noformat)(?::[^}\n]*)?\}"), "\n```\n"),
    (re.compile(r"\{quote\}"), "\n"),
    (re.compile(r"\{color(?::[^}\n]*)?\}"), ""),
    (re.compile(r"\{panel(?::[^}\n]*)?\}"), "\n"),
    (re.compile(r"^h[1-6]\.\s*", re.MULTILINE), ""),
    (re.compile(r"^bq\.\s*", re.MULTILINE), "> "),
    (re.compile(r"\[~accountid:([^\]\n]{1,128})\]"), r"@\1"),
    (re.compile(r"\[~([^\]\n]{1,128})\]"), r"@\1"),
    (re.compile(r"\[([^|\]\n]{1,500})\|([^\]\n]{1,2000})\]"), r"\1 (\2)"),
    (re.compile(r"!([^!\s|]{1,500})(?:\|[^!\n]{0,200})?!"), r"[attachment: \1]"),
    (re.compile(r"\|\|"), "|"),
    (re.compile(r"(?<![\w*])\*([^*\n]{1,500})\*(?![\w*])"), r"\1"),
    (re.compile(r"(?<![\w_])_([^_\n]{1,500})_(?![\w_])"), r"\1"),
]


def wiki_to_text(markup: str) -> str:
    text = markup.replace("\r\n", "\n")
    for pattern, repl in _WIKI_RULES:
        text = pattern.sub(repl, text)
    return _BLANK_RUNS.sub("\n\n", text).strip()


# --- Atlassian Document Format ----------------------------------------------------------------------------------

_MAX_ADF_DEPTH = 64
_BLOCKS = {
    "paragraph",
    "heading",
    "blockquote",
    "codeBlock",
    "panel",
    "rule",
    "table",
    "tableRow",
    "mediaSingle",
    "mediaGroup",
    "expand",
    "nestedExpand",
    "decisionList",
    "taskList",
}


def adf_to_text(doc: Any) -> str:
    out: list[str] = []
    _adf(doc, out, 0, "")
    return _BLANK_RUNS.sub("\n\n", "".join(out)).strip()


def _adf(node: Any, out: list[str], depth: int, prefix: str) -> None:
    if depth > _MAX_ADF_DEPTH:
        out.append("[...]")
        return
    if isinstance(node, list):
        for child in node:
            _adf(child, out, depth + 1, prefix)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    raw_attrs, raw_content = node.get("attrs"), node.get("content")
    attrs: dict[str, Any] = raw_attrs if isinstance(raw_attrs, dict) else {}
    content: list[Any] = raw_content if isinstance(raw_content, list) else []
    if kind == "text":
        out.append(str(node.get("text") or ""))
        for mark in node.get("marks") or []:
            if isinstance(mark, dict) and mark.get("type") == "link":
                href = (mark.get("attrs") or {}).get("href")
                if href:
                    out.append(f" ({href})")
        return
    if kind == "hardBreak":
        out.append("\n" + prefix)
        return
    if kind == "mention":
        out.append(str(attrs.get("text") or "@" + str(attrs.get("id") or "someone")))
        return
    if kind == "emoji":
        out.append(str(attrs.get("text") or attrs.get("shortName") or ""))
        return
    if kind in ("inlineCard", "blockCard", "embedCard"):
        out.append(str(attrs.get("url") or ""))
        return
    if kind == "media":
        out.append("[attachment]")
        return
    if kind == "rule":
        out.append("\n---\n")
        return
    if kind == "codeBlock":
        out.append("\n```" + str(attrs.get("language") or "") + "\n")
        _adf(content, out, depth + 1, "")
        out.append("\n```\n")
        return
    if kind == "listItem":
        out.append(prefix + "- ")
        _adf(content, out, depth + 1, prefix + "  ")
        return
    if kind == "blockquote":
        for child in content:
            out.append(prefix + "> ")
            _adf(child, out, depth + 1, prefix + "> ")
        return
    if kind in ("tableCell", "tableHeader"):
        _adf(content, out, depth + 1, prefix)
        out.append(" | ")
        return
    _adf(content, out, depth + 1, prefix)
    if kind in _BLOCKS or kind in ("bulletList", "orderedList"):
        out.append("\n\n" if kind in ("paragraph", "heading") and not prefix else "\n")


def jira_text(value: Any) -> str:
    """A Jira description or comment body, whichever format it came in, as plain text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return wiki_to_text(value)
    if isinstance(value, dict) and (value.get("type") == "doc" or "content" in value):
        return adf_to_text(value)
    return clean_text(value)
