"""The bare ingress function of bench_ingress.py: the floor for "verify + enqueue". A module of its own, without
side effects at import, so a local worker process can load it as a Lambda handler (`bench.ingress_bare.handler`) with
the API function's environment, exactly as the bench process calls it in-process."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from agent_machine import aws
from agent_machine.settings import get_settings

SECRET = "It's a Secret to Everybody"


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Verify the signature over the raw body (constant time), enqueue ONE message, answer."""
    raw = event.get("body") or ""
    body = base64.b64decode(raw) if event.get("isBase64Encoded") else raw.encode()
    headers = event.get("headers") or {}
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), str(headers.get("x-hub-signature-256", "")).encode()):
        return {"statusCode": 401, "body": '{"error":"bad signature"}'}
    delivery = headers.get("x-github-delivery", "")
    aws.sqs().send_message(QueueUrl=get_settings().task_queue_url, MessageBody=json.dumps({"delivery_id": delivery}))
    return {
        "statusCode": 202,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"status": "queued", "delivery_id": delivery}),
    }
