"""The local machine the run-local benchmarks start: `python -m local_runtime` as a child process
(local_runtime.harness), with the benchmarks' own secrets and the fake CLI."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from local_runtime import harness
from local_runtime.harness import RunningMachine

ROOT = Path(__file__).resolve().parents[1]
FAKE_CLAUDE = ROOT / "tests" / "fakes" / "fake_claude.py"  # a file the CLI path points at, not an import
BENCH_SECRETS = {
    "API_TOKEN": "bench-api-token-01",
    "GITHUB_WEBHOOK_SECRET": "bench-github-webhook-secret",
    "JIRA_WEBHOOK_SECRET": "bench-jira-webhook-secret",
    "SENTRY_WEBHOOK_SECRET": "bench-sentry-webhook-secret",
}


def start_machine(tmp: Path, *, extra_env: Mapping[str, str] | None = None, persist: bool = True) -> RunningMachine:
    return harness.start_machine(tmp, secrets=BENCH_SECRETS, cli_path=FAKE_CLAUDE, extra_env=extra_env, persist=persist)
