"""Session-wide fixtures: a real moto server (HTTP endpoint) and a freshly provisioned stack per test."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from agent_machine.observability import get_logger
from local_runtime.emulator import MotoServer, start_moto
from local_runtime.provision import Provisioned, provision, stack_environment

if TYPE_CHECKING:
    from tests.integration.fargate_support import Ecs

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
# The senders' real sample payloads (from ../shared/webhooks, kept here so a clean clone has them).
WEBHOOKS = ROOT / "tests" / "fixtures" / "webhooks"
FAKE_CLAUDE = ROOT / "tests" / "fakes" / "fake_claude.py"

TEST_SECRETS = {
    "API_TOKEN": "test-api-token-01",
    "GITHUB_WEBHOOK_SECRET": "It's a Secret to Everybody",
    "JIRA_WEBHOOK_SECRET": "It's a Secret to Everybody",
    "SENTRY_WEBHOOK_SECRET": "It's a Secret to Everybody",
}

# Dummy credentials: the emulator accepts anything, and nothing here may ever reach real AWS.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "POWERTOOLS_METRICS_NAMESPACE": "AgentMachineTest",
        "POWERTOOLS_DEV": "false",
        "LOG_JSON": "true",
    }
)


@pytest.fixture(autouse=True)
def main_thread_event_loop() -> None:
    """Every test starts with a current event loop in the main thread, as Lambda's Python runtime has one: Mangum
    (the API handler) needs it, and an earlier test's asyncio.run() leaves the thread without any."""
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        loop = None
    if loop is None or loop.is_closed():
        asyncio.set_event_loop(asyncio.new_event_loop())


@pytest.fixture(autouse=True)
def main_thread_log_keys() -> Iterator[None]:
    """A handler called directly on the main thread leaves its keys there (on Lambda the next invocation's
    clear_state drops them): cleared after each test, so a later test's lines start as a fresh thread's."""
    yield
    if get_logger.cache_info().currsize:  # never build the logger here: tests choose its settings
        get_logger().clear_state()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = start_moto()
    yield server
    server.stop()


def reset_caches() -> None:
    from agent_machine import aws, secrets
    from agent_machine.settings import get_settings

    get_settings.cache_clear()
    aws.reset_clients()
    secrets.clear_cache()


@pytest.fixture
def stack(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Provisioned]:
    """The template's tables, queues, bucket and secret under a fresh prefix, wired into the environment."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    prefix = f"t{uuid.uuid4().hex[:10]}"
    provisioned = provision(
        endpoint=moto_server.endpoint, prefix=prefix, secret_values=TEST_SECRETS, queue_visibility_timeout=30
    )
    for key, value in stack_environment(provisioned).items():
        monkeypatch.setenv(key, value)
    for key, value in TEST_SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CLAUDE_CLI_PATH", str(FAKE_CLAUDE))
    monkeypatch.setenv("FARGATE_MODE", "off")  # long runs stay in the handler unless a test asks for `ecs`
    reset_caches()
    yield provisioned
    reset_caches()


@pytest.fixture
def ecs(stack: Provisioned, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ecs]:
    """Long runs go to ECS in the emulator (FARGATE_MODE=ecs); the test runs the ECS task it started
    (tests/integration/fargate_support.py)."""
    from tests.integration.fargate_support import enable_ecs

    with enable_ecs(monkeypatch, moto_server.endpoint) as ecs:
        yield ecs
