"""Fuzz the OpenAPI surface (schemathesis) through the running local runtime: no request gets a 5xx.

The schema is the runtime's own `/api/openapi.json`; every operation gets MAX_EXAMPLES generated requests
(schema-conforming and schema-violating ones mixed, derandomized so a failure replays), sent with the API token
through the gateway (authorizer, payload 2.0 event, Mangum, FastAPI) like any client's. Webhook routes get their
bodies unsigned, so they exercise the refusal paths; chat and registry routes really create things.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests  # type: ignore[import-untyped]  # schemathesis's HTTP client
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.e2e.conftest import RunningMachine, start_machine

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = 25


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[RunningMachine]:
    running = start_machine(
        tmp_path,
        persist=False,
        extra_env={
            "LOG_LEVEL": "WARNING",
            "MAX_CONCURRENT_TASKS": "1",
            "REPORT_BACK": "false",
            "GITHUB_API_URL": "http://127.0.0.1:9",
        },
    )
    try:
        yield running
    finally:
        running.stop()


def test_no_operation_answers_5xx(machine: RunningMachine) -> None:
    schema: Any = schemathesis.openapi.from_url(f"{machine.base_url}/api/openapi.json", timeout=30)
    auth = {"Authorization": f"Bearer {machine.api_token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    sent: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    failures: list[str] = []

    def fuzz(operation: Any) -> None:
        label = operation.label
        strategy = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
        )

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def exercise(case: Any) -> None:
            try:
                response = case.call(base_url=machine.base_url, headers=auth, timeout=30)
            except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, UnicodeError, ValueError):
                return  # a request the HTTP client itself refuses to send never reaches the machine
            sent[label] += 1
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                failures.append(
                    f"{label} -> {response.status_code} {response.text[:200]!r}\n"
                    f"  {case.as_curl_command(headers=auth)[:600]}"
                )

        exercise()

    for operation in operations:
        fuzz(operation)

    print(f"{sum(sent.values())} requests over {len(operations)} operations; statuses {dict(sorted(statuses.items()))}")
    assert sum(sent.values()) >= len(operations) * 5, sent
    assert sum(n for code, n in statuses.items() if 200 <= code < 300) > len(operations), statuses  # got past auth
    assert not failures, f"{len(failures)} requests answered 5xx (statuses {dict(statuses)}):\n" + "\n".join(
        failures[:10]
    )
