"""Secret values: from the environment when set there, else from the SECRETS_NAME Secrets Manager JSON."""

from __future__ import annotations

import json
import threading
import time
from typing import Literal

from agent_machine import aws
from agent_machine.settings import get_settings

SecretName = Literal[
    "api_token",
    "github_webhook_secret",
    "jira_webhook_secret",
    "sentry_webhook_secret",
    "github_token",
    "anthropic_api_key",
    "jira_api_token",
]

_CACHE_SECONDS = 300.0
_lock = threading.Lock()
_cached: tuple[float, dict[str, str]] | None = None


def _from_secrets_manager() -> dict[str, str]:
    global _cached
    name = get_settings().secrets_name
    if not name:
        return {}
    with _lock:
        now = time.monotonic()
        if _cached is None or now - _cached[0] > _CACHE_SECONDS:
            raw = aws.secretsmanager().get_secret_value(SecretId=name)["SecretString"]
            parsed = json.loads(raw)
            _cached = (now, {str(k): str(v) for k, v in parsed.items() if v not in (None, "")})
        return _cached[1]


def get_secret(name: SecretName) -> str | None:
    value = getattr(get_settings(), name)
    if value is not None and value.get_secret_value():
        return str(value.get_secret_value())
    return _from_secrets_manager().get(name.upper())


def clear_cache() -> None:
    global _cached
    with _lock:
        _cached = None
