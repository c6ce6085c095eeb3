"""Open endpoints: GET /api/health (no AWS calls) and GET /api/config (what the dashboard needs to connect)."""

from __future__ import annotations

from agent_machine.settings import get_settings
from fastapi import APIRouter
from pydantic import BaseModel

from machine_api import __version__

router = APIRouter(prefix="/api", tags=["meta"])


class Health(BaseModel):
    status: str
    machine_id: str
    version: str


class PublicConfig(BaseModel):
    websocket_url: str | None
    machine_id: str
    version: str


@router.get("/health", response_model=Health, summary="Liveness (open)")
async def health() -> Health:
    return Health(status="ok", machine_id=get_settings().machine_id, version=__version__)


@router.get("/config", response_model=PublicConfig, summary="Where the dashboard connects (open)")
async def config() -> PublicConfig:
    settings = get_settings()
    return PublicConfig(websocket_url=settings.websocket_url, machine_id=settings.machine_id, version=__version__)
