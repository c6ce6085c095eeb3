"""The Redactor: which forms of a secret it finds, where in a line, and what it leaves alone; the runner's line
redaction (escapes undone, cut lines, sizes); an Outcome never holds a secret."""

from __future__ import annotations

import base64
import json
import random
import string
from urllib.parse import quote, quote_plus

import pytest
from agent_machine import redaction
from agent_machine.models import TaskStatus
from agent_machine.redaction import MARK, MIN_SECRET_CHARS, Redactor, forms
from runner import results
from runner.stream import RawLine, parse_line, redact_raw

TOKEN = "ghp_Zq8wX2mN4bV6cR1tY3uI5oP7aS9dF0gH2jK4"
ODD = 'wh"sec/ret\\value ü'  # a quote, a slash, a backslash and non-ASCII: every JSON spelling differs


@pytest.fixture
def redactor() -> Redactor:
    return Redactor([TOKEN, ODD, "short"])


def test_the_value_and_its_encodings_are_redacted(redactor: Redactor) -> None:
    for form in (
        TOKEN,
        TOKEN.encode().hex(),
        base64.b64encode(TOKEN.encode()).decode(),
        base64.urlsafe_b64encode(ODD.encode()).decode(),
        quote(ODD, safe=""),
        quote_plus(ODD),
        json.dumps(ODD)[1:-1],
        json.dumps(ODD, ensure_ascii=False)[1:-1],
        json.dumps(json.dumps(ODD)[1:-1])[1:-1],  # JSON printed inside a JSON string
    ):
        assert redactor.text(f"before {form} after") == f"before {MARK} after", form


@pytest.mark.parametrize("user", ["x-access-token:", "u:", "bot@example.com:"])
def test_a_token_inside_a_longer_base64_text_is_redacted(redactor: Redactor, user: str) -> None:
    basic = base64.b64encode(f"{user}{TOKEN}".encode()).decode()
    out = redactor.text(f"Authorization: Basic {basic}")
    assert MARK in out
    # What is left of the encoding is the user part and at most the characters shared with it.
    left = out.removeprefix("Authorization: Basic ").split(MARK)[0]
    assert len(left) <= len(base64.b64encode(user.encode())) + 1


def test_a_secret_is_found_at_every_offset_and_next_to_anything() -> None:
    rng = random.Random(7)
    secret = "".join(rng.choices(string.ascii_letters + string.digits, k=40))
    redactor = Redactor([secret])
    for offset in range(0, 40):
        filler = "".join(rng.choices(string.printable, k=offset))
        line = f"{filler}{secret}{filler[::-1]}"
        assert redactor.text(line) == f"{filler}{MARK}{filler[::-1]}"
        assert redactor.binary(line.encode()) == f"{filler}{MARK}{filler[::-1]}".encode()


def test_short_secrets_are_found_without_the_block_index() -> None:
    redactor = Redactor(["s3cr3t-9"])  # 8 characters: shorter than a block pair
    assert redactor.text("x=s3cr3t-9;") == f"x={MARK};"
    assert redactor.binary(b"s3cr3t-9") == MARK.encode()


def test_short_or_empty_values_are_never_redacted(redactor: Redactor) -> None:
    assert "short" not in forms("short") and len("short") < MIN_SECRET_CHARS
    assert redactor.text("a short answer") == "a short answer"
    assert not Redactor(["", "a", "  abc  "])
    assert Redactor([f"  {TOKEN}\n"]).text(TOKEN) == MARK  # a stored secret's trailing newline does not hide it


def test_the_longest_form_wins() -> None:
    inner = "abcdefgh12345678"
    redactor = Redactor([inner, f"{inner}-and-more"])
    assert redactor.text(f"<{inner}-and-more>") == f"<{MARK}>"


def test_a_cut_line_loses_the_start_of_a_secret_at_its_end(redactor: Redactor) -> None:
    assert redactor.binary(f"cut here {TOKEN[:12]}".encode(), cut=True) == f"cut here {MARK}".encode()
    assert redactor.binary(f"cut here {TOKEN[:12]}".encode()) == f"cut here {TOKEN[:12]}".encode()
    assert redactor.binary(b"ends with gh", cut=True) == b"ends with gh"  # under MIN_PARTIAL_CHARS: left


def json_line(text: str) -> bytes:
    return json.dumps(
        {"type": "assistant", "message": {"id": "m1", "content": [{"type": "text", "text": text}]}},
        ensure_ascii=False,
    ).encode()


def test_a_stream_json_line_is_redacted_before_it_is_parsed(redactor: Redactor) -> None:
    data = json_line(f"token {TOKEN} and {ODD}")
    parsed = parse_line(RawLine(data, len(data)), redactor)
    assert parsed.obj is not None
    assert parsed.obj["message"]["content"][0]["text"] == f"token {MARK} and {MARK}"
    assert parsed.raw.size == len(parsed.raw.data) and not parsed.raw.truncated


def test_escapes_in_the_middle_of_a_secret_do_not_hide_it(redactor: Redactor) -> None:
    escaped = "".join(f"\\u{ord(c):04x}" for c in TOKEN[:6]) + TOKEN[6:10] + TOKEN[10:].replace("_", "\\u005f")
    data = b'{"type":"user","message":{"content":"key ' + escaped.encode() + b' \\\\u0041 \\u001b[0m"}}'
    assert json.loads(data)["message"]["content"].startswith(f"key {TOKEN} ")  # what a parser would see
    parsed = parse_line(RawLine(data, len(data)), redactor)
    assert parsed.obj == {"type": "user", "message": {"content": f"key {MARK} \\u0041 \x1b[0m"}}
    slashed = json.dumps({"type": "user", "x": ODD}).replace("/", "\\/").encode()
    assert parse_line(RawLine(slashed, len(slashed)), redactor).obj == {"type": "user", "x": MARK}


def test_text_lines_and_cut_lines_keep_their_meaning(redactor: Redactor) -> None:
    text = f"npm WARN {TOKEN}".encode()
    assert parse_line(RawLine(text, len(text)), redactor).text == f"npm WARN {MARK}"
    cut = RawLine(f'{{"type":"assistant","t":"{TOKEN[:20]}'.encode(), 10_000)
    out = redact_raw(cut, redactor)
    assert out.truncated and out.data.endswith(MARK.encode()) and TOKEN[:20].encode() not in out.data
    assert out.size - len(out.data) == cut.size - len(cut.data)  # the dropped part is the same size


def test_without_a_redactor_parsing_is_unchanged() -> None:
    data = json_line(TOKEN)
    assert parse_line(RawLine(data, len(data))).obj == json.loads(data)


def test_an_outcome_never_holds_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    redactor = Redactor([TOKEN])
    monkeypatch.setattr(redaction, "latest", lambda: redactor)
    outcome = results.Outcome(TaskStatus.FAILED, error=f"the runner failed: push {TOKEN}")
    outcome.result = f"done {TOKEN}"
    outcome.plan = results.clip(f"plan {'x' * 50}{TOKEN}", 60)  # a cut through the secret leaves none of it
    assert outcome.error == f"the runner failed: push {MARK}"
    assert outcome.result == f"done {MARK}"
    assert outcome.plan is not None and TOKEN[:4] not in outcome.plan
    assert TOKEN not in json.dumps(outcome.event_payload())
