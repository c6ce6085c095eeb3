"""POST /webhooks/<sender>: one router for every sender. It reads the raw body (the bytes signatures cover), hands
it to the domain (`receive`) and answers its outcome; the domain's errors become 4xx in errors.py.

SENDERS documents the built-in senders (their own paths and summaries in the OpenAPI); any other name is a webhook
defined through /api/webhooks. A name here without an entry in the domain's table would be served as such a
webhook (an unknown one: 404), which tests/unit/test_webhook_router.py guards against.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from machine_api.body import lower_headers, raw_body

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

# The built-in senders: path name -> OpenAPI summary.
SENDERS: dict[str, str] = {
    "github": "GitHub webhook: X-Hub-Signature-256 over the raw body; JSON or form-encoded (`payload=`).",
    "jira": "Jira webhook: X-Hub-Signature (sha256=); unsigned only when JIRA_ALLOW_UNSIGNED is set and no secret is.",
    "sentry": "Sentry integration webhook: Sentry-Hook-Signature (bare hex) and Sentry-Hook-Resource.",
}
DYNAMIC_SUMMARY = "A user-defined webhook: generic JSON, HMAC-SHA256 (sha256=<hex> or <hex>) in its header."

router = APIRouter(tags=["webhooks"])


async def answer(sender: str, request: Request) -> JSONResponse:
    # Imported on first delivery, not at cold start: the domain brings boto3 and the stores (~0.5 s of imports).
    from agent_machine.domain.webhooks.receive import receive

    body = await raw_body(request)
    # Called on the event loop, not in a worker thread: a Lambda environment serves one request at a time, so
    # nothing else waits for the loop, while a thread costs a start per invocation (Mangum's loop ends with each
    # one, and anyio's workers with it) and, on a busy machine, milliseconds of scheduling in the ack's tail.
    outcome: Outcome = receive(sender, body, lower_headers(request))
    headers = {"x-webhook-redelivery": "true"} if outcome.redelivery else None
    return JSONResponse(outcome.body, status_code=outcome.status_code, headers=headers)


def _sender_endpoint(sender: str) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def receive(request: Request) -> JSONResponse:
        return await answer(sender, request)

    return receive


for _sender, _summary in SENDERS.items():
    _endpoint = _sender_endpoint(_sender)
    router.add_api_route(
        f"/webhooks/{_sender}", _endpoint, methods=["POST"], responses=WEBHOOK_RESPONSES, summary=_summary
    )
    # the same, with a trailing slash (no 307)
    router.add_api_route(f"/webhooks/{_sender}/", _endpoint, methods=["POST"], include_in_schema=False)


# After the built-in senders: a route matches in the order it was added.
@router.post(
    "/webhooks/{name}",
    responses={**WEBHOOK_RESPONSES, 404: {"description": "No such webhook."}},
    summary=DYNAMIC_SUMMARY,
)
@router.post("/webhooks/{name}/", include_in_schema=False)  # the same, with a trailing slash (no 307)
async def receive(name: str, request: Request) -> JSONResponse:
    return await answer(name, request)
