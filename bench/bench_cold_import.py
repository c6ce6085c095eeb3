"""Cold start of the API functions: fresh-process import + first invoke, against two minimal baselines.

    uv run python bench/bench_cold_import.py --out bench/results/cold_import.json [--runs 15]

Each sample is a new `python -c` process (as a Lambda cold start is a new runtime). Inside it, the clock starts
just before the handler's module is imported and stops when the first invocation has returned, so interpreter
start-up (the same for everyone) is left out and the figure is what the function's own code costs a cold
start. Peak memory is the child's `ru_maxrss`. The targets:

- `minimal_fastapi` (the baseline): `import boto3`, a FastAPI app with one GET route, `Mangum(app)`.
- `minimal_powertools`: `import boto3`, a Powertools `APIGatewayHttpResolver` with one GET route.
- `machine_api.handler` (ApiFunction): first invoke = GET /api/health (no AWS call).
- `machine_api.authorizer` (the HTTP API's Lambda authorizer): first invoke = a REQUEST event with the right
  bearer token (API_TOKEN is in the environment, so no AWS call).
- `machine_ws.handler` (WebSocketFunction): first invoke = `$connect` without a token (refused before any AWS
  call; a `$connect` with a token would also create a DynamoDB client and write, which the baselines don't do).

Events are built with `local_runtime.events` (`http_event`, `authorizer_event`, `websocket_event`) in the parent
and handed over as JSON; the child imports `LambdaContext` before its clock starts (the same for every target).
Targets are interleaved run by run so that noise from other processes hits them alike; medians are reported.

When a handler is slower than 1.2x the baseline, `python -X importtime` (a few runs, medians) explains why:
the modules it imports that the baseline does not, grouped by top-level package, and the first-party imports
that pull them in.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GOAL = 1.2
MARK = "@@cold@@"
API_TOKEN = "bench-cold-token"

MINIMAL_FASTAPI = """
import boto3
from fastapi import FastAPI
from mangum import Mangum

app = FastAPI()

@app.get("/api/health")
def health():
    return {"status": "ok"}

handler = Mangum(app, lifespan="off")
"""

MINIMAL_POWERTOOLS = """
import boto3
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver

app = APIGatewayHttpResolver()

@app.get("/api/health")
def health():
    return {"status": "ok"}

def handler(event, context):
    return app.resolve(event, context)
"""

# The child: read the event, start the clock, import (or build) the handler, invoke it once, report.
CHILD = f"""
import json, resource, sys, time
from local_runtime.events import LambdaContext
target, event_path = sys.argv[1], sys.argv[2]
with open(event_path) as fh:
    event = json.load(fh)
context = LambdaContext("ColdStart", timeout_seconds=30)
start = time.perf_counter()
if target == "minimal_fastapi":
    namespace = {{}}
    exec(compile({MINIMAL_FASTAPI!r}, "minimal_fastapi", "exec"), namespace)
    handler = namespace["handler"]
elif target == "minimal_powertools":
    namespace = {{}}
    exec(compile({MINIMAL_POWERTOOLS!r}, "minimal_powertools", "exec"), namespace)
    handler = namespace["handler"]
else:
    import importlib
    module_name, _, attribute = target.rpartition(".")
    handler = getattr(importlib.import_module(module_name), attribute)
imported = time.perf_counter()
result = handler(event, context)
done = time.perf_counter()
status = result.get("statusCode", result.get("isAuthorized")) if isinstance(result, dict) else None
print({MARK!r} + json.dumps({{
    "import_ms": (imported - start) * 1000,
    "first_invoke_ms": (done - imported) * 1000,
    "total_ms": (done - start) * 1000,
    "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "status": status,
    "modules": len(sys.modules),
}}), flush=True)
"""


@dataclass(frozen=True)
class Target:
    name: str
    label: str
    event: str  # key into the events built by make_events
    expect: object  # statusCode (or isAuthorized) the first invoke must answer


TARGETS = [
    Target("minimal_fastapi", "minimal FastAPI + Mangum + boto3", "health", 200),
    Target("minimal_powertools", "minimal Powertools APIGatewayHttpResolver + boto3", "health", 200),
    Target("machine_api.handler.handler", "ApiFunction (machine_api.handler)", "health", 200),
    Target("machine_api.authorizer.handler", "authorizer (machine_api.authorizer)", "authorizer", True),
    Target("machine_ws.handler.handler", "WebSocketFunction (machine_ws.handler)", "ws_connect", 401),
]
BASELINE = "minimal_fastapi"
POWERTOOLS = "minimal_powertools"
REAL = [t.name for t in TARGETS if t.name not in (BASELINE, POWERTOOLS)]


def make_events() -> dict[str, dict[str, Any]]:
    sys.path.insert(0, str(ROOT / "infra"))
    from local_runtime.events import authorizer_event, http_event, websocket_event

    headers = {"user-agent": "bench", "accept": "application/json"}
    return {
        "health": http_event("GET", "/api/health", headers=headers, route_key="GET /api/health"),
        "authorizer": authorizer_event(
            "GET/api/status", "GET /api/status", {**headers, "authorization": f"Bearer {API_TOKEN}"}, path="/api/status"
        ),
        "ws_connect": websocket_event("$connect", "Q29sZFN0YXJ0MTI=", headers=headers),
    }


def child_env() -> dict[str, str]:
    """What a Lambda has: region, (dummy) credentials, its settings; nothing that points at an emulator."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_", "PYTHON"))}
    env.update(
        {
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_LAMBDA_FUNCTION_NAME": "ColdStart",
            "API_TOKEN": API_TOKEN,
            "LOG_LEVEL": "WARNING",
            "POWERTOOLS_SERVICE_NAME": "agent-machine",
            "POWERTOOLS_METRICS_NAMESPACE": "AgentMachineBench",
        }
    )
    return env


def run_child(target: Target, event_path: Path, env: dict[str, str]) -> dict[str, Any]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, target.name, str(event_path)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    wall = (time.perf_counter() - started) * 1000
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{target.name}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    sample: dict[str, Any] = json.loads(lines[-1][len(MARK) :])
    if sample["status"] != target.expect:
        raise RuntimeError(f"{target.name}: first invoke answered {sample['status']!r}, expected {target.expect!r}")
    sample["process_wall_ms"] = wall
    return sample


# --------------------------------------------------------------------------------------------- import times


def importtime(code: str, env: dict[str, str]) -> list[tuple[str, int, int, int]]:
    """(module, depth, self_us, cumulative_us) in import order, from `python -X importtime -c code`."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows: list[tuple[str, int, int, int]] = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        head, cumulative, raw = line.split("|", 2)
        self_us = head.split(":", 1)[1]
        depth = (len(raw) - len(raw.lstrip(" ")) - 1) // 2  # one space, then two per level
        rows.append((raw.strip(), depth, int(self_us), int(cumulative)))
    return rows


def import_code(target: str) -> str:
    if target == BASELINE:
        return MINIMAL_FASTAPI
    if target == POWERTOOLS:
        return MINIMAL_POWERTOOLS
    return f"import {target.rpartition('.')[0]}"


def explain(target: str, env: dict[str, str], runs: int = 3) -> dict[str, Any]:
    """Which imports make `target` heavier than the baseline (medians over a few -X importtime runs)."""
    baseline_modules: set[str] = set()
    for _ in range(2):
        baseline_modules |= {row[0] for row in importtime(import_code(BASELINE), env)}
    self_times: dict[str, list[int]] = defaultdict(list)
    cumulative: dict[str, list[int]] = defaultdict(list)
    parents: dict[str, str] = {}
    for _ in range(runs):
        rows = importtime(import_code(target), env)
        # importtime prints a module after its children: the parent of a row is the next row one level up.
        for i, (name, depth, self_us, cum_us) in enumerate(rows):
            self_times[name].append(self_us)
            cumulative[name].append(cum_us)
            for later in rows[i + 1 :]:
                if later[1] < depth:
                    parents.setdefault(name, later[0])
                    break
    extra = {name: statistics.median(v) for name, v in self_times.items() if name not in baseline_modules}
    by_package: dict[str, float] = defaultdict(float)
    for name, us in extra.items():
        by_package[name.split(".")[0]] += us
    first_party = ("machine_api", "machine_ws", "agent_machine")

    def pulled_by(name: str) -> str:
        """The nearest first-party module above `name` in the import tree (who asked for it)."""
        seen = name
        while seen in parents:
            seen = parents[seen]
            if seen.startswith(first_party):
                return seen
        return seen

    heavy_extra = sorted(((name, us) for name, us in extra.items()), key=lambda x: -x[1])
    edges: dict[str, float] = {}
    for name in extra:
        parent = parents.get(name, "")
        if name.startswith(first_party) or (parent in extra and not parent.startswith(first_party)):
            continue
        # `name` is the root of a third-party subtree the baseline does not import: charge it to who asked.
        edges[f"{pulled_by(name)} -> {name}"] = statistics.median(cumulative[name])
    total_self = sum(statistics.median(v) for v in self_times.values())
    first_party_rows = sorted(
        (
            (name, round(statistics.median(v) / 1000, 1))
            for name, v in cumulative.items()
            if name.startswith(first_party)
        ),
        key=lambda x: -x[1],
    )
    return {
        "target": target,
        "modules_imported": len(self_times),
        "modules_not_in_baseline": len(extra),
        "import_self_total_ms": round(total_self / 1000, 1),
        "not_in_baseline_self_total_ms": round(sum(extra.values()) / 1000, 1),
        "not_in_baseline_by_package_ms": {
            k: round(v / 1000, 1) for k, v in sorted(by_package.items(), key=lambda x: -x[1])[:15]
        },
        "heaviest_imports_not_in_baseline": [
            f"{a}  ({b / 1000:.1f} ms cumulative)" for a, b in sorted(edges.items(), key=lambda x: -x[1])[:15]
        ],
        "heaviest_modules_not_in_baseline_self_ms": {name: round(us / 1000, 1) for name, us in heavy_extra[:15]},
        "first_party_cumulative_ms": dict(first_party_rows[:15]),
    }


# --------------------------------------------------------------------------------------------- main


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    def med(key: str) -> float:
        return round(float(statistics.median(float(s[key]) for s in samples)), 1)

    return {
        "median_total_ms": med("total_ms"),
        "median_import_ms": med("import_ms"),
        "median_first_invoke_ms": med("first_invoke_ms"),
        "median_process_wall_ms": med("process_wall_ms"),
        "min_total_ms": round(min(s["total_ms"] for s in samples), 1),
        "peak_rss_mb": round(statistics.median(s["max_rss_kb"] for s in samples) / 1024, 1),
        "modules": samples[0]["modules"],
        "runs": len(samples),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cold_import.json")
    parser.add_argument("--runs", type=int, default=15, help="fresh processes per target")
    parser.add_argument(
        "--explain",
        choices=["auto", "always", "never"],
        default="auto",
        help="-X importtime analysis of handlers over the goal (auto), of all, or none",
    )
    args = parser.parse_args(argv)

    env = child_env()
    events = make_events()
    samples: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
        paths = {}
        for key, event in events.items():
            paths[key] = Path(tmp) / f"{key}.json"
            paths[key].write_text(json.dumps(event))
        for target in TARGETS:  # warm the file cache and .pyc files; not counted
            run_child(target, paths[target.event], env)
        rng = random.Random(7)
        for _ in range(args.runs):
            order = TARGETS[:]
            rng.shuffle(order)
            for target in order:
                samples[target.name].append(run_child(target, paths[target.event], env))

    stats = {t.name: {"label": t.label, **summarise(samples[t.name])} for t in TARGETS}
    base = stats[BASELINE]["median_total_ms"]
    powertools = stats[POWERTOOLS]["median_total_ms"]
    for name in [*REAL, POWERTOOLS]:
        stats[name]["ratio_vs_minimal_fastapi"] = round(stats[name]["median_total_ms"] / base, 3)
        stats[name]["ratio_vs_minimal_powertools"] = round(stats[name]["median_total_ms"] / powertools, 3)
    worst = max(REAL, key=lambda n: stats[n]["ratio_vs_minimal_fastapi"])
    explained = {}
    for name in REAL:
        if args.explain == "always" or (args.explain == "auto" and stats[name]["ratio_vs_minimal_fastapi"] > GOAL):
            explained[name] = explain(name, env)

    result = {
        "api_cold_import_ratio_vs_minimal_fastapi": {
            "value": stats[worst]["ratio_vs_minimal_fastapi"],
            "unit": "ratio",
            "baseline": base,
            "notes": (
                f"worst of the API functions' handler modules ({worst}); fresh `python -c` process per "
                f"sample, median of {args.runs} interleaved runs each, clock from just before the import "
                "to the first invoke's return (interpreter start-up excluded); baseline = median ms of a "
                "minimal FastAPI + Mangum 'hello' with boto3 imported. Goal <= 1.2."
            ),
            "by_handler": {
                name: {
                    "ratio": stats[name]["ratio_vs_minimal_fastapi"],
                    "median_ms": stats[name]["median_total_ms"],
                    "peak_rss_mb": stats[name]["peak_rss_mb"],
                }
                for name in REAL
            },
        },
        "api_cold_import_ratio_vs_minimal_powertools": {
            "value": stats[worst]["ratio_vs_minimal_powertools"],
            "unit": "ratio",
            "baseline": powertools,
            "notes": f"the same ({worst}) over a minimal Powertools APIGatewayHttpResolver handler with boto3.",
            "by_handler": {name: stats[name]["ratio_vs_minimal_powertools"] for name in REAL},
        },
        "api_cold_peak_rss_mb": {
            "value": stats[worst]["peak_rss_mb"],
            "unit": "MB",
            "baseline": stats[BASELINE]["peak_rss_mb"],
            "notes": "peak RSS (ru_maxrss, median) of the child after import + first invoke, of the same handler; "
            "baseline = the minimal FastAPI handler's.",
            "by_target": {name: s["peak_rss_mb"] for name, s in stats.items()},
        },
        "detail": {"targets": stats, "explain": explained, "python": platform.python_version(), "runs": args.runs},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
