"""Cursors from clients, checked before they reach DynamoDB: a cursor must decode to exactly the key the listing
produced (table key + index key, string attributes, the same partition value). Anything else is a 400, never a
5xx from DynamoDB (or its emulator) choking on a forged ExclusiveStartKey."""

from __future__ import annotations

from machine_api.errors import ApiError


def check_cursor(cursor: str | None, required: dict[str, str | None]) -> None:
    """required: attribute name -> the value it must have (None: any string)."""
    if not cursor:
        return
    from agent_machine.store._dynamo import BadCursor, decode_cursor

    try:
        key = decode_cursor(cursor)
    except BadCursor as exc:
        raise ApiError(400, "bad_cursor", str(exc)) from exc
    if key is None or set(key) != set(required):
        raise ApiError(400, "bad_cursor", "cursor is not valid for this listing")
    for name, expected in required.items():
        value = key[name]
        if not (isinstance(value, dict) and set(value) == {"S"} and isinstance(value["S"], str)):
            raise ApiError(400, "bad_cursor", "cursor is not valid for this listing")
        if expected is not None and value["S"] != expected:
            raise ApiError(400, "bad_cursor", "cursor belongs to another listing")


def task_cursor_key(
    *, session_id: str | None = None, parent_task_id: str | None = None, status: str | None = None
) -> dict[str, str | None]:
    """The key a tasks listing's cursor holds (the index store/tasks.list_tasks picks for these filters)."""
    if session_id:
        index_key: tuple[str, str] = ("session_id", session_id)
    elif parent_task_id:
        index_key = ("parent_task_id", parent_task_id)
    elif status:
        index_key = ("status", status)
    else:
        index_key = ("list_pk", "task")
    return {"task_id": None, "created_at": None, index_key[0]: index_key[1]}
