"""What the webhook routers share: the answer for an outcome, and the OpenAPI description of the answers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse

if TYPE_CHECKING:
    from agent_machine.domain.webhooks.ingest import Outcome

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}
    },
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}


WEBHOOK_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Recorded and ignored (with the reason) or answered (ping, installation)."},
    202: {"description": "A task was created and queued: {status, reason, delivery_id, task_id, session_id}."},
    400: _error("Malformed JSON (or form body without `payload`)."),
    401: _error("Missing or wrong signature."),
    413: _error("Body over 25 MB."),
    415: _error("Wrong content type."),
    422: _error("Payload fields of the wrong type."),
    503: _error("The task could not be enqueued; retry."),
}


def outcome_response(outcome: Outcome) -> JSONResponse:
    headers = {"x-webhook-redelivery": "true"} if outcome.redelivery else None
    return JSONResponse(outcome.body, status_code=outcome.status_code, headers=headers)
