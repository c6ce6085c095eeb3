"""Powertools Logger and Metrics, configured once from settings (JSON logs unless LOG_JSON=false). The service is
the function's own POWERTOOLS_SERVICE_NAME (template.yaml: api, authorizer, ws, runner, dlq, sweeper,
runner-fargate), the metrics namespace POWERTOOLS_METRICS_NAMESPACE.

Two things differ from a plain Powertools Logger, both in the formatter:
- Every line is redacted (agent_machine.redaction): no secret value reaches a log, whatever a message or an
  exception quotes.
- Keys appended with `append_keys` (the WebSocket handler's `connection_id`, the Lambda context the entry points'
  `inject_lambda_context(clear_state=True)` adds) belong to the thread or asyncio task that appended them, as
  Powertools' thread-safe keys do, not to every line of the process. The local runtime runs several handlers at
  once in one process, in reused threads: one invocation's keys must never show on another's lines, and each
  entry point clears its thread's keys as it starts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from agent_machine import redaction
from agent_machine.settings import get_settings


class _Formatter(LambdaPowertoolsFormatter):
    """Powertools' JSON lines, redacted, with appended keys kept per thread / asyncio task."""

    def append_keys(self, **additional_keys: Any) -> None:
        self.thread_safe_append_keys(**additional_keys)

    def remove_keys(self, keys: Iterable[str]) -> None:
        # A new dict rather than Powertools' removal in place: a copied context (asyncio.to_thread, a task)
        # shares the dict with the context it was copied from.
        gone = set(keys)
        kept = {k: v for k, v in self.thread_safe_get_current_keys().items() if k not in gone}
        self.thread_safe_clear_keys()
        self.thread_safe_append_keys(**kept)

    def get_current_keys(self) -> dict[str, Any]:
        return {**self.log_format, **self.thread_safe_get_current_keys()}

    def clear_state(self) -> None:
        # Only this thread's keys: the process-wide ones (service, level, location, timestamp) are the
        # constructor's and never change, so there is nothing to reset (and no window with a half-built dict).
        self.thread_safe_clear_keys()

    def format(self, record: logging.LogRecord) -> str:
        return redaction.redact(super().format(record))


class _TextFormatter(_Formatter):
    """Human-readable lines for a terminal, keeping the correlation keys."""

    def serialize(self, log: Any) -> str:
        keys = " ".join(f"{k}={log[k]}" for k in ("task_id", "session_id", "agent") if log.get(k))
        return f"{log.get('timestamp', '')} {log.get('level', '')} {log.get('message', '')} {keys}".rstrip()


@cache
def get_logger() -> Logger:
    settings = get_settings()
    service = settings.service_name
    # The service is a constructor key of the formatter: process-wide, on every thread's lines. (It also names the
    # Python logger: logging.getLogger(get_logger().name).)
    formatter = _Formatter(service=service) if settings.log_json else _TextFormatter(service=service)
    return Logger(service=service, level=settings.log_level.upper(), logger_formatter=formatter)


@cache
def get_metrics() -> Metrics:
    settings = get_settings()
    return Metrics(namespace=settings.metrics_namespace, service=settings.service_name)


def quiet_noisy_loggers() -> None:
    for name in ("botocore", "boto3", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
