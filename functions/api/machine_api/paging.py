"""Listing cursors from clients: the stores check them (a cursor must be one the same listing produced) before
they reach DynamoDB; a bad one is a 400 here, never a 5xx from DynamoDB (or its emulator) choking on it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from agent_machine.store.errors import BadCursor

from machine_api.errors import ApiError


@contextmanager
def cursor_checked() -> Iterator[None]:
    """Wrap a store listing that takes a client's cursor: BadCursor -> 400 bad_cursor."""
    try:
        yield
    except BadCursor as exc:
        raise ApiError(400, "bad_cursor", str(exc)) from exc
