"""POST /webhooks/github: read the raw body, hand it to the domain, answer its outcome."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from machine_api.body import lower_headers, raw_body
from machine_api.webhook_common import WEBHOOK_RESPONSES, outcome_response

router = APIRouter(tags=["webhooks"])


SUMMARY = "GitHub webhook: X-Hub-Signature-256 over the raw body; JSON or form-encoded (`payload=`)."


@router.post("/webhooks/github", responses=WEBHOOK_RESPONSES, summary=SUMMARY)
@router.post("/webhooks/github/", include_in_schema=False)  # the same, with a trailing slash (no 307)
async def receive(request: Request) -> JSONResponse:
    from agent_machine.domain.webhooks.receive import receive_github

    body = await raw_body(request)
    outcome = await run_in_threadpool(receive_github, body, lower_headers(request))
    return outcome_response(outcome)
