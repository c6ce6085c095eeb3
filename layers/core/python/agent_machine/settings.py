"""Configuration read once from the environment (names are the ones the template and README document)."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# The machine's own shared secrets must not be guessable: shorter ones are refused at start-up.
MIN_SECRET_CHARS = 16
STRONG_SECRETS = ("API_TOKEN", "GITHUB_WEBHOOK_SECRET", "JIRA_WEBHOOK_SECRET", "SENTRY_WEBHOOK_SECRET")
# A WEB_FETCH_DOMAINS entry: a host name, `*.` + a host name (its subdomains), or `*` alone (any host).
_WEB_DOMAIN = re.compile(r"^(\*|(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*)$")


class WeakSecret(RuntimeError):
    """A configured secret is too short. Not a ValueError on purpose: pydantic would wrap it in a ValidationError
    that prints the input value, which is the secret."""


def weak_secret_problem(name: str, value: str | None) -> str | None:
    """Why `value` may not be the secret `name` (too short), or None when it may (unset counts as fine)."""
    if value is None or not value.strip() or len(value.strip()) >= MIN_SECRET_CHARS:
        return None
    return (
        f"{name} is {len(value.strip())} characters long; use at least {MIN_SECRET_CHARS} random characters "
        "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    machine_id: str = "local"
    log_level: str = "INFO"
    log_json: bool = True
    # Powertools' own variables, set per function by the template: the service names that function's logs and
    # metrics (unset: Powertools' own default).
    service_name: str = Field("service_undefined", validation_alias="POWERTOOLS_SERVICE_NAME")
    metrics_namespace: str = Field("AgentMachine", validation_alias="POWERTOOLS_METRICS_NAMESPACE")
    aws_region: str = Field("us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"))
    aws_endpoint_url: str | None = None

    # Resource names (the template passes them).
    tasks_table: str = "agent-machine-tasks"
    sessions_table: str = "agent-machine-sessions"
    output_table: str = "agent-machine-output"
    costs_table: str = "agent-machine-costs"
    connections_table: str = "agent-machine-connections"
    registry_table: str = "agent-machine-registry"
    events_table: str = "agent-machine-events"
    task_queue_url: str = ""
    task_dlq_url: str = ""
    artifacts_bucket: str = "agent-machine-artifacts"
    secrets_name: str | None = None

    websocket_management_url: str | None = None
    websocket_url: str | None = None
    dashboard_url: str | None = None

    # Secrets: explicit environment values win; otherwise they come from the SECRETS_NAME secret (JSON).
    api_token: SecretStr | None = None
    github_webhook_secret: SecretStr | None = None
    jira_webhook_secret: SecretStr | None = None
    sentry_webhook_secret: SecretStr | None = None
    github_token: SecretStr | None = None
    anthropic_api_key: SecretStr | None = None
    jira_api_token: SecretStr | None = None

    claude_cli_path: str = "claude"
    max_concurrent_tasks: int = Field(2, ge=1)
    task_timeout_seconds: int = Field(3600, ge=10)
    max_task_attempts: int = Field(3, ge=1)
    # A running task whose heartbeat is older than this lost its runner: the sweeper requeues it (or fails it after
    # MAX_TASK_ATTEMPTS runs). Several heartbeats (runner/config.py HEARTBEAT_SECONDS): a slow beat is no death.
    stale_after_seconds: float = Field(30.0, gt=0)
    task_budget_usd: float = Field(3.0, gt=0)
    daily_budget_usd: float = Field(50.0, gt=0)
    output_retention_days: int = Field(30, ge=1)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Webhook triggers.
    trigger_phrase: str = "@claude"
    trigger_label: str = "claude"
    allowed_author_associations: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["OWNER", "MEMBER", "COLLABORATOR"]
    )
    sentry_allow_legacy_unsigned: bool = False
    # Jira admin webhooks without a secret are refused unless this is set (fail closed).
    jira_allow_unsigned: bool = False
    # Jira accountIds trusted to act: empty = anyone may trigger with a mention or label, and only the issue's
    # reporter or assignee may approve a plan or stop; set = only these accounts may trigger, approve or stop.
    jira_allowed_account_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # GitHub bot logins (e.g. "renovate[bot]") whose label triggers are acted on; other bots are ignored.
    allowed_bots: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # AWS client timeouts. The API and WebSocket functions answer within seconds (GitHub gives a webhook 10 s),
    # so their clients fail fast; the runner asks for the "long" profile (botocore's defaults).
    aws_connect_timeout_seconds: float = Field(2.0, gt=0)
    aws_read_timeout_seconds: float = Field(5.0, gt=0)
    aws_max_attempts: int = Field(3, ge=1)
    # Against an emulator (AWS_ENDPOINT_URL set: moto, LocalStack) on a busy machine, the short profile waits this
    # long for an answer instead (connect: a third of it): a local emulator under load is no DynamoDB.
    aws_emulator_read_timeout_seconds: float = Field(30.0, gt=0)
    # "short" (the timeouts above) or "long" (botocore's 60 s, 4 attempts): the template sets "long" for the runner
    # (RunnerFunction and the Fargate task).
    aws_timeout_profile: Literal["short", "long"] = "short"

    # Long runs: "ecs" hands them to a Fargate task (ecs:RunTask), "off" keeps them on Lambda. ECS_SECURITY_GROUPS
    # may be empty (the subnets' default security group).
    fargate_mode: Literal["ecs", "off"] = "ecs"
    ecs_cluster: str | None = None
    ecs_task_definition: str | None = None
    ecs_container_name: str = "runner"
    ecs_subnets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    ecs_security_groups: Annotated[list[str], NoDecode] = Field(default_factory=list)

    github_api_url: str = "https://api.github.com"
    jira_base_url: str | None = None
    jira_email: str | None = None

    # The hosts the read-only agents (brain, planning) may WebFetch; empty = no WebFetch nor WebSearch at all.
    web_fetch_domains: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator(
        "cors_origins",
        "allowed_author_associations",
        "ecs_subnets",
        "ecs_security_groups",
        "jira_allowed_account_ids",
        "allowed_bots",
        mode="before",
    )
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("web_fetch_domains", mode="before")
    @classmethod
    def _domains(cls, value: object) -> object:
        domains = _split_csv(value)
        if not isinstance(domains, list):
            return domains
        cleaned = [str(d).strip().lower().rstrip(".") for d in domains]
        bad = [d for d in cleaned if not _WEB_DOMAIN.fullmatch(d)]
        if bad:
            # They become CLI permission rules (`WebFetch(domain:<host>)`): only plain host names may.
            raise ValueError(f"WEB_FETCH_DOMAINS: not host names: {', '.join(bad)} (e.g. docs.python.org,*.github.io)")
        return list(dict.fromkeys(cleaned))

    @field_validator("api_token", "github_webhook_secret", "jira_webhook_secret", "sentry_webhook_secret")
    @classmethod
    def _strong(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        problem = weak_secret_problem(str(info.field_name).upper(), value.get_secret_value() if value else None)
        if problem:
            raise WeakSecret(f"refusing to start: {problem}")
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
