"""POST /webhooks/{name}: a webhook defined through /api/webhooks (HMAC in its configured header)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from machine_api.body import lower_headers, raw_body
from machine_api.webhook_common import WEBHOOK_RESPONSES, outcome_response

router = APIRouter(tags=["webhooks"])


@router.post(
    "/webhooks/{name}",
    responses={**WEBHOOK_RESPONSES, 404: {"description": "No such webhook."}},
    summary="A user-defined webhook: generic JSON, HMAC-SHA256 (sha256=<hex> or <hex>) in its header.",
)
@router.post("/webhooks/{name}/", include_in_schema=False)  # the same, with a trailing slash (no 307)
async def receive(name: str, request: Request) -> JSONResponse:
    from agent_machine.domain.webhooks.receive import receive_dynamic

    body = await raw_body(request)
    outcome = await run_in_threadpool(receive_dynamic, name, body, lower_headers(request))
    return outcome_response(outcome)
