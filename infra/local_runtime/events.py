"""API Gateway and SQS event shapes, as AWS sends them to Lambda, and a Lambda context object.

The local runtime and the tests build events here so handlers see exactly what they get on AWS.
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"


@dataclass
class LambdaContext:
    """What Lambda passes as `context`: Powertools and our handlers read these attributes.

    `deadline`: when the invocation times out, in time.monotonic() seconds (system-wide on Linux, so the runtime
    that enforces the timeout sets it for its worker processes); by default `timeout_seconds` from now."""

    function_name: str
    timeout_seconds: float = 900
    memory_limit_in_mb: int = 1024
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    client_context: Any = None
    identity: Any = None
    deadline: float | None = None
    log_stream_name: str = ""  # one per execution environment; a new one by default
    _deadline: float = 0.0

    def __post_init__(self) -> None:
        self._deadline = self.deadline if self.deadline is not None else time.monotonic() + self.timeout_seconds
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = self.log_stream_name or new_log_stream_name()

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def new_log_stream_name() -> str:
    return datetime.now(UTC).strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex


def _now() -> tuple[str, int]:
    now = datetime.now(UTC)
    return now.strftime("%d/%b/%Y:%H:%M:%S +0000"), int(now.timestamp() * 1000)


def _is_utf8(body: bytes) -> bool:
    # API Gateway base64-encodes any body it cannot pass through as UTF-8 text.
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def is_text(content_type: str) -> bool:
    ct = content_type.lower()
    return ct.startswith("text/") or "json" in ct or "x-www-form-urlencoded" in ct or "xml" in ct


def http_event(
    method: str,
    path: str,
    *,
    body: bytes = b"",
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    query: str = "",
    route_key: str = "$default",
    path_parameters: dict[str, str] | None = None,
    authorizer: dict[str, Any] | None = None,
    source_ip: str = "127.0.0.1",
    domain: str = "localhost",
) -> dict[str, Any]:
    """An API Gateway HTTP API payload format 2.0 event."""
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in pairs:
        key = name.lower()
        if key == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    qs: dict[str, str] = {}
    for k, v in parse_qsl(query, keep_blank_values=True):
        qs[k] = f"{qs[k]},{v}" if k in qs else v
    text = is_text(merged.get("content-type", "application/json")) and _is_utf8(body)
    time_str, epoch = _now()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": query,
        "headers": merged,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "local",
            "domainName": domain,
            "domainPrefix": domain.split(".")[0],
            "http": {
                "method": method.upper(),
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": merged.get("user-agent", ""),
            },
            "requestId": base64.b32encode(secrets.token_bytes(10)).decode().rstrip("=")[:16],
            "routeKey": route_key,
            "stage": "$default",
            "time": time_str,
            "timeEpoch": epoch,
        },
        "isBase64Encoded": not text and bool(body),
    }
    if cookies:
        event["cookies"] = cookies
    if qs:
        event["queryStringParameters"] = qs
    if path_parameters:
        event["pathParameters"] = path_parameters
    if authorizer is not None:
        event["requestContext"]["authorizer"] = {"lambda": authorizer}
    if body:
        event["body"] = body.decode("utf-8") if text else base64.b64encode(body).decode()
    return event


def authorizer_event(
    route_arn_path: str, route_key: str, headers: Mapping[str, str], query: str = "", path: str = "/"
) -> dict[str, Any]:
    """An HTTP API Lambda authorizer REQUEST event (payload 2.0)."""
    base = http_event("GET", path, headers=headers, query=query, route_key=route_key)
    base["type"] = "REQUEST"
    base["routeArn"] = f"arn:aws:execute-api:{REGION}:{ACCOUNT_ID}:local/$default/{route_arn_path}"
    base["identitySource"] = [v for k, v in base["headers"].items() if k == "authorization"]
    return base


def new_connection_id() -> str:
    # API Gateway's ids look like "L0SM9cOFvHcCIhw=": random bytes in URL-safe base64 (they go in URL paths).
    return base64.urlsafe_b64encode(secrets.token_bytes(10)).decode()


def websocket_event(
    route_key: str,
    connection_id: str,
    *,
    body: str | None = None,
    query: str = "",
    headers: Mapping[str, str] | None = None,
    domain: str = "localhost",
    stage: str = "local",
    connected_at: int | None = None,
) -> dict[str, Any]:
    """An API Gateway WebSocket event for $connect, $disconnect or a message route."""
    event_type = {"$connect": "CONNECT", "$disconnect": "DISCONNECT"}.get(route_key, "MESSAGE")
    time_str, epoch = _now()
    context: dict[str, Any] = {
        "routeKey": route_key,
        "eventType": event_type,
        "extendedRequestId": uuid.uuid4().hex[:16],
        "requestTime": time_str,
        "messageDirection": "IN",
        "stage": stage,
        "connectedAt": connected_at or epoch,
        "requestTimeEpoch": epoch,
        "identity": {"sourceIp": "127.0.0.1"},
        "requestId": uuid.uuid4().hex[:16],
        "domainName": domain,
        "connectionId": connection_id,
        "apiId": "local",
    }
    if event_type == "MESSAGE":
        context["messageId"] = uuid.uuid4().hex[:16]
    event: dict[str, Any] = {"requestContext": context, "isBase64Encoded": False}
    if event_type == "CONNECT":
        event["headers"] = dict(headers or {})
        qs = dict(parse_qsl(query, keep_blank_values=True))
        if qs:
            event["queryStringParameters"] = qs
    if event_type == "DISCONNECT":
        context["disconnectStatusCode"] = 1001
        context["disconnectReason"] = "Client disconnected"
    if body is not None:
        event["body"] = body
    return event


def sqs_event(messages: Iterable[Mapping[str, Any]], queue_arn: str) -> dict[str, Any]:
    """An SQS event-source-mapping event from received messages (ReceiveMessage output)."""
    records = []
    for msg in messages:
        attrs = msg.get("Attributes", {})
        records.append(
            {
                "messageId": msg["MessageId"],
                "receiptHandle": msg["ReceiptHandle"],
                "body": msg["Body"],
                "attributes": {
                    "ApproximateReceiveCount": attrs.get("ApproximateReceiveCount", "1"),
                    "SentTimestamp": attrs.get("SentTimestamp", str(int(time.time() * 1000))),
                    "SenderId": attrs.get("SenderId", ACCOUNT_ID),
                    "ApproximateFirstReceiveTimestamp": attrs.get(
                        "ApproximateFirstReceiveTimestamp", str(int(time.time() * 1000))
                    ),
                },
                "messageAttributes": msg.get("MessageAttributes", {}),
                "md5OfBody": msg.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
        )
    return {"Records": records}
