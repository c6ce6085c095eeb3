"""Powertools Logger and Metrics, configured once from settings (JSON logs unless LOG_JSON=false)."""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from agent_machine.settings import get_settings

SERVICE = "agent-machine"
NAMESPACE = "AgentMachine"


class _TextFormatter(LambdaPowertoolsFormatter):
    """Human-readable lines for a terminal, keeping the correlation keys."""

    def serialize(self, log: Any) -> str:
        keys = " ".join(f"{k}={log[k]}" for k in ("task_id", "session_id", "agent") if log.get(k))
        return f"{log.get('timestamp', '')} {log.get('level', '')} {log.get('message', '')} {keys}".rstrip()


@cache
def get_logger() -> Logger:
    settings = get_settings()
    kwargs: dict[str, Any] = {"service": SERVICE, "level": settings.log_level.upper()}
    if not settings.log_json:
        kwargs["logger_formatter"] = _TextFormatter()
    return Logger(**kwargs)


@cache
def get_metrics() -> Metrics:
    return Metrics(namespace=NAMESPACE, service=SERVICE)


def quiet_noisy_loggers() -> None:
    for name in ("botocore", "boto3", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
