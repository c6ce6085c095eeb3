"""POST /webhooks/jira: read the raw body, hand it to the domain, answer its outcome."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from machine_api.body import lower_headers, raw_body
from machine_api.webhook_common import WEBHOOK_RESPONSES, outcome_response

router = APIRouter(tags=["webhooks"])


SUMMARY = "Jira webhook: X-Hub-Signature (sha256=); unsigned only when JIRA_ALLOW_UNSIGNED is set and no secret is."


@router.post("/webhooks/jira", responses=WEBHOOK_RESPONSES, summary=SUMMARY)
@router.post("/webhooks/jira/", include_in_schema=False)  # the same, with a trailing slash (no 307)
async def receive(request: Request) -> JSONResponse:
    from agent_machine.domain.webhooks.receive import receive_jira

    body = await raw_body(request)
    outcome = await run_in_threadpool(receive_jira, body, lower_headers(request))
    return outcome_response(outcome)
