"""What the stores raise, in the domain's words: callers never read botocore's CancellationReasons or a
transaction's part indices. Anything else (throttling, a network error) stays botocore's own error."""

from __future__ import annotations

from enum import StrEnum


class Guard(StrEnum):
    """A condition a write is guarded by, named by what its failure means."""

    TASK_EXISTS = "task_exists"  # the task id is taken
    TASK_MOVED = "task_moved"  # the task is not in the state the write requires (claimed, finished, stopped...)
    SESSION_EXISTS = "session_exists"  # a session to create exists already
    SESSION_MISSING = "session_missing"  # a session to add to does not exist
    SESSION_LEASED = "session_leased"  # another task of the session holds its lease
    OVER_BUDGET = "over_budget"  # the day's budget has no room for the hold
    DUPLICATE_DELIVERY = "duplicate_delivery"  # the webhook delivery was recorded before
    SOURCE_CLAIMED = "source_claimed"  # another delivery of the same source event made a task
    CHILD_SLOT_TAKEN = "child_slot_taken"  # the parent's children changed since it was read (or it has no room)


class StoreError(Exception):
    pass


class Refused(StoreError):
    """A conditional write did not happen (nothing of it was written): `failed` names every guard that failed (a
    transaction can fail several at once); empty when DynamoDB did not say which."""

    def __init__(self, *failed: Guard) -> None:
        self.failed = frozenset(failed)
        super().__init__(", ".join(sorted(self.failed)) or "a condition failed")

    @property
    def explained(self) -> bool:
        return bool(self.failed)


class TaskExists(Refused):
    def __init__(self) -> None:
        super().__init__(Guard.TASK_EXISTS)


class TaskMoved(Refused):
    def __init__(self) -> None:
        super().__init__(Guard.TASK_MOVED)


class DuplicateDelivery(Refused):
    def __init__(self) -> None:
        super().__init__(Guard.DUPLICATE_DELIVERY)


class WriteConflict(StoreError):
    """Another transaction touched the same items at the same time: nothing was written; trying again may work."""


class BadCursor(StoreError, ValueError):
    """A listing's cursor that this listing did not produce (forged, corrupted, or another listing's)."""
