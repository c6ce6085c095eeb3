"""Powertools configuration: each function logs and counts under its own POWERTOOLS_SERVICE_NAME (no service is
hard-coded), the AWS timeout profile is a setting of its own (long for the runner only, whatever the service is
called), and nothing is traced (no Tracing, no X-Ray permission, no [tracer] extra)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from typing import Any

import pytest

from tests.unit.test_template import ROOT, props, resources, template

# The child: one log line and one metric through agent_machine.observability, printed as the JSON lines they are.
CHILD = """
from agent_machine.observability import get_logger, get_metrics
from aws_lambda_powertools.metrics import MetricUnit

logger = get_logger()
logger.info("hello", extra={"task_id": "t-1"})
metrics = get_metrics()
metrics.add_metric(name="Probe", unit=MetricUnit.Count, value=1)
metrics.flush_metrics()
"""


def _child_lines(env: dict[str, str]) -> list[dict[str, Any]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("POWERTOOLS_")}
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        env={**base, "LOG_JSON": "true", **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def _function_env(logical_id: str) -> dict[str, Any]:
    env: dict[str, Any] = props(logical_id).get("Environment", {}).get("Variables", {})
    return env


def _functions() -> list[str]:
    return [k for k, v in resources().items() if v["Type"] == "AWS::Serverless::Function"]


@pytest.mark.parametrize("service", ["ws", "runner-fargate"])
def test_logs_and_metrics_carry_the_functions_service(service: str) -> None:
    lines = _child_lines({"POWERTOOLS_SERVICE_NAME": service, "POWERTOOLS_METRICS_NAMESPACE": "ProbeNamespace"})
    (log,) = [line for line in lines if line.get("message") == "hello"]
    assert (log["service"], log["task_id"]) == (service, "t-1")
    (emf,) = [line for line in lines if "_aws" in line]
    (directive,) = emf["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "ProbeNamespace"
    assert emf["service"] == service and emf["Probe"] == [1.0]


def test_every_function_names_its_own_service() -> None:
    names = [_function_env(f).get("POWERTOOLS_SERVICE_NAME") for f in _functions()]
    assert None not in names and len(set(names)) == len(names), names
    (container,) = props("RunnerTaskDefinition")["ContainerDefinitions"]
    fargate = {item["Name"]: item["Value"] for item in container["Environment"]}
    assert fargate["POWERTOOLS_SERVICE_NAME"] not in names


def test_only_the_runner_uses_the_long_aws_timeout_profile() -> None:
    profiles = {f: _function_env(f).get("AWS_TIMEOUT_PROFILE") for f in _functions()}
    assert profiles.pop("RunnerFunction") == "long"
    assert set(profiles.values()) == {None}, profiles  # the setting's default: short
    (container,) = props("RunnerTaskDefinition")["ContainerDefinitions"]
    assert {"Name": "AWS_TIMEOUT_PROFILE", "Value": "long"} in container["Environment"]


def test_the_profile_does_not_follow_the_service_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_machine import aws
    from agent_machine.settings import get_settings

    monkeypatch.delenv("AWS_TIMEOUT_PROFILE", raising=False)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "runner")
    get_settings.cache_clear()
    try:
        assert aws.timeout_profile() == "short"
        monkeypatch.setenv("AWS_TIMEOUT_PROFILE", "long")
        get_settings.cache_clear()
        assert aws.timeout_profile() == "long"
    finally:
        get_settings.cache_clear()


def test_nothing_is_traced() -> None:
    text = (ROOT / "template.yaml").read_text()
    assert "xray:" not in text.lower() and "POWERTOOLS_TRACE" not in text
    assert "Tracing" not in template()["Globals"]["Function"]
    assert all("Tracing" not in props(f) for f in _functions())
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    powertools = [d for d in dependencies if d.startswith("aws-lambda-powertools")]
    assert powertools and all("[" not in d for d in powertools), powertools
