"""HTTP API Lambda REQUEST authorizer (payload format 2.0, simple responses) for /api/*.

`Authorization: Bearer <API_TOKEN>` -> {"isAuthorized": true, "context": {"actor": "api-token"}}; anything else
-> {"isAuthorized": false}. (API Gateway answers 401 itself when the identity source header is missing, 403 when
we deny.) Imports stay minimal: this runs before every API call and its cold start is on the request path.
"""

from __future__ import annotations

from typing import Any

from machine_api.auth import TokenCheck, check_bearer

ACTOR = "api-token"


def _authorization(event: dict[str, Any]) -> str | None:
    headers = event.get("headers") or {}
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == "authorization":
            return str(value)
    identity = event.get("identitySource") or []
    return str(identity[0]) if identity else None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        result = check_bearer(_authorization(event))
    except Exception:
        result = TokenCheck.INVALID
    if result is TokenCheck.OK:
        return {"isAuthorized": True, "context": {"actor": ACTOR}}
    return {"isAuthorized": False, "context": {"reason": result.value}}
