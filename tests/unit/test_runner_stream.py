"""Reading and parsing the CLI's stdout: bounded lines, typed models, nothing lost, nothing fatal."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from agent_machine.redaction import Redactor
from runner.orchestrator import run_coroutine
from runner.stream import (
    READER_SLICE_SECONDS,
    AssistantLine,
    OtherLine,
    RawLine,
    ResultLine,
    SystemLine,
    UserLine,
    parse_line,
    read_lines,
)

INIT = {
    "type": "system",
    "subtype": "init",
    "cwd": "/w",
    "session_id": "s1",
    "tools": ["Bash"],
    "mcp_servers": [{"name": "machine", "status": "connected"}],
    "model": "claude-sonnet-4-5",
    "permissionMode": "dontAsk",
    "future_field": {"x": 1},
}
RESULT = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "duration_ms": 174,
    "num_turns": 2,
    "result": "All done.",
    "session_id": "s1",
    "total_cost_usd": 0.00846,
    "usage": {
        "input_tokens": 2400,
        "output_tokens": 84,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
        "server_tool_use": {"web_search_requests": 0},
    },
    "modelUsage": {
        "claude-sonnet-4-5": {
            "inputTokens": 2400,
            "outputTokens": 84,
            "cacheReadInputTokens": 0,
            "cacheCreationInputTokens": 0,
            "costUSD": 0.00846,
        }
    },
    "permission_denials": [],
    "terminal_reason": "completed",
}


def raw(obj: object) -> RawLine:
    data = (obj if isinstance(obj, str) else json.dumps(obj)).encode()
    return RawLine(data, len(data))


def test_known_lines_become_typed_models() -> None:
    init = parse_line(raw(INIT)).line
    assert isinstance(init, SystemLine) and init.subtype == "init" and init.permission_mode == "dontAsk"
    assert init.mcp_servers[0]["status"] == "connected"
    assert init.model_extra == {"future_field": {"x": 1}}  # unknown fields are kept
    result = parse_line(raw(RESULT)).line
    assert isinstance(result, ResultLine) and result.succeeded
    assert result.model_usage["claude-sonnet-4-5"].cost_usd == 0.00846
    assert result.usage is not None and result.usage.input_tokens == 2400
    assistant = parse_line(
        raw(
            {
                "type": "assistant",
                "session_id": "s1",
                "parent_tool_use_id": None,
                "message": {
                    "id": "m1",
                    "content": [
                        {"type": "text", "text": "hi"},
                        {"type": "tool_use", "id": "t", "name": "Bash", "input": {}},
                    ],
                },
            }
        )
    ).line
    assert isinstance(assistant, AssistantLine) and assistant.texts() == ["hi"]
    assert assistant.tool_uses()[0]["name"] == "Bash"
    user = parse_line(raw({"type": "user", "message": {"role": "user", "content": "[Request interrupted by user]"}}))
    assert isinstance(user.line, UserLine) and user.line.message.blocks()[0]["text"].startswith("[Request")


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "rate_limit_event", "rate_limit_info": {"status": "allowed"}},
        {"type": "stream_event", "event": {"type": "content_block_delta"}},
        {"type": "assistant", "message": "not an object"},  # a known type that does not validate
        {"type": "assistant", "message": {"content": ["not a block"]}},
        {"type": "assistant", "message": {"id": 7, "content": []}},
        {"type": "assistant", "message": {"content": 3}},
        {"type": "assistant", "message": {"content": [], "usage": "none"}},
        {"type": "user", "message": {"content": "x"}, "parent_tool_use_id": 1},
        {"type": "user", "message": {"content": "x"}, "session_id": ["s"]},
        {"type": "user"},
        {"type": "result", "num_turns": "many"},
        {"type": "system", "tools": "Bash"},
        {"type": "x-new", "session_id": 5},  # not even an OtherLine's types: still kept, never fatal
        {"no_type": True},
    ],
)
def test_unknown_or_odd_json_is_kept_whole(obj: dict[str, object]) -> None:
    parsed = parse_line(raw(obj))
    assert isinstance(parsed.line, OtherLine) and parsed.obj == obj
    assert parsed.json is not None and json.loads(parsed.json) == obj


def test_assistant_and_user_lines_are_read_as_views_of_the_object() -> None:
    obj = {
        "type": "assistant",
        "uuid": "u1",
        "session_id": "s1",
        "parent_tool_use_id": "toolu_1",
        "message": {"id": "m1", "model": "claude", "role": "assistant", "content": [], "usage": {"input_tokens": 1}},
        "future": True,
    }
    line = parse_line(raw(obj)).line
    assert isinstance(line, AssistantLine) and line.type == "assistant"
    assert (line.uuid, line.session_id, line.parent_tool_use_id) == ("u1", "s1", "toolu_1")
    assert (line.message.id, line.message.model, line.message.role) == ("m1", "claude", "assistant")
    assert line.message.usage == {"input_tokens": 1} and line.texts() == [] and line.tool_uses() == []
    user = parse_line(raw({"type": "user", "message": {}})).line
    assert isinstance(user, UserLine) and user.message.blocks() == [] and user.session_id is None


def test_a_json_lines_text_is_kept_as_read() -> None:
    line = b'  {"type": "user", "message": {"content": "a\\/b \\u00e9"}}\r'
    parsed = parse_line(RawLine(line, len(line)))
    assert parsed.json == line.strip().decode() and json.loads(parsed.json) == parsed.obj
    redacted = parse_line(RawLine(line, len(line)), Redactor([]))  # the redacted text: escapes undone first
    assert redacted.json == '{"type": "user", "message": {"content": "a/b \u00e9"}}'
    assert redacted.obj == parsed.obj
    assert parse_line(raw("npm WARN")).json is None


@pytest.mark.parametrize("text", ["npm WARN deprecated x", "", "{not json", "[1, 2]", "  plain  "])
def test_non_json_lines_are_text(text: str) -> None:
    parsed = parse_line(raw(text))
    assert parsed.line is None and parsed.kind == "text" and parsed.text == text


def test_truncated_lines_are_never_parsed() -> None:
    data = json.dumps(RESULT).encode()
    parsed = parse_line(RawLine(data[:20], len(data)))
    assert parsed.line is None and parsed.raw.truncated


def read(chunks: list[bytes], **kwargs: int) -> list[RawLine]:
    async def go() -> list[RawLine]:
        reader = asyncio.StreamReader()
        for chunk in chunks:
            reader.feed_data(chunk)
        reader.feed_eof()
        return [line async for line in read_lines(reader, **kwargs)]

    return run_coroutine(go())  # not asyncio.run: it leaves the thread without an event loop


def test_lines_split_across_chunks_and_a_last_line_without_newline() -> None:
    lines = read([b'{"a"', b":1}\nsecond\n\nthi", b"rd"], chunk_size=3)
    assert [(line.data, line.size) for line in lines] == [(b'{"a":1}', 7), (b"second", 6), (b"", 0), (b"third", 5)]


def test_reading_a_full_pipe_lets_the_loop_turn() -> None:
    """Data always there (a burst keeps the pipe full), so reading never has to wait: the other tasks of the loop
    (the push stage) still get a turn every READER_SLICE_SECONDS or so, not only once the buffer is drained."""
    lines = 200
    work = 0.1 * READER_SLICE_SECONDS  # the caller's work on each line (parsing, emitting)

    async def go() -> tuple[int, int]:
        reader = asyncio.StreamReader()
        reader.feed_data(b"x\n" * lines)
        reader.feed_eof()
        turns = 0
        stop = False

        async def other_task() -> None:
            nonlocal turns
            while not stop:
                turns += 1
                await asyncio.sleep(0)

        ticker = asyncio.create_task(other_task())
        read = 0
        async for _ in read_lines(reader):
            read += 1
            busy_until = time.monotonic() + work
            while time.monotonic() < busy_until:
                pass
        stop = True
        turns_while_reading = turns
        await ticker
        return read, turns_while_reading

    read_count, turns = run_coroutine(go())
    assert read_count == lines
    # 200 lines of work take 20 slices: the loop turned about that often (at least a few times, on a busy machine).
    assert turns >= 5


def test_long_lines_are_cut_and_measured() -> None:
    lines = read([b"x" * 1000 + b"\nshort\n" + b"y" * 5000], max_line=100, chunk_size=64)
    assert [(len(line.data), line.size, line.truncated) for line in lines] == [
        (100, 1000, True),
        (5, 5, False),
        (100, 5000, True),
    ]
