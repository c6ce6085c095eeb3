"""Webhook and plan errors, each with the HTTP status it is answered with. Cheap to import (no AWS, no boto3), so
the API registers handlers for them without loading the domain at cold start."""

from __future__ import annotations


class WebhookError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedPayload(WebhookError):
    status_code, code = 400, "malformed_json"


class BadSignature(WebhookError):
    status_code, code = 401, "bad_signature"


class UnknownWebhook(WebhookError):
    status_code, code = 404, "unknown_webhook"


class UnsupportedMediaType(WebhookError):
    status_code, code = 415, "unsupported_media_type"


class InvalidPayload(WebhookError):
    status_code, code = 422, "invalid_payload"


class NotApprovable(Exception):
    """Not a completed planning task with a plan, or already approved. Answered 409 by the API."""
