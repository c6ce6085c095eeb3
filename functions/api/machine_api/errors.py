"""One error shape for every failure: `{"error": {"code": "...", "message": "...", "details": [...]?}}`.

Domain errors map to statuses here, so routers stay thin: webhook errors carry their own status (400 / 401 / 404
/ 415 / 422), registry errors theirs (404 / 409 / 422), unknown sessions are 404, non-approvable plans 409, and a
task that could not be enqueued is 503 (the sender retries). Nothing caused by input reaches the 500 handler.
"""

from __future__ import annotations

import sys
from typing import Any

from agent_machine.domain.registry_models import RegistryError
from agent_machine.domain.webhooks.errors import NotApprovable, WebhookError
from agent_machine.store.errors import WriteConflict
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from machine_api.security import SECURITY_HEADERS

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "too_many_requests",
    500: "internal",
    503: "unavailable",
}


class ApiError(StarletteHTTPException):
    """An HTTP error with our code (raise it from routers and dependencies)."""

    def __init__(self, status_code: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status_code, detail=message, headers=headers)
        self.code = code


class BodyTooLarge(ApiError):
    # An HTTPException, so FastAPI's body parsing re-raises it instead of turning it into a 400.
    def __init__(self, limit: int) -> None:
        super().__init__(413, "payload_too_large", f"the body is larger than {limit} bytes")


def error_body(code: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"error": error}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    # Set here as well as by the middleware: the catch-all handler's 500/503 are sent from outside it.
    return JSONResponse(
        error_body(code, message, details), status_code=status, headers={**SECURITY_HEADERS, **(headers or {})}
    )


def _validation_details(errors: Any) -> list[dict[str, Any]]:
    # Never echo the input (it may be huge or hostile) nor ctx (it may hold exception objects).
    return [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in list(errors)[:20]
    ]


def install(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = exc.code if isinstance(exc, ApiError) else CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route for {request.method} {request.url.path}"
        return error_response(exc.status_code, code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "malformed_json", "the body is not valid JSON")
        return error_response(422, "invalid", "the request has invalid fields", details=_validation_details(errors))

    @app.exception_handler(WebhookError)
    async def webhook_error(request: Request, exc: WebhookError) -> JSONResponse:
        return error_response(exc.status_code, exc.code, exc.message)

    @app.exception_handler(NotApprovable)
    async def not_approvable(request: Request, exc: NotApprovable) -> JSONResponse:
        return error_response(409, "not_approvable", str(exc))

    @app.exception_handler(RegistryError)
    async def registry_error(request: Request, exc: RegistryError) -> JSONResponse:
        return error_response(exc.status_code, exc.code, exc.message)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Lazy, on the error path only: these bring boto3 (submission, ingest) and Powertools' Logger.
        from agent_machine.domain.submission import EnqueueFailed
        from agent_machine.domain.webhooks.ingest import IngestUnavailable
        from agent_machine.observability import get_logger

        if isinstance(exc, IngestUnavailable | EnqueueFailed):
            return error_response(
                503, "unavailable", str(exc) or "could not enqueue the task; retry", headers={"retry-after": "5"}
            )
        if isinstance(exc, WriteConflict):  # another transaction got in the way: trying again works
            return error_response(
                503, "unavailable", "a concurrent write got in the way; retry", headers={"retry-after": "1"}
            )
        if _is_aws_error(exc):  # DynamoDB / SQS / Secrets Manager refused or timed out: the caller may retry
            get_logger().exception("AWS call failed", extra={"path": request.url.path})
            return error_response(
                503, "unavailable", "a backing service is unavailable; retry", headers={"retry-after": "5"}
            )
        get_logger().exception("unhandled error", extra={"path": request.url.path})
        return error_response(500, "internal", "internal error")


def _is_aws_error(exc: BaseException) -> bool:
    """botocore's ClientError and BotoCoreError (EndpointConnectionError, ReadTimeoutError...), without importing
    botocore at cold start."""
    module = sys.modules.get("botocore.exceptions")
    if module is None:
        return False
    return isinstance(exc, module.ClientError | module.BotoCoreError)
