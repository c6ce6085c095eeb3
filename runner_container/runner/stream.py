"""The CLI's stdout, read safely and parsed into typed lines (../shared/claude-cli-protocol.md).

Reading: bytes come in chunks and are split on newlines here, so a line is never held beyond `MAX_LINE_BYTES` (the
rest of an over-long line is counted and dropped) and a stream without newlines cannot grow memory; the line's last
LINE_TAIL_BYTES are kept too, so an over-long result line (a huge `result` text) still gives its status, cost and
usage, which come after the text. Parsing: each JSON line becomes a model picked by its `type` (`system` and
`result` validated by pydantic; `assistant` and `user`, most of a run's output, light views of the few fields the
runner reads, checked for their types); unknown types, unknown fields and lines that do not validate are kept (as
`OtherLine`) and never end the run; the parsed object and its JSON text are kept whole for the line's event. Non-
JSON lines are text.

Redaction (agent_machine.redaction) happens here, on the line's bytes before anything parses them: whatever is
stored, pushed or booked from a line is built from the redacted bytes. A JSON line's `\\uXXXX` and `\\/` escapes are
undone first (the line means the same), so a secret cannot hide behind escapes the parser would have decoded.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from agent_machine.redaction import Redactor
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runner import config


class _Line(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    type: str
    session_id: str | None = None
    uuid: str | None = None


class SystemLine(_Line):
    """`system` lines: `init` (session id, tools, MCP servers, skills), `api_retry`, `status`, hooks, ..."""

    type: Literal["system"]
    subtype: str | None = None
    cwd: str | None = None
    model: str | None = None
    tools: list[str] = Field(default_factory=list)
    mcp_servers: list[dict[str, Any]] = Field(default_factory=list)
    skills: list[str] = Field(default_factory=list)
    agents: list[str] = Field(default_factory=list)
    permission_mode: str | None = Field(None, alias="permissionMode")
    claude_code_version: str | None = None


def _optional_str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _NotThisShape(key)


class _NotThisShape(ValueError):
    """An `assistant` / `user` object whose fields do not have the protocol's types (it becomes an OtherLine)."""


class MessageBody:
    """The `message` of an assistant or user line: a light view of the parsed object (no validation beyond the
    types read here: these lines are most of a run's output, and the runner reads only these fields)."""

    __slots__ = ("content", "id", "model", "role", "usage")

    def __init__(self, obj: object) -> None:
        if not isinstance(obj, dict):
            raise _NotThisShape("message")
        self.id = _optional_str(obj, "id")
        self.role = _optional_str(obj, "role")
        self.model = _optional_str(obj, "model")
        content = obj.get("content", [])
        if isinstance(content, list) and all(isinstance(b, dict) for b in content):
            self.content: list[dict[str, Any]] | str = content
        elif isinstance(content, str):
            self.content = content
        else:
            raise _NotThisShape("message.content")
        usage = obj.get("usage")
        if usage is not None and not isinstance(usage, dict):
            raise _NotThisShape("message.usage")
        self.usage: dict[str, Any] | None = usage

    def blocks(self) -> list[dict[str, Any]]:
        if isinstance(self.content, str):
            return [{"type": "text", "text": self.content}]
        return self.content


class _MessageLine:
    """`assistant` and `user` lines (the protocol's `message`, `parent_tool_use_id`), as light views."""

    __slots__ = ("message", "parent_tool_use_id", "session_id", "uuid")
    type: str

    def __init__(self, obj: dict[str, Any]) -> None:
        self.session_id = _optional_str(obj, "session_id")
        self.uuid = _optional_str(obj, "uuid")
        self.message = MessageBody(obj.get("message"))
        self.parent_tool_use_id = _optional_str(obj, "parent_tool_use_id")


class AssistantLine(_MessageLine):
    """One content block of a model response (lines of one response share `message.id`)."""

    __slots__ = ()
    type: Literal["assistant"] = "assistant"

    def texts(self) -> list[str]:
        return [str(b.get("text", "")) for b in self.message.blocks() if b.get("type") == "text"]

    def tool_uses(self) -> list[dict[str, Any]]:
        return [b for b in self.message.blocks() if b.get("type") == "tool_use"]


class UserLine(_MessageLine):
    """Tool results (and `[Request interrupted by user]` after SIGINT)."""

    __slots__ = ()
    type: Literal["user"] = "user"


class ResultUsage(BaseModel):
    model_config = ConfigDict(extra="allow")

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0


class ModelUsageEntry(BaseModel):
    """One model's cumulative usage in a result's `modelUsage` (the CLI's camelCase names)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    input_tokens: int = Field(0, alias="inputTokens")
    output_tokens: int = Field(0, alias="outputTokens")
    cache_read_input_tokens: int = Field(0, alias="cacheReadInputTokens")
    cache_creation_input_tokens: int = Field(0, alias="cacheCreationInputTokens")
    cost_usd: float = Field(0.0, alias="costUSD")


class ResultLine(_Line):
    """The run's end: `subtype` success / error_max_turns / error_max_budget_usd / error_during_execution / ...

    `total_cost_usd` and `modelUsage` are cumulative over a resumed session per the protocol notes, but this
    run's only in the real 2.1.197 (results.reports_cumulative tells them apart); `usage`, `num_turns` and
    `duration_ms` are this run's.
    """

    type: Literal["result"]
    subtype: str = ""
    is_error: bool = False
    duration_ms: int = 0
    duration_api_ms: int = 0
    num_turns: int = 0
    result: str | None = None
    stop_reason: str | None = None
    total_cost_usd: float | None = None
    usage: ResultUsage | None = None
    model_usage: dict[str, ModelUsageEntry] = Field(default_factory=dict, alias="modelUsage")
    errors: list[Any] = Field(default_factory=list)
    permission_denials: list[Any] = Field(default_factory=list)
    terminal_reason: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.subtype == "success" and not self.is_error

    def error_text(self) -> str:
        if self.errors:
            return "; ".join(str(e) for e in self.errors)
        return self.result or self.subtype or "error"


class OtherLine(_Line):
    """Any other JSON line (stream_event, rate_limit_event, tool_progress, a type of a newer CLI, ...)."""


StreamLine = SystemLine | AssistantLine | UserLine | ResultLine | OtherLine

_MODELS: dict[str, type[_Line]] = {"system": SystemLine, "result": ResultLine}
_VIEWS: dict[str, type[_MessageLine]] = {"assistant": AssistantLine, "user": UserLine}


@dataclass(frozen=True)
class RawLine:
    """A stdout line as read: at most MAX_LINE_BYTES of it, its real size and, when it was longer, its last
    LINE_TAIL_BYTES (where a result line's cost and usage are)."""

    data: bytes
    size: int
    tail: bytes = b""

    @property
    def truncated(self) -> bool:
        return self.size > len(self.data)


@dataclass(frozen=True)
class Parsed:
    """A parsed stdout line: JSON (`raw` + `obj` + `line`) or text (`text`).

    `json`: the JSON text `obj` was parsed from (the redacted line, stripped), when it is standard JSON (no NaN
    or Infinity): an event may carry it as is instead of encoding `obj` again. None for text lines and for
    result lines rebuilt from a cut line."""

    raw: RawLine
    obj: dict[str, Any] | None = None
    line: StreamLine | None = None
    text: str | None = None
    json: str | None = None

    @property
    def kind(self) -> str:
        """The event kind: the JSON line's `type`, or "text"."""
        return self.line.type if self.line is not None else "text"


def parse_json_object(obj: dict[str, Any]) -> StreamLine:
    """The typed model of one stream-json object; anything unexpected becomes an OtherLine (nothing is lost)."""
    kind = obj.get("type")
    if not isinstance(kind, str):
        kind = "unknown"
    view = _VIEWS.get(kind)
    if view is not None:
        try:
            return view(obj)  # type: ignore[return-value]
        except _NotThisShape:
            pass
    model = _MODELS.get(kind)
    if model is not None:
        try:
            return model.model_validate(obj)  # type: ignore[return-value]
        except ValidationError:
            pass
    try:
        return OtherLine.model_validate({**obj, "type": kind})
    except ValidationError:  # e.g. a session_id that is not a string: the object itself is kept by the caller
        return OtherLine(type=kind)


RESULT_LINE_START = b'{"type":"result"'
# Fields a result line prints before its `result` text (the tail has the others).
_HEAD_FIELDS = re.compile(rb'"(subtype|is_error|duration_ms|duration_api_ms|num_turns)":("[a-z_]*"|true|false|\d+)')
_MAX_TAIL_ATTEMPTS = 2000


def _tail_fields(tail: bytes) -> dict[str, Any]:
    """The fields after an over-long string value: the first `,"` after which the rest parses as an object's
    members. (A quote inside a JSON string is escaped, so the first candidate that parses is the string's end.)"""
    start = 0
    for _ in range(_MAX_TAIL_ATTEMPTS):
        found = tail.find(b',"', start)
        if found < 0:
            return {}
        try:
            obj = json.loads(b"{" + tail[found + 1 :])
        except ValueError:
            start = found + 1
            continue
        return obj if isinstance(obj, dict) else {}
    return {}


def _cut_json_string(encoded: bytes) -> str:
    """The text of a JSON string value cut off mid-way (a character or an escape may be cut in half)."""
    text = encoded.decode("utf-8", errors="ignore")
    for cut in range(7):  # the longest escape, \uXXXX, is 6 characters
        try:
            value = json.loads('"' + text[: len(text) - cut] + '"')
        except ValueError:
            continue
        return str(value)
    return text


def recover_result(raw: RawLine) -> dict[str, Any] | None:
    """A result line cut at MAX_LINE_BYTES (its `result` text was huge): the status, cost and usage from its
    head and tail, with the text it had up to the cut. None if it is not a result line or nothing is found."""
    if not raw.truncated or not raw.data.lstrip().startswith(RESULT_LINE_START):
        return None
    tail = _tail_fields(raw.tail)
    if "total_cost_usd" not in tail and "usage" not in tail and "session_id" not in tail:
        return None
    head = raw.data[: raw.data.find(b'"result":') if b'"result":' in raw.data else 1024]
    obj: dict[str, Any] = {m.group(1).decode(): json.loads(m.group(2)) for m in _HEAD_FIELDS.finditer(head)}
    obj.update(tail)
    obj["type"] = "result"
    text_start = raw.data.find(b'"result":"')
    if text_start >= 0 and "result" not in tail:
        text = _cut_json_string(raw.data[text_start + len(b'"result":"') :])
        obj["result"] = text + f"\n… [truncated: the result line was {raw.size} bytes]"
    return obj


# A `\uXXXX` or `\/` escape that is not itself escaped (preceded by an even number of backslashes).
_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\(?:u([0-9a-fA-F]{4})|/)")
_KEEP_ESCAPED = {0x22: b'\\"', 0x5C: b"\\\\"}


def _unescape(match: re.Match[bytes]) -> bytes:
    backslashes, code = match.group(1), match.group(2)
    if code is None:
        return backslashes + b"/"
    point = int(code, 16)
    if point < 0x20 or 0xD800 <= point <= 0xDFFF:
        return match.group(0)  # a control character must stay escaped; a surrogate half is not a character
    return backslashes + _KEEP_ESCAPED.get(point, chr(point).encode())


def unescape_json(data: bytes) -> bytes:
    """A JSON text with its optional escapes written out (`\\u0041` -> `A`, `\\/` -> `/`; `\\u0022` -> `\\"`): the same
    JSON value, in the one spelling the redactor looks for."""
    if b"\\" not in data or (b"\\u" not in data and b"\\/" not in data):  # the first test is one memchr
        return data
    return _ESCAPE.sub(_unescape, data)


def redact_raw(raw: RawLine, redactor: Redactor) -> RawLine:
    """The line with every known secret replaced; its size changes by what the replacements changed."""
    data, tail = raw.data, raw.tail
    if data[:1] == b"{" or data.lstrip()[:1] == b"{":
        data = unescape_json(data)
        tail = unescape_json(tail) if tail else tail
    data = redactor.binary(data, cut=raw.truncated)
    tail = redactor.binary(tail) if tail else tail
    if data is raw.data and tail is raw.tail:
        return raw
    return RawLine(data, raw.size + len(data) - len(raw.data) + len(tail) - len(raw.tail), tail)


class _NonStandardJson(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NonStandardJson(name)


# Python's json reads NaN and Infinity, which are not JSON: a line holding them is not passed on verbatim.
_STANDARD_JSON = json.JSONDecoder(parse_constant=_refuse_constant)


def _load_object(stripped: bytes) -> tuple[Any, str | None]:
    """The line's value and its text when that is standard JSON (else None). Raises ValueError if not JSON
    (invalid UTF-8 included)."""
    text = stripped.decode()
    try:
        return _STANDARD_JSON.decode(text), text
    except _NonStandardJson:
        return json.loads(text), None


def parse_line(raw: RawLine, redactor: Redactor | None = None) -> Parsed:
    """`redactor`: the line is redacted first (the Parsed's `raw`, `obj` and `json` come from the redacted line)."""
    if redactor is not None:
        raw = redact_raw(raw, redactor)
    recovered = recover_result(raw)
    if recovered is not None:
        return Parsed(raw, obj=recovered, line=parse_json_object(recovered))
    if not raw.truncated:
        stripped = raw.data.strip()
        if stripped.startswith(b"{"):
            try:
                obj, text = _load_object(stripped)
            except ValueError:
                obj, text = None, None
            if isinstance(obj, dict):
                return Parsed(raw, obj=obj, line=parse_json_object(obj), json=text)
    return Parsed(raw, text=raw.data.decode("utf-8", errors="replace").rstrip("\r"))


# While a burst keeps the pipe full, reading never has to wait for data, so the loop would run nothing else
# until the whole buffer is parsed (~10 ms on a busy machine): the push stage's wake-ups and its threads'
# completions would wait that long at each step. The reader lets the loop turn at least this often.
READER_SLICE_SECONDS = 0.001


async def read_lines(
    stream: asyncio.StreamReader, *, max_line: int | None = None, chunk_size: int | None = None
) -> AsyncIterator[RawLine]:
    """Lines of a stream (without the newline), each cut at `max_line` bytes; the last one even without a newline.
    The caller's work on each line counts towards READER_SLICE_SECONDS."""
    limit = max_line or config.MAX_LINE_BYTES
    size_hint = chunk_size or config.READ_CHUNK_BYTES
    tail_limit = config.LINE_TAIL_BYTES
    buf = bytearray()
    tail = bytearray()  # the last bytes of an over-long line, beyond `buf`
    size = 0  # the current line's real size, dropped bytes included
    turn = time.monotonic()
    while True:
        chunk = await stream.read(size_hint)
        if not chunk:
            break
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            end = len(chunk) if newline < 0 else newline
            room = limit - len(buf)
            kept = min(end, start + max(room, 0))
            if room > 0:
                buf += chunk[start:kept]
            if kept < end:
                tail += chunk[max(kept, end - tail_limit) : end]
                if len(tail) > tail_limit:
                    del tail[: len(tail) - tail_limit]
            size += end - start
            if newline < 0:
                break
            yield RawLine(bytes(buf), size, bytes(tail))
            buf.clear()
            tail.clear()
            size = 0
            start = newline + 1
            if time.monotonic() - turn > READER_SLICE_SECONDS:
                await asyncio.sleep(0)
                turn = time.monotonic()
    if size:
        yield RawLine(bytes(buf), size, bytes(tail))
