"""Secret values: from the environment when set there, else from the SECRETS_NAME Secrets Manager JSON.

Secrets Manager is read through Powertools Parameters (`SecretsProvider.get(..., transform="json", max_age=...)`),
which caches the parsed answer for CACHE_SECONDS. Its provider is built on our own Secrets Manager client
(aws.secretsmanager(): the endpoint, region and timeouts of every other client, so moto and LocalStack work too).
"""

from __future__ import annotations

import itertools
import os
from functools import cache
from typing import TYPE_CHECKING, Literal, get_args

from agent_machine import aws
from agent_machine.settings import get_settings

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

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

CACHE_SECONDS = 300  # a rotated value is seen within this long

_last: dict[str, str] | None = None  # the last answer read, for known_values(fetch=False); swapped whole, never edited
_generations = itertools.count(1)
_generation = 0  # bumped by clear_cache: whoever derives something from the values knows to derive it again


@cache
def _provider() -> SecretsProvider:
    # Imported here, not at the top: it imports boto3, and a function whose secrets are all in its environment
    # (the authorizer's usual cold start) never needs it.
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

    return SecretsProvider(boto3_client=aws.secretsmanager())


def _from_secrets_manager() -> dict[str, str]:
    global _last
    name = get_settings().secrets_name
    if not name:
        return {}
    parsed = _provider().get(name, transform="json", max_age=CACHE_SECONDS)
    if not isinstance(parsed, dict):
        raise ValueError(f"the secret {name} is not a JSON object")
    values = {str(k): str(v) for k, v in parsed.items() if v not in (None, "")}
    _last = values
    return values


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
        last = _last  # one read of the reference: a concurrent fetch swaps the whole dict
        if last is not None:
            values.extend(last.values())
    return values


def generation() -> int:
    """Changes whenever the cache is cleared (tests, a rotation): derived data is stale then."""
    return _generation


def clear_cache() -> None:
    """Forget the values read (and the provider: it holds the Secrets Manager client aws.reset_clients dropped)."""
    global _last, _generation
    _provider.cache_clear()
    _last = None
    _generation = next(_generations)  # atomic under the GIL, unlike `+= 1`
