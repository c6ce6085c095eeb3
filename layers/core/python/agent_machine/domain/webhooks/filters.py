"""The filter language of dynamic webhooks: a small JSONPath-style expression, parsed by hand (no eval).

    $.action == 'opened'
    $.issue.labels[0].name != "wontfix" && ($.sender.login == 'alice' || $.sender.login == 'bob')
    $.pull_request.draft == false and not $.comment.body contains '[skip]'
    $.alert.level in ['error', 'fatal']
    $.ref                                   (a bare path: present and truthy)

Paths: `$`, then `.name`, `['name']` or `[index]`. Literals: 'strings', "strings", numbers, true, false, null,
and lists of them. Operators: == != < <= > >= contains in, combined with && / and, || / or, ! / not, ( ).
A missing path is null. Comparing values of different types is false, never an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_FILTER_CHARS = 1000
MAX_DEPTH = 32


class FilterError(ValueError):
    """The filter does not parse. Raised when a webhook is defined, so a bad filter never reaches a delivery."""


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
      | (?P<op>==|!=|<=|>=|&&|\|\||[<>!()\[\],.$])
      | (?P<word>[A-Za-z_][A-Za-z0-9_\-]*)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Tok:
    kind: str  # str num op word end
    value: str


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match:
            raise FilterError(f"unexpected character at {pos}: {text[pos : pos + 10]!r}")
        kind = match.lastgroup or "op"
        out.append(_Tok(kind, match.group(kind)))
        pos = match.end()
    out.append(_Tok("end", ""))
    return out


def _unquote(raw: str) -> str:
    body = raw[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


# The parsed form: nested tuples, evaluated by `_eval`.
Node = tuple[Any, ...]


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self, value: str | None = None) -> _Tok:
        tok = self.toks[self.i]
        if value is not None and tok.value.lower() != value:
            raise FilterError(f"expected {value!r}, found {tok.value or 'end of filter'!r}")
        self.i += 1
        return tok

    def at(self, *values: str) -> bool:
        tok = self.peek()
        return tok.kind in ("op", "word") and tok.value.lower() in values

    def parse(self) -> Node:
        node = self.or_()
        if self.peek().kind != "end":
            raise FilterError(f"unexpected {self.peek().value!r}")
        return node

    def _nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FilterError("filter is nested too deeply")

    def or_(self) -> Node:
        node = self.and_()
        while self.at("||", "or"):
            self.take()
            node = ("or", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.at("&&", "and"):
            self.take()
            node = ("and", node, self.not_())
        return node

    def not_(self) -> Node:
        if self.at("!", "not"):
            self.take()
            self._nest()
            node = ("not", self.not_())
            self.depth -= 1
            return node
        return self.comparison()

    def comparison(self) -> Node:
        if self.at("("):
            self.take()
            self._nest()
            node = self.or_()
            self.depth -= 1
            self.take(")")
            return node
        left = self.operand()
        if self.at("==", "!=", "<", "<=", ">", ">=", "contains", "in"):
            op = self.take().value.lower()
            return ("cmp", op, left, self.operand())
        return ("truthy", left)

    def operand(self) -> Node:
        tok = self.peek()
        if tok.kind == "op" and tok.value == "$":
            return self.path()
        if tok.kind == "op" and tok.value == "[":
            self.take()
            items: list[Any] = []
            while not self.at("]"):
                item = self.operand()
                if item[0] != "lit":
                    raise FilterError("lists may only hold literals")
                items.append(item[1])
                if not self.at("]"):
                    self.take(",")
            self.take("]")
            return ("lit", items)
        self.take()
        if tok.kind == "str":
            return ("lit", _unquote(tok.value))
        if tok.kind == "num":
            number = float(tok.value)
            return ("lit", int(number) if number.is_integer() and "." not in tok.value else number)
        if tok.kind == "word" and tok.value in ("true", "false", "null"):
            return ("lit", {"true": True, "false": False, "null": None}[tok.value])
        raise FilterError(f"expected a $.path or a literal, found {tok.value or 'end of filter'!r}")

    def path(self) -> Node:
        self.take("$")
        steps: list[str | int] = []
        while self.at(".", "["):
            if self.take().value == ".":
                tok = self.take()
                if tok.kind != "word":
                    raise FilterError(f"expected a field name after '.', found {tok.value!r}")
                steps.append(tok.value)
            else:
                tok = self.take()
                if tok.kind == "str":
                    steps.append(_unquote(tok.value))
                elif tok.kind == "num" and re.fullmatch(r"-?\d+", tok.value):
                    steps.append(int(tok.value))
                else:
                    raise FilterError("expected ['name'] or [index]")
                self.take("]")
            if len(steps) > MAX_DEPTH:
                raise FilterError("path is too long")
        return ("path", tuple(steps))


@dataclass(frozen=True)
class Filter:
    source: str
    tree: Node

    def matches(self, payload: Any) -> bool:
        return bool(_eval(self.tree, payload))


def compile_filter(text: str) -> Filter:
    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(f"filter is longer than {MAX_FILTER_CHARS} characters")
    if not text.strip():
        raise FilterError("filter is empty")
    return Filter(text, _Parser(text).parse())


def resolve(payload: Any, steps: tuple[str | int, ...]) -> Any:
    value = payload
    for step in steps:
        in_list = isinstance(step, int) and isinstance(value, list) and -len(value) <= step < len(value)
        in_dict = isinstance(step, str) and isinstance(value, dict) and step in value
        if in_list or in_dict:
            value = value[step]
        else:
            return None
    return value


def _same_kind(a: Any, b: Any) -> bool:
    def kind(v: Any) -> str:
        if isinstance(v, bool):
            return "bool"
        if isinstance(v, int | float):
            return "num"
        return type(v).__name__

    return kind(a) == kind(b)


def _eval(node: Node, payload: Any) -> Any:
    tag = node[0]
    if tag == "lit":
        return node[1]
    if tag == "path":
        return resolve(payload, node[1])
    if tag == "truthy":
        return bool(_eval(node[1], payload))
    if tag == "not":
        return not _eval(node[1], payload)
    if tag == "and":
        return bool(_eval(node[1], payload)) and bool(_eval(node[2], payload))
    if tag == "or":
        return bool(_eval(node[1], payload)) or bool(_eval(node[2], payload))
    op, left, right = node[1], _eval(node[2], payload), _eval(node[3], payload)
    if op == "==":
        return _same_kind(left, right) and left == right
    if op == "!=":
        return not (_same_kind(left, right) and left == right)
    if op == "contains":
        if isinstance(left, str) and isinstance(right, str):
            return right in left
        return isinstance(left, list) and right in left
    if op == "in":
        if isinstance(right, list):
            return left in right
        return isinstance(right, str) and isinstance(left, str) and left in right
    if not _same_kind(left, right) or not isinstance(left, int | float | str) or isinstance(left, bool):
        return False
    return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]
