"""The FastAPI app: webhooks (/webhooks/*) and the dashboard's REST API (/api/*), OpenAPI at /api/docs (Swagger UI
served from this package: docs.py) and /api/openapi.json. Every answer carries the security headers (security.py).

Built once per Lambda container. Cold start stays close to a bare FastAPI + Mangum app: routers import the
domain, the stores and boto3 inside their handlers, so a container pays for them on first use only.
"""

from __future__ import annotations

from agent_machine.settings import get_settings
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from machine_api import (
    __version__,
    chat,
    config,
    costs,
    docs,
    errors,
    events,
    registry,
    sessions,
    status,
    tasks,
    webhooks,
)
from machine_api.middleware import GuardMiddleware
from machine_api.security import SecurityHeadersMiddleware

DESCRIPTION = """Webhooks in, tasks out. `/webhooks/*` are verified by each sender's signature; `/api/*` need
`Authorization: Bearer <API_TOKEN>` except `/api/health`, `/api/config` and these docs.
Every error is `{"error": {"code": "...", "message": "..."}}`."""


def create_app() -> FastAPI:
    app = FastAPI(
        title="Agent machine",
        version=__version__,
        description=DESCRIPTION,
        docs_url=None,  # FastAPI's page loads Swagger UI from a CDN: docs.py serves it from this package
        openapi_url="/api/openapi.json",
        redoc_url=None,
    )
    errors.install(app)
    for module in (
        webhooks,
        config,
        status,
        tasks,
        chat,
        sessions,
        registry,
        costs,
        events,
        docs,
    ):
        app.include_router(module.router)
    app.add_middleware(GuardMiddleware)
    origins = get_settings().cors_origins
    if origins:  # outermost, so refusals (401, 413...) carry CORS headers too and the browser can read them
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_credentials=False,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["authorization", "content-type", "x-request-id"],
            expose_headers=["x-request-id"],
            max_age=600,
        )
    app.add_middleware(SecurityHeadersMiddleware)  # outermost: preflights and refusals carry the headers too
    return app
