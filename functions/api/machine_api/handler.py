"""Lambda entry point of ApiFunction: the FastAPI app behind Mangum (API Gateway HTTP API, payload 2.0)."""

from __future__ import annotations

from mangum import Mangum

from machine_api.app import create_app

app = create_app()
handler = Mangum(app, lifespan="off")
