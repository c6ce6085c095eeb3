"""Replies to the connection that sent a message, through the management API (`agent_machine.push.Pusher`),
never as the Lambda's return value.

A replay goes out through `agent_machine.domain.publishing.send` (the frames every push uses). An event the
management API refuses (e.g. PayloadTooLargeException) is replayed as a truncated stand-in with the same seq,
after an error frame naming it; a failed push never fails the Lambda or drops the subscription.
"""

from __future__ import annotations

from agent_machine.domain import publishing
from agent_machine.models import TaskEvent
from agent_machine.observability import get_logger
from agent_machine.push import Pusher
from botocore.exceptions import BotoCoreError
from botocore.exceptions import ClientError as AwsError

logger = get_logger()

Reply = dict[str, object]

# What a stand-in keeps of a refused event's payload (scalars only: the rest is what did not fit).
_KEPT_FIELDS = ("cost_usd", "duration_ms", "num_turns", "error", "error_kind", "status")
_KEPT_TEXT_CHARS = 2000


class Replies:
    """One $default message's replies to its connection."""

    def __init__(self, connection_id: str, request_id: object) -> None:
        self.connection_id = connection_id
        self.request_id = request_id
        self.pusher = Pusher()

    @property
    def gone(self) -> bool:
        return self.connection_id in self.pusher.gone

    def reply(self, message: Reply) -> bool:
        if self.request_id is not None:
            message = {**message, "id": self.request_id}
        return self.pusher.send_json(self.connection_id, message)

    def error(self, text: str, action: object = None) -> None:
        message: Reply = {"type": "error", "message": text}
        if isinstance(action, str):
            message["action"] = action[:32]
        self.reply(message)

    def replay(self, events: list[TaskEvent]) -> None:
        if not events or self.gone:
            return
        failed = publishing.send(self.pusher, [self.connection_id], events).errors.get(self.connection_id)
        if failed is None:
            return
        logger.warning("replay could not be pushed whole; sending event by event", extra={"error": repr(failed)})
        # One event at a time (the client dedupes what the failed batch had already delivered): an event the
        # management API refuses is replaced by a truncated stand-in with the same seq, so the client's stream
        # has no hole, and the client is told.
        for event in events:
            if self.gone:
                return
            refused = publishing.send(self.pusher, [self.connection_id], [event]).errors.get(self.connection_id)
            if refused is not None:
                self._stand_in(event, refused)

    def _stand_in(self, event: TaskEvent, exc: Exception) -> None:
        reason = aws_error_code(exc)
        logger.warning(
            "event could not be pushed; sent truncated",
            extra={"task_id": event.task_id, "seq": event.seq, "error": reason},
        )
        with Quiet():
            self.reply(
                {
                    "type": "error",
                    "action": "subscribe",
                    "message": f"event {event.seq} of task {event.task_id} could not be sent ({reason}); "
                    "it is shown truncated",
                    "task_id": event.task_id,
                    "seq": event.seq,
                }
            )
        payload: dict[str, object] = {"truncated": True, "error": reason}
        if "kind" in event.payload:
            payload["kind"] = event.payload["kind"]
            payload["text"] = f"[this output could not be sent ({reason}); see the stored transcript]"
        for key in _KEPT_FIELDS:
            value = event.payload.get(key)
            if isinstance(value, int | float | bool) or (isinstance(value, str) and len(value) <= _KEPT_TEXT_CHARS):
                payload[key] = value
        # Best effort: publishing.send logs a refusal and never raises.
        publishing.send(self.pusher, [self.connection_id], [event.model_copy(update={"payload": payload})])


class Quiet:
    """Swallows (and logs) AWS errors of a best-effort push."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, AwsError | BotoCoreError):
            logger.warning("best-effort push failed", extra={"error": repr(exc)})
            return True
        return False


def aws_error_code(exc: BaseException) -> str:
    if isinstance(exc, AwsError):
        return str(
            exc.response.get("Error", {}).get("Code")
            or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "error")
        )
    return type(exc).__name__
