"""Small dependencies shared by the REST routers."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.security import HTTPBearer

# Documents the bearer token in OpenAPI ("Authorize" in /api/docs); GuardMiddleware does the checking.
bearer_scheme = HTTPBearer(auto_error=False, description="Authorization: Bearer <API_TOKEN>")


def actor(request: Request) -> str:
    """Who made the change, for the audit trail: the authorizer's context on AWS, else the API token."""
    event: dict[str, Any] = request.scope.get("aws.event") or {}
    context = (event.get("requestContext") or {}).get("authorizer") or {}
    lambda_context = context.get("lambda") if isinstance(context, dict) else None
    if isinstance(lambda_context, dict) and lambda_context.get("actor"):
        return str(lambda_context["actor"])[:100]
    return "api-token"
