"""Secret values: from the environment when set there, else from the SECRETS_NAME Secrets Manager JSON."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Literal, get_args

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

# Credentials that may be in the environment without being a setting of their own (the runner's AWS role's, the
# CLI's other ways to authenticate, report-back tokens read by other modules): redaction covers them too.
ENV_SECRET_NAMES = (
    "SENTRY_AUTH_TOKEN",
    "GH_TOKEN",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)

_CACHE_SECONDS = 300.0
_lock = threading.Lock()
_cached: tuple[float, dict[str, str]] | None = None
_generation = 0  # bumped by clear_cache: whoever derives something from the values knows to derive it again


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


def known_values(*, fetch: bool = True) -> list[str]:
    """Every secret value this process knows: the named secrets (environment first), every value of the
    SECRETS_NAME secret (all of them are secrets, named here or not) and ENV_SECRET_NAMES.

    fetch=False never calls Secrets Manager: only what an earlier call cached is used (for a log formatter, which
    must not block or recurse into the AWS client's own logging)."""
    settings = get_settings()
    values: list[str] = []
    for name in get_args(SecretName):
        value = getattr(settings, name)
        if value is not None and value.get_secret_value():
            values.append(str(value.get_secret_value()))
    values.extend(os.environ[name] for name in ENV_SECRET_NAMES if os.environ.get(name))
    if fetch:
        values.extend(_from_secrets_manager().values())
    else:
        cached = _cached  # one read of the reference: a concurrent refresh swaps the whole tuple
        if cached is not None:
            values.extend(cached[1].values())
    return values


def generation() -> int:
    """Changes whenever the cache is cleared (tests, a rotation): derived data is stale then."""
    return _generation


def clear_cache() -> None:
    global _cached, _generation
    with _lock:
        _cached = None
        _generation += 1
