"""What reporting back needs beyond the shared settings: retry knobs and the Sentry API, read from the environment.

Kept here rather than in settings.py (not this package's file). Read on every call, not cached: it is two reads
per task, and tests change the environment between calls.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent_machine import secrets
from agent_machine.settings import Settings, get_settings

USER_AGENT = "agent-machine-reporting/1.0"


class ReportingSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    report_back: bool = True  # REPORT_BACK=false turns every report-back into a no-op (a dev stack, say)
    report_max_attempts: int = Field(4, ge=1, le=10)
    report_backoff_seconds: float = Field(1.0, ge=0, le=30)
    report_max_backoff_seconds: float = Field(10.0, ge=0, le=120)
    report_timeout_seconds: float = Field(10.0, gt=0, le=60)
    # One report call (all its targets and retries) stops retrying after this: it runs inside a task's time budget.
    report_deadline_seconds: float = Field(60.0, gt=0, le=600)
    sentry_api_url: str = "https://sentry.io"
    sentry_auth_token: SecretStr | None = None


def reporting_settings() -> ReportingSettings:
    return ReportingSettings()


def is_http_url(url: str | None) -> bool:
    if not url:
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def origin(url: str | None) -> str | None:
    """scheme://host[:port], lower-cased: what two base URLs must share to be the same site."""
    if not is_http_url(url):
        return None
    parts = urlsplit(url or "")
    return f"{parts.scheme}://{parts.netloc}".lower()


@dataclass(frozen=True)
class GitHubConfig:
    api_url: str
    token: str


@dataclass(frozen=True)
class JiraConfig:
    base_url: str
    email: str
    token: str

    @property
    def basic(self) -> str:
        return base64.b64encode(f"{self.email}:{self.token}".encode()).decode("ascii")


@dataclass(frozen=True)
class SentryConfig:
    api_url: str
    token: str


def github_config(settings: Settings | None = None) -> GitHubConfig | None:
    settings = settings or get_settings()
    token = (secrets.get_secret("github_token") or "").strip()  # a stored secret often ends in a newline
    if not token or not is_http_url(settings.github_api_url):
        return None
    return GitHubConfig(api_url=settings.github_api_url.rstrip("/"), token=token)


def jira_config(settings: Settings | None = None) -> JiraConfig | None:
    settings = settings or get_settings()
    if not settings.jira_email or not is_http_url(settings.jira_base_url):
        return None
    token = (secrets.get_secret("jira_api_token") or "").strip()
    if not token:
        return None
    return JiraConfig(
        base_url=(settings.jira_base_url or "").rstrip("/"), email=settings.jira_email.strip(), token=token
    )


def sentry_config(reporting: ReportingSettings) -> SentryConfig | None:
    token = reporting.sentry_auth_token.get_secret_value().strip() if reporting.sentry_auth_token else ""
    if not token or not is_http_url(reporting.sentry_api_url):
        return None
    base = reporting.sentry_api_url.rstrip("/")
    base = base.removesuffix("/api/0")  # accept either https://sentry.io or https://sentry.io/api/0
    return SentryConfig(api_url=base, token=token)
