"""GET /api/events: recent webhook deliveries and what was decided, newest first."""

from __future__ import annotations

from typing import Annotated

from agent_machine.models import WebhookDelivery
from fastapi import APIRouter, Query, Security
from pydantic import BaseModel

from machine_api.deps import bearer_scheme
from machine_api.paging import cursor_checked

router = APIRouter(prefix="/api", tags=["events"], dependencies=[Security(bearer_scheme)])


class DeliveryList(BaseModel):
    items: list[WebhookDelivery]
    cursor: str | None


@router.get("/events", response_model=DeliveryList, summary="Recent webhook deliveries and decisions")
def recent(
    limit: Annotated[int, Query(ge=1, le=500)] = 50, cursor: Annotated[str | None, Query(max_length=2048)] = None
) -> DeliveryList:
    from agent_machine.store import events  # lazy: keeps boto3 off the API cold start

    with cursor_checked():
        items, next_cursor = events.recent(limit=limit, cursor=cursor)
    return DeliveryList(items=items, cursor=next_cursor)
