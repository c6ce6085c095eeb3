"""Secrets from the SECRETS_NAME secret (moto over HTTP, through Powertools Parameters on our own client): read once
per CACHE_SECONDS, the environment first, a rotation seen after clear_cache or the max age, and known_values
(fetch=False) never calling Secrets Manager."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from agent_machine import api_token, aws, secrets
from agent_machine.settings import get_settings
from local_runtime.provision import Provisioned

from tests.conftest import TEST_SECRETS, reset_caches

DEADLINE_SECONDS = 120.0  # a loaded machine is slow; the loop ends as soon as the value is seen


class Calls:
    """GetSecretValue calls made by the shared Secrets Manager client (a botocore hook: the real client, counted)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, **_: Any) -> None:
        self.count += 1


@pytest.fixture
def calls(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> Iterator[Calls]:
    for name in TEST_SECRETS:  # every value from Secrets Manager only
        monkeypatch.delenv(name, raising=False)
    reset_caches()
    counter = Calls()
    aws.secretsmanager().meta.events.register("before-call.secrets-manager.GetSecretValue", counter)
    yield counter


def _store(**values: str) -> None:
    aws.secretsmanager().put_secret_value(SecretId=get_settings().secrets_name or "", SecretString=json.dumps(values))


def test_values_are_read_once_per_cache_period(calls: Calls) -> None:
    assert calls.count == 0
    for _ in range(3):
        assert secrets.get_secret("api_token") == TEST_SECRETS["API_TOKEN"]
        assert secrets.get_secret("github_webhook_secret") == TEST_SECRETS["GITHUB_WEBHOOK_SECRET"]
    assert TEST_SECRETS["JIRA_WEBHOOK_SECRET"] in secrets.known_values(fetch=True)
    assert calls.count == 1


def test_the_environment_wins_without_a_call(calls: Calls, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKEN", "from-the-environment-0123456789")
    get_settings.cache_clear()
    assert secrets.get_secret("api_token") == "from-the-environment-0123456789"
    assert calls.count == 0


def test_empty_values_count_as_unset(calls: Calls) -> None:
    _store(API_TOKEN=TEST_SECRETS["API_TOKEN"], GITHUB_TOKEN="", JIRA_API_TOKEN="jira-token-in-the-secret")
    assert secrets.get_secret("github_token") is None
    assert secrets.get_secret("jira_api_token") == "jira-token-in-the-secret"
    assert "" not in secrets.known_values(fetch=False)


def test_a_rotation_is_seen_after_clear_cache(calls: Calls) -> None:
    assert secrets.get_secret("api_token") == TEST_SECRETS["API_TOKEN"]
    rotated = "rotated-api-token-0123456789"
    _store(API_TOKEN=rotated)
    assert secrets.get_secret("api_token") == TEST_SECRETS["API_TOKEN"]  # still the cached answer
    assert calls.count == 1
    before = secrets.generation()
    secrets.clear_cache()
    assert secrets.generation() != before
    assert secrets.get_secret("api_token") == rotated
    assert calls.count == 2
    # The token check follows the rotation: the old token is now refused, the new one accepted.
    assert api_token.check_token(rotated) is api_token.TokenCheck.OK
    assert api_token.check_token(TEST_SECRETS["API_TOKEN"]) is api_token.TokenCheck.INVALID


def test_a_rotation_is_seen_after_the_max_age(calls: Calls, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets, "CACHE_SECONDS", 1)
    assert secrets.get_secret("api_token") == TEST_SECRETS["API_TOKEN"]
    rotated = "rotated-by-age-0123456789"
    _store(API_TOKEN=rotated)
    deadline = time.monotonic() + DEADLINE_SECONDS
    while secrets.get_secret("api_token") != rotated:
        assert time.monotonic() < deadline, "the rotated value was never read again"
        time.sleep(0.05)  # poll interval only: the loop waits on the value, not on a fixed time
    assert calls.count >= 2


def test_known_values_without_fetch_never_call_secrets_manager(calls: Calls) -> None:
    _store(**TEST_SECRETS, ANTHROPIC_API_KEY="sk-ant-only-in-the-secret-0123")
    secrets.clear_cache()
    assert "sk-ant-only-in-the-secret-0123" not in secrets.known_values(fetch=False)
    assert calls.count == 0
    assert secrets.get_secret("anthropic_api_key") == "sk-ant-only-in-the-secret-0123"
    assert "sk-ant-only-in-the-secret-0123" in secrets.known_values(fetch=False)
    assert calls.count == 1
    secrets.clear_cache()
    assert "sk-ant-only-in-the-secret-0123" not in secrets.known_values(fetch=False)
    assert calls.count == 1


def test_a_secret_that_is_not_a_json_object_is_an_error(calls: Calls) -> None:
    aws.secretsmanager().put_secret_value(SecretId=get_settings().secrets_name or "", SecretString='["a list"]')
    with pytest.raises(ValueError, match="not a JSON object"):
        secrets.get_secret("api_token")
