"""What redaction costs the runner per CLI line, on the 2,000-line burst of `bench_runner.py` (`[[lines:2000]]`).

    uv run python bench/bench_redaction.py [--repeat 20] [--out bench/results/redaction.json]

The lines are the fake CLI's real output for `[[lines:2000]]` (a subprocess, stream-json). Each round parses all of
them the way `execution.pump_stdout` does, with and without a Redactor built from a realistic set of secrets (API
token, three webhook secrets, GitHub, Jira and Sentry tokens, an Anthropic key, the AWS role's secret key and
session token, five dynamic webhook secrets: every form of each, ~200 patterns). Rounds alternate, medians are
reported (and the best round of each, less exposed to a busy machine): microseconds per line without and with
redaction, the difference, and what it adds to the whole burst; and the time to build the Redactor.
One line in 50 holds a secret (those go through the regular expression, the others only through the prefilter).
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FAKE_CLAUDE = ROOT / "tests" / "fakes" / "fake_claude.py"


def burst_lines() -> list[bytes]:
    done = subprocess.run(
        [sys.executable, str(FAKE_CLAUDE), "-p", "[[lines:2000]]", "--output-format", "stream-json", "--verbose"],
        capture_output=True,
        check=True,
        timeout=120,
    )
    return [line for line in done.stdout.split(b"\n") if line]


def known_values() -> list[str]:
    values = [
        secrets.token_urlsafe(32),  # API token
        *(secrets.token_hex(20) for _ in range(3)),  # webhook secrets
        "ghp_" + secrets.token_urlsafe(27)[:36],
        "ATATT3x" + secrets.token_urlsafe(140),  # Jira API token
        "sntrys_" + secrets.token_urlsafe(48),
        "sk-ant-api03-" + secrets.token_urlsafe(70) + "-AA",
        secrets.token_urlsafe(30),  # AWS secret key
        secrets.token_urlsafe(600),  # AWS session token
        *(secrets.token_urlsafe(24) for _ in range(5)),  # dynamic webhooks
    ]
    return values


def measure(repeat: int) -> dict[str, Any]:
    from agent_machine.redaction import Redactor
    from runner.stream import RawLine, parse_line

    values = known_values()
    redactor = Redactor(values)
    lines = burst_lines()
    # One line in 50 prints a secret (an agent that cats a credentials file would print a few, not thousands).
    raws = []
    for i, line in enumerate(lines):
        if i % 50 == 25:
            line = line.replace(b"line ", f"line {values[i % len(values)]} ".encode(), 1)
        raws.append(RawLine(line, len(line)))

    def round_(with_redactor: bool) -> float:
        start = time.perf_counter()
        for raw in raws:
            parse_line(raw, redactor if with_redactor else None)
        return (time.perf_counter() - start) / len(raws) * 1e6

    plain: list[float] = []
    redacted: list[float] = []
    for _ in range(repeat):
        plain.append(round_(False))
        redacted.append(round_(True))
    p, r = statistics.median(plain), statistics.median(redacted)
    p_min, r_min = min(plain), min(redacted)
    build = time.perf_counter()
    Redactor(values)
    build_ms = (time.perf_counter() - build) * 1000
    return {
        "lines": len(raws),
        "mean_line_bytes": round(sum(len(x.data) for x in raws) / len(raws), 1),
        "patterns": redactor.count,
        "parse_us_per_line": round(p, 2),
        "parse_and_redact_us_per_line": round(r, 2),
        "redaction_us_per_line": round(r - p, 2),
        "redaction_ms_per_2000_line_burst": round((r - p) * len(raws) / 1000, 2),
        "best_round_us_per_line": {"parse": round(p_min, 2), "parse_and_redact": round(r_min, 2)},
        "redactor_build_ms": round(build_ms, 2),
        "repeat": repeat,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    results = measure(args.repeat)
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return results


if __name__ == "__main__":
    main()
