"""push.frames: every frame fits API Gateway's 128 KB by its UTF-8 size, and the client rebuilds the event exactly."""

from __future__ import annotations

import json
from typing import Any

import pytest
from agent_machine.models import EventType, TaskEvent
from agent_machine.push import MAX_FRAME_BYTES, frames

LIMIT = 128 * 1024


def event(text: str, seq: int = 7) -> TaskEvent:
    return TaskEvent(
        type=EventType.OUTPUT, task_id="t-1", session_id="s-1", seq=seq, payload={"kind": "text", "text": text}
    )


def rebuild(payloads: list[bytes]) -> list[dict[str, Any]]:
    """What the dashboard (live.js #joinPart) and tests/e2e/wsclient.py do with the frames."""
    out: list[dict[str, Any]] = []
    parts: dict[tuple[str, int], dict[int, str]] = {}
    for raw in payloads:
        frame = json.loads(raw.decode("utf-8"))  # strict: a frame must be valid UTF-8
        if frame["type"] == "events":
            out.extend(frame["events"])
        else:
            got = parts.setdefault((frame["task_id"], frame["seq"]), {})
            got[frame["part"]] = frame["data"]
            if len(got) == frame["parts"]:
                out.append(json.loads("".join(got[i] for i in range(frame["parts"]))))
    return out


@pytest.mark.parametrize(
    "text",
    [
        "😀" * 45_000,  # astral: 4 bytes raw, 12 as \ud83d\ude00 escapes
        "a" * 400_000,
        "é中" * 60_000,
        '"\\\n\t\x01</script>' * 20_000,  # escapes
        "x" * 120_000 + "😀" * 3 + "y" * 200_000,  # an emoji at a cut point
    ],
)
def test_big_events_split_under_the_limit_and_rebuild_exactly(text: str) -> None:
    e = event(text)
    payloads = frames([e])
    assert len(payloads) > 1
    assert max(len(p) for p in payloads) <= MAX_FRAME_BYTES <= LIMIT
    assert rebuild(payloads) == [json.loads(e.model_dump_json())]
    # pre-encoded texts (the runner's path) give the same frames
    assert frames([e], texts=[e.model_dump_json()]) == payloads


def test_ascii_pieces_use_the_budget() -> None:
    payloads = frames([event("a" * 1_000_000)])
    assert all(len(p) > MAX_FRAME_BYTES - 1024 for p in payloads[:-1])
    assert len(payloads) == 9  # ~1 MB / 120 KB, not ~50 pieces of 20 KB


def test_emoji_pieces_use_the_budget() -> None:
    payloads = frames([event("😀" * 100_000)])  # 400 KB of UTF-8
    assert max(len(p) for p in payloads) <= MAX_FRAME_BYTES
    assert len(payloads) == 4


def test_lone_surrogates_are_escaped_not_lost() -> None:
    e = event("a\ud800b" * 50_000)
    text = json.dumps(e.model_dump(mode="json"), ensure_ascii=False)  # JSON text holding raw lone surrogates
    payloads = frames([e], texts=[text])
    assert max(len(p) for p in payloads) <= MAX_FRAME_BYTES
    assert rebuild(payloads)[0]["payload"]["text"] == "a\ud800b" * 50_000


def test_small_events_are_coalesced_and_batches_fill_up() -> None:
    events = [event("😀" * 1000, seq) for seq in range(1, 200)]
    payloads = frames(events)
    assert max(len(p) for p in payloads) <= MAX_FRAME_BYTES
    assert [e["seq"] for e in rebuild(payloads)] == list(range(1, 200))
    assert len(payloads) == -(-sum(len(e.model_dump_json().encode()) + 1 for e in events) // MAX_FRAME_BYTES)
