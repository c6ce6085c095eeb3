"""HTTP API Lambda REQUEST authorizer (payload format 2.0, simple responses) for /api/*.

`Authorization: Bearer <API_TOKEN>` -> {"isAuthorized": true, "context": {"actor": "api-token"}}; anything else
-> {"isAuthorized": false, "context": {"reason": "missing" | "invalid"}}. (API Gateway answers 401 itself when the
identity source header is missing, 403 when we deny.) Imports stay minimal: this runs before every API call and its
cold start is on the request path (no web framework, no boto3 unless the token is in Secrets Manager).
"""

from __future__ import annotations

from typing import Any

from agent_machine.api_token import TokenCheck, check_bearer
from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerEventV2,
    APIGatewayAuthorizerResponseV2,
)

ACTOR = "api-token"


def _authorization(event: APIGatewayAuthorizerEventV2) -> str | None:
    # `headers` (case-insensitive) when the event has them, else the identity source: the Authorization header.
    if event.get("headers"):
        header = event.headers.get("authorization")
        if header is not None:
            return str(header)
    return next(iter(event.identity_source), None)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        result = check_bearer(_authorization(APIGatewayAuthorizerEventV2(event)))
    except Exception:  # a secret lookup that failed (or a malformed event): fail closed
        result = TokenCheck.INVALID
    if result is TokenCheck.OK:
        return APIGatewayAuthorizerResponseV2(authorize=True, context={"actor": ACTOR}).asdict()
    return APIGatewayAuthorizerResponseV2(authorize=False, context={"reason": result.value}).asdict()
