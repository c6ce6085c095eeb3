"""Secret redaction: every secret value the machine knows becomes `[redacted]` wherever text leaves a process.

Applied to the CLI's stdout and stderr lines as the runner reads them (so stored output, WebSocket frames, the
parsed result, errors and plans all come from redacted text), to a run's outcome, to comments posted back to
GitHub, Jira and Sentry, and to every log line (observability's formatter).

The values: the named secrets of `agent_machine.secrets` (API token, GitHub/Jira/Sentry webhook secrets, GitHub and
Jira tokens, Anthropic key; from the environment or the SECRETS_NAME secret, every value of which counts), other
credentials in the environment (`secrets.ENV_SECRET_NAMES`: Sentry token, the AWS role's secret key and session
token, ...), and the secrets of the webhooks users define in the registry. Values shorter than MIN_SECRET_CHARS
are ignored: redacting "abc" everywhere would mangle output and protect nothing.

The forms covered, for each value (and for it without surrounding whitespace):
- as is;
- JSON-escaped inside a string, as `JSON.stringify` (the CLI) and `json.dumps` write it, with and without `\\uXXXX`
  for non-ASCII, and escaped twice (JSON printed inside a JSON string: a tool result that shows JSON). Stream-json
  lines are also read with their `\\uXXXX` and `\\/` escapes undone first (stream.redact_raw), so a value written
  with escapes in the middle of it is caught too;
- URL-encoded (`quote` with and without `/` kept, `quote_plus`);
- Base64, standard and URL-safe alphabets: the whole encoding, and at each of the three byte alignments the part
  of the encoding that depends on the value alone, so the value is also caught inside a longer Base64 text (a
  Basic `user:token` header, `git config` showing an `extraheader`);
- lowercase hex.
Not covered: anything else a hostile program could do with a value it holds (reverse it, split it over lines,
another encoding). Redaction is the net for what gets printed; that the CLI cannot reach the values at all is what
keeps them (see the README's security model). Output is redacted line by line: the runner does not ask the CLI for
partial messages, so a stream-json value never arrives split over two lines.

Speed: a line is first checked against the set of the forms' 8-byte blocks (every form of 15 bytes or more contains
a whole block of the line at an offset that is a multiple of 8; the line's blocks are unpacked with `struct`, in C),
which costs a few microseconds for a typical stream-json line; only a line that may hold a form is then searched
for each form (`in`, then `replace`, longest first). Forms shorter than 15 bytes (only from short secrets) are
looked for with one regular expression. `bench/bench_redaction.py` measures it.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from urllib.parse import quote, quote_plus

from agent_machine import secrets
from agent_machine.models import WebhookSpec
from agent_machine.settings import get_settings

MARK = "[redacted]"
MARK_BYTES = MARK.encode()
MIN_SECRET_CHARS = 8
# A cut line (too long to keep whole) may end with the start of a secret: at least this much of it is redacted.
MIN_PARTIAL_CHARS = 4
# How long a redactor is used before the values are read again (a rotated secret, a new dynamic webhook).
MAX_AGE_SECONDS = 30.0
# After a failed read of the remote values, the next attempt waits this long (a down registry is not hammered).
RETRY_SECONDS = 5.0

_BLOCK = 8
_LONG = 2 * _BLOCK - 1  # a form at least this long always contains an aligned block of the text it is in
_CHUNK_BLOCKS = 64  # blocks unpacked per call (bounded: one cached Struct per count up to this)


def forms(value: str) -> set[str]:
    """The encodings of one secret value that are looked for (see the module docstring)."""
    out: set[str] = set()
    for v in {value, value.strip()}:
        if len(v) < MIN_SECRET_CHARS:
            continue
        out.add(v)
        for ascii_only in (True, False):
            once = json.dumps(v, ensure_ascii=ascii_only)[1:-1]
            out.add(once)
            out.add(json.dumps(once, ensure_ascii=ascii_only)[1:-1])
        out.update((quote(v, safe=""), quote(v), quote_plus(v)))
        raw = v.encode()
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            out.add(encode(raw).decode("ascii"))
            # The value k bytes into a longer Base64 text: skip the characters that also hold the bytes before it,
            # stop before the last one that also holds the bytes after it.
            for k, start in ((0, 0), (1, 2), (2, 3)):
                middle = encode(b"\0" * k + raw).decode("ascii")[start : ((k + len(raw)) * 8) // 6]
                if len(middle) >= MIN_SECRET_CHARS:
                    out.add(middle)
        out.add(raw.hex())
    return out


@cache
def _blocks_of(count: int) -> struct.Struct:
    """Unpacks `count` consecutive blocks in one C call (much cheaper than slicing them one by one in Python)."""
    return struct.Struct(f"{_BLOCK}s" * count)


class Redactor:
    """Replaces the known secret values (in every covered form) with MARK, in str or bytes."""

    def __init__(self, values: Iterable[str]) -> None:
        self.values = frozenset(v for v in values if v)
        found: set[str] = set()
        for value in self.values:
            found |= forms(value)
        # Longest first: a whole form is replaced before a part of it could be.
        ordered = sorted(found, key=lambda f: (-len(f.encode()), f))
        self.count = len(ordered)
        self._forms = [f.encode() for f in ordered]
        long_forms = [f for f in ordered if len(f.encode()) >= _LONG]
        short_forms = [f for f in ordered if len(f.encode()) < _LONG]
        self._long_text = long_forms
        self._long_bytes = [f.encode() for f in long_forms]
        self._blocks = frozenset(
            block
            for form in self._long_bytes
            for block in {form[i : i + _BLOCK] for i in range(len(form) - _BLOCK + 1)}
        )
        self._short_text = re.compile("|".join(re.escape(f) for f in short_forms)) if short_forms else None
        self._short_bytes = re.compile(b"|".join(re.escape(f.encode()) for f in short_forms)) if short_forms else None
        self.built_at = time.monotonic()

    def __bool__(self) -> bool:
        return self.count > 0

    @property
    def age(self) -> float:
        return time.monotonic() - self.built_at

    def renew(self) -> None:
        """The values were read again and are the same: good for another MAX_AGE_SECONDS (no rebuild)."""
        self.built_at = time.monotonic()

    def may_hold(self, data: bytes) -> bool:
        """Whether `data` may hold a long form: one of its aligned blocks is a block of one (the prefilter)."""
        if not self._blocks or len(data) < _LONG:
            return False
        whole = len(data) // _BLOCK
        for start in range(0, whole, _CHUNK_BLOCKS):
            count = min(_CHUNK_BLOCKS, whole - start)
            if not self._blocks.isdisjoint(_blocks_of(count).unpack_from(data, start * _BLOCK)):
                return True
        return False

    def text(self, text: str) -> str:
        if not self.count:
            return text
        if self.may_hold(text.encode("utf-8", "surrogatepass")):
            for form in self._long_text:  # longest first
                if form in text:
                    text = text.replace(form, MARK)
        return self._short_text.sub(MARK, text) if self._short_text is not None else text

    def maybe(self, text: str | None) -> str | None:
        return None if text is None else self.text(text)

    def binary(self, data: bytes, *, cut: bool = False) -> bytes:
        """`cut`: the data is the start of something longer, so its end may be the start of a secret."""
        if not self.count:
            return data
        if self.may_hold(data):
            for form in self._long_bytes:  # longest first
                if form in data:
                    data = data.replace(form, MARK_BYTES)
        if self._short_bytes is not None:
            data = self._short_bytes.sub(MARK_BYTES, data)
        return self._cut_end(data) if cut else data

    def _cut_end(self, data: bytes) -> bytes:
        """Redact a trailing start of a form (at least MIN_PARTIAL_CHARS of it)."""
        cut_at: int | None = None
        for form in self._forms:
            window_start = max(0, len(data) - len(form) + 1)
            head = form[:MIN_PARTIAL_CHARS]
            found = data.find(head, window_start)
            while found >= 0:
                if form.startswith(data[found:]):
                    cut_at = found if cut_at is None else min(cut_at, found)
                    break
                found = data.find(head, found + 1)
        return data if cut_at is None else data[:cut_at] + MARK_BYTES


# --------------------------------------------------------------------------------------------------- the values


@dataclass(frozen=True)
class _State:
    redactor: Redactor
    generation: int


_state: _State | None = None
_dynamic: tuple[str, ...] = ()  # the dynamic webhooks' secrets, as last read from the registry
_fetched_at: float | None = None  # when the remote values (Secrets Manager, registry) were last read
_fetch_lock = threading.Lock()
_build_lock = threading.Lock()


def _webhook_secrets() -> tuple[str, ...]:
    # Lazy: every logger loads this module, and the registry store brings boto3 (+270 modules, ~0.35 s on the
    # authorizer's cold start, measured in a fresh process); only current() needs it.
    from agent_machine.store import registry

    return tuple(sorted(w.secret for w in registry.list_kind("webhook", WebhookSpec) if w.secret))


def _install(values: Iterable[str], generation: int) -> Redactor:
    """The redactor for these values: the current one when they have not changed (building one from long values,
    such as an AWS session token, takes milliseconds), else a new one."""
    global _state
    wanted = frozenset(v for v in values if v)
    state = _state
    if state is not None and state.redactor.values == wanted:
        state.redactor.renew()
        redactor = state.redactor
    else:
        redactor = Redactor(wanted)
    _state = _State(redactor, generation)
    return redactor


def _fresh(state: _State | None) -> bool:
    return state is not None and state.generation == secrets.generation() and state.redactor.age < MAX_AGE_SECONDS


def current() -> Redactor:
    """The redactor, with the remote values read at most MAX_AGE_SECONDS ago: it may call Secrets Manager and the
    registry, so call it off any event loop (asyncio.to_thread). A failed read keeps the values last read."""
    global _dynamic, _fetched_at
    state = _state
    generation = secrets.generation()
    if _fresh(state) and _fetched_at is not None and time.monotonic() - _fetched_at < MAX_AGE_SECONDS:
        assert state is not None
        return state.redactor
    with _fetch_lock:
        state = _state
        if _fresh(state) and _fetched_at is not None and time.monotonic() - _fetched_at < MAX_AGE_SECONDS:
            assert state is not None
            return state.redactor
        failed = False
        try:
            values = secrets.known_values(fetch=True)
        except Exception:
            values, failed = secrets.known_values(fetch=False), True
        try:
            _dynamic = _webhook_secrets()
        except Exception:
            failed = True
        redactor = _install([*values, *_dynamic], generation)
        # After a failure the next read comes sooner (the values just built stand until then).
        _fetched_at = time.monotonic() - (MAX_AGE_SECONDS - RETRY_SECONDS if failed else 0.0)
    if failed:
        # The service's logger by its stdlib name (observability names it so): observability imports this module.
        logging.getLogger(get_settings().service_name).warning(
            "could not read every secret value to redact; using those known so far"
        )
    return redactor


def latest() -> Redactor:
    """The redactor, never reading anything remote: the one last built, or one rebuilt from the values known in
    this process (the environment, Secrets Manager's cached answer, the registry's last read). For log
    formatting and code on an event loop."""
    state = _state
    if _fresh(state):
        assert state is not None
        return state.redactor
    # Another thread rebuilding it: use the previous one meanwhile (a log line must never wait).
    if not _build_lock.acquire(blocking=state is None):
        assert state is not None
        return state.redactor
    try:
        state = _state
        if _fresh(state):
            assert state is not None
            return state.redactor
        return _install([*secrets.known_values(fetch=False), *_dynamic], secrets.generation())
    finally:
        _build_lock.release()


def redact(text: str) -> str:
    """`text` with every known secret value replaced (no remote reads)."""
    return latest().text(text)
