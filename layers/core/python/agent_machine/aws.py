"""boto3 clients, created lazily and shared per process (cold starts pay only for what they use)."""

from __future__ import annotations

import threading
from functools import cache
from typing import TYPE_CHECKING, Any

from agent_machine.settings import get_settings

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient

_lock = threading.Lock()


@cache
def _session() -> Any:
    # Lazy: boto3 is ~270 modules; the API's and the authorizer's cold starts import this module without it.
    import boto3

    return boto3.session.Session()


def timeout_profile() -> str:
    """AWS_TIMEOUT_PROFILE: "short" for the request/response functions, "long" for the runner (the template's)."""
    return get_settings().aws_timeout_profile


def client_config(profile: str | None = None) -> Any:
    """The botocore Config of a client. Short: connect 2 s, read 5 s, 3 attempts (standard retry mode), so one
    slow AWS call cannot outlast a webhook sender's deadline; long: botocore's 60 s timeouts, 4 attempts."""
    from botocore.config import Config  # lazy: botocore stays off the API's cold start (~150 modules)

    settings = get_settings()
    if (profile or timeout_profile()) == "short":
        connect, read = settings.aws_connect_timeout_seconds, settings.aws_read_timeout_seconds
        if settings.aws_endpoint_url:  # an emulator (run-local, tests): slow under load, not down
            read = max(read, settings.aws_emulator_read_timeout_seconds)
            connect = max(connect, read / 3)
        return Config(
            connect_timeout=connect,
            read_timeout=read,
            retries={"mode": "standard", "total_max_attempts": settings.aws_max_attempts},
            max_pool_connections=64,
            # The service validates every request anyway; botocore's client-side pass over a webhook's transaction
            # costs ~0.5-1 ms of the ack (profiled), and the short profile exists for that path.
            parameter_validation=False,
        )
    return Config(retries={"mode": "standard", "max_attempts": 4}, max_pool_connections=64)


def _client(service: str, endpoint_url: str | None = None, *, profile: str | None = None) -> Any:
    settings = get_settings()
    config = client_config(profile)
    with _lock:  # boto3 sessions are not thread-safe while creating clients
        return _session().client(
            service,
            region_name=settings.aws_region,
            endpoint_url=endpoint_url or settings.aws_endpoint_url,
            config=config,
        )


@cache
def dynamodb() -> DynamoDBClient:
    return _client("dynamodb")  # type: ignore[no-any-return]


@cache
def sqs() -> SQSClient:
    return _client("sqs")  # type: ignore[no-any-return]


@cache
def s3() -> S3Client:
    return _client("s3")  # type: ignore[no-any-return]


@cache
def secretsmanager() -> SecretsManagerClient:
    return _client("secretsmanager")  # type: ignore[no-any-return]


@cache
def ecs() -> ECSClient:
    return _client("ecs")  # type: ignore[no-any-return]


@cache
def ws_management(endpoint_url: str) -> ApiGatewayManagementApiClient:
    # The management API lives at the WebSocket stage URL, never at AWS_ENDPOINT_URL.
    return _client("apigatewaymanagementapi", endpoint_url)  # type: ignore[no-any-return]


def reset_clients() -> None:
    """Forget cached clients (tests that point settings at a new endpoint)."""
    for fn in (_session, dynamodb, sqs, s3, secretsmanager, ecs, ws_management):
        fn.cache_clear()
