"""Run every benchmark and merge the figures into one JSON; with --readme, also rewrite the README's table.

    uv run python bench/run_all.py                      (`make bench`: bench/results/last-run.json, untracked)
    uv run python bench/run_all.py --readme             (`make bench-readme`: bench/results/latest.json + README)
    uv run python bench/run_all.py --out /tmp/b.json --only cold_import

A plain run leaves the git tree clean: its JSON and the raw outputs (raw/) are ignored by git. Only --readme
writes what is committed: the record bench/results/latest.json and the README table that quotes it.

Each benchmark runs as a subprocess in its own process group with a time limit (the whole run stays under
TOTAL_BUDGET_SECONDS) and writes its own JSON (bench/results/raw/<name>.json, its output in <name>.log). They
run one after the other, never together: every figure is a ratio against a baseline measured in the same
process at the same time, or a count, but a busy neighbour still adds noise.

Figures, each `{"value", "unit", "baseline", "notes"}` plus `goal`/`met` where the issue sets a goal and extra
fields where useful:

| name                                      | from                                                         |
|-------------------------------------------|--------------------------------------------------------------|
| ingress_ack_p99_ratio_vs_bare             | bench_ingress.py (real API handler vs bare verify+send)       |
| ingress_throughput_rps                    | bench_throughput.py (signed webhooks through run-local)      |
| api_cold_import_ratio_vs_minimal_fastapi  | bench_cold_import.py (+ _vs_minimal_powertools, peak RSS)    |
| cli_line_to_ws_p95_ms                     | bench_throughput.py (CLI line -> WebSocket client, run-local) |
| aws_calls_per_task_ratio_vs_minimum       | bench_runner.py (botocore-counted calls vs design minimum)   |
| runner_overhead_ms                        | bench_runner.py (SQS event -> CLI spawn + CLI exit -> booked) |
| model_proxy_ttfb_p95_ratio                | bench_model_proxy.py (first byte via the model proxy / direct) |
| emulator_rss_growth_mb_per_100_tasks      | bench_memory.py (runtime + emulator RSS per 100 chats, run-local) |
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "bench" / "results"
RECORD = "latest.json"  # committed: the run the README's table quotes (written by --readme only)
LAST_RUN = "last-run.json"  # ignored by git: what a plain `make bench` writes
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
TOTAL_BUDGET_SECONDS = 570.0  # `make bench` must finish in under 10 minutes

Figure = dict[str, Any]
Raw = dict[str, Any]


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    args: tuple[str, ...]
    quick_args: tuple[str, ...]
    limit_seconds: float


BENCHMARKS = [
    Benchmark("ingress", "bench_ingress.py", ("--n", "300", "--warmup", "30"), ("--n", "80", "--warmup", "10"), 150),
    Benchmark("cold_import", "bench_cold_import.py", ("--runs", "15"), ("--runs", "5"), 150),
    Benchmark("runner", "bench_runner.py", (), ("--quick",), 120),
    Benchmark(
        "run_local",
        "bench_throughput.py",
        ("--seconds", "20", "--bursts", "3"),
        ("--seconds", "8", "--bursts", "1"),
        150,
    ),
    Benchmark("model_proxy", "bench_model_proxy.py", (), ("--quick",), 150),
    Benchmark(
        "memory",
        "bench_memory.py",
        ("--tasks", "200", "--warmup", "20"),
        ("--tasks", "60", "--warmup", "10", "--sample-every", "30"),
        300,  # the warm-up lasts at least the sweeper's first period (60 s)
    ),
]


@dataclass
class Outcome:
    name: str
    status: str  # ok | failed | timeout | skipped
    seconds: float
    data: Raw
    error: str = ""


def run(bench: Benchmark, raw_dir: Path, *, quick: bool, limit: float) -> Outcome:
    out = raw_dir / f"{bench.name}.json"
    log = raw_dir / f"{bench.name}.log"
    out.unlink(missing_ok=True)
    args = [
        sys.executable,
        str(ROOT / "bench" / bench.script),
        "--out",
        str(out),
        *(bench.quick_args if quick else bench.args),
    ]
    started = time.monotonic()
    print(f"[bench] {bench.name}: {' '.join(args[1:])} (limit {limit:.0f} s)", flush=True)
    with log.open("w") as fh:
        # Its own process group: on timeout the benchmark and everything it started (runtimes, moto) go.
        proc = subprocess.Popen(args, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            return Outcome(
                bench.name,
                "timeout",
                time.monotonic() - started,
                {},
                f"did not finish within {limit:.0f} s (see {log.relative_to(ROOT)})",
            )
    seconds = time.monotonic() - started
    if code != 0 or not out.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        return Outcome(bench.name, "failed", seconds, {}, f"exit {code}: {' | '.join(tail)[-400:]}")
    print(f"[bench] {bench.name}: done in {seconds:.0f} s", flush=True)
    return Outcome(bench.name, "ok", seconds, json.loads(out.read_text()))


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


# --------------------------------------------------------------------------------------------- figures


def figure(value: Any, unit: str, baseline: Any, notes: str, **extra: Any) -> Figure:
    return {"value": value, "unit": unit, "baseline": baseline, "notes": notes, **extra}


def with_goal(fig: Figure, goal: float | None, *, lower_is_better: bool = True) -> Figure:
    if goal is None:
        return fig
    value = fig.get("value")
    met = None if not isinstance(value, int | float) else (value <= goal if lower_is_better else value >= goal)
    return {**fig, "goal": goal, "met": met}


def missing(unit: str, why: str) -> Figure:
    return figure(None, unit, None, f"not measured: {why}")


def ingress_figures(raw: Raw) -> dict[str, Figure]:
    fig = dict(raw["ingress_ack_p99_ratio_vs_bare"])
    detail = raw.get("detail", {})
    fig["p50_ratio"] = raw.get("ingress_ack_p50_ratio_vs_bare", {}).get("value")
    fig["p95_ratio"] = raw.get("ingress_ack_p95_ratio_vs_bare", {}).get("value")
    fig["real_ms"] = detail.get("real")
    fig["bare_ms"] = detail.get("bare")
    fig["aws_calls_per_delivery"] = detail.get("aws_calls_per_delivery")
    return {"ingress_ack_p99_ratio_vs_bare": with_goal(fig, 1.5)}


def cold_figures(raw: Raw) -> dict[str, Figure]:
    main = dict(raw["api_cold_import_ratio_vs_minimal_fastapi"])
    powertools = raw.get("api_cold_import_ratio_vs_minimal_powertools", {})
    memory = raw.get("api_cold_peak_rss_mb", {})
    main["ratio_vs_minimal_powertools"] = powertools.get("value")
    main["ratio_vs_minimal_powertools_by_handler"] = powertools.get("by_handler")
    main["peak_rss_mb"] = memory.get("by_target")
    explain = raw.get("detail", {}).get("explain")
    if explain:
        main["why"] = {name: e.get("heaviest_imports_not_in_baseline") for name, e in explain.items()}
    out = {"api_cold_import_ratio_vs_minimal_fastapi": with_goal(main, 1.2)}
    if powertools:
        out["api_cold_import_ratio_vs_minimal_powertools"] = powertools
    if memory:
        out["api_cold_peak_rss_mb"] = memory
    return out


def run_local_figures(raw: Raw) -> dict[str, Figure]:
    return {
        "ingress_throughput_rps": raw["ingress_throughput_rps"],
        "cli_line_to_ws_p95_ms": with_goal(dict(raw["cli_line_to_ws_p95_ms"]), 50.0),
    }


def runner_figures(raw: Raw) -> dict[str, Figure]:
    """bench_runner.py's raw results (lag, aws_calls_per_task, overhead_ms) as the issue's figures. If it already
    writes a figure under its issue name, that one is taken as is."""
    out: dict[str, Figure] = {}
    per_task = raw.get("aws_calls_per_task") or []
    if isinstance(raw.get("aws_calls_per_task_ratio_vs_minimum"), dict):
        out["aws_calls_per_task_ratio_vs_minimum"] = with_goal(dict(raw["aws_calls_per_task_ratio_vs_minimum"]), 1.5)
    elif per_task:
        growth = [
            {
                "output_lines": row["output_lines"],
                "aws_calls": row["aws_calls"],
                "minimum": row["minimum_for_this_design"],
                "ratio": round(row["aws_calls"] / row["minimum_for_this_design"], 3),
                "one_write_per_line": row.get("one_write_per_line"),
                "flushes": row.get("flushes"),
                "by_operation": row.get("by_operation"),
            }
            for row in per_task
        ]
        worst = max(growth, key=lambda g: g["ratio"])
        out["aws_calls_per_task_ratio_vs_minimum"] = with_goal(
            figure(
                worst["ratio"],
                "ratio",
                worst["minimum"],
                f"AWS API calls (botocore before-call hook on the runner's session: DynamoDB, SQS, management API, S3) "
                f"for one chat task with N output lines and one subscribed connection, over the minimum of this "
                f"design for the observed run time and flushes (bench_runner.py's docstring); value = the worst N "
                f"(N={worst['output_lines']}), baseline = its minimum. Growth with N in `growth`: calls follow "
                f"flushes (time), not lines; one write + one post per line would be `one_write_per_line`.",
                growth=growth,
            ),
            1.5,
        )
    overhead = raw.get("overhead_ms")
    if isinstance(raw.get("runner_overhead_ms"), dict):
        out["runner_overhead_ms"] = raw["runner_overhead_ms"]
    elif overhead:
        spawn = overhead["sqs_event_to_cli_spawn"]["median"]
        book = overhead["cli_exit_to_task_booked"]["median"]
        out["runner_overhead_ms"] = figure(
            round(spawn + book, 1),
            "ms",
            None,
            "the runner's own time on a task's critical path, median of a few chat tasks: from the handler "
            "receiving the SQS event to spawning the CLI (task/agent/budget/session reads, claim, workspace, MCP "
            "bridge) plus from the CLI's exit to the task booked (transcript upload + booking transaction); "
            "moto server over HTTP, fake CLI.",
            sqs_receive_to_cli_spawn_ms=spawn,
            cli_exit_to_task_completed_ms=book,
            max_ms={
                "spawn": overhead["sqs_event_to_cli_spawn"].get("max"),
                "booked": overhead["cli_exit_to_task_booked"].get("max"),
            },
        )
    burst = (raw.get("lag") or {}).get("burst_2000")
    if burst:
        out["cli_line_to_ws_p95_ms_runner_only"] = figure(
            burst["lag_ms"]["p95"],
            "ms",
            None,
            "the same lag measured inside the runner (bench_runner.py): from the runner reading a line of the "
            "2,000-line burst to a local management-API stand-in receiving its frame; no gateway, no WebSocket.",
            p50_ms=burst["lag_ms"]["p50"],
            management_api_calls=burst.get("post_to_connection_calls"),
            output_writes=burst.get("output_put_item_calls"),
        )
    return out


def model_proxy_figures(raw: Raw) -> dict[str, Figure]:
    return {"model_proxy_ttfb_p95_ratio": with_goal(dict(raw["model_proxy_ttfb_p95_ratio"]), 1.05)}


def memory_figures(raw: Raw) -> dict[str, Figure]:
    return {"emulator_rss_growth_mb_per_100_tasks": with_goal(dict(raw["emulator_rss_growth_mb_per_100_tasks"]), 20.0)}


MERGERS: dict[str, tuple[Callable[[Raw], dict[str, Figure]], dict[str, str]]] = {
    "ingress": (ingress_figures, {"ingress_ack_p99_ratio_vs_bare": "ratio"}),
    "cold_import": (cold_figures, {"api_cold_import_ratio_vs_minimal_fastapi": "ratio"}),
    "runner": (runner_figures, {"aws_calls_per_task_ratio_vs_minimum": "ratio", "runner_overhead_ms": "ms"}),
    "run_local": (run_local_figures, {"ingress_throughput_rps": "webhooks/s", "cli_line_to_ws_p95_ms": "ms"}),
    "model_proxy": (model_proxy_figures, {"model_proxy_ttfb_p95_ratio": "ratio"}),
    "memory": (memory_figures, {"emulator_rss_growth_mb_per_100_tasks": "MB"}),
}
ORDER = [
    "ingress_ack_p99_ratio_vs_bare",
    "ingress_throughput_rps",
    "api_cold_import_ratio_vs_minimal_fastapi",
    "cli_line_to_ws_p95_ms",
    "aws_calls_per_task_ratio_vs_minimum",
    "runner_overhead_ms",
    "model_proxy_ttfb_p95_ratio",
    "emulator_rss_growth_mb_per_100_tasks",
]
GOALS = {
    "ingress_ack_p99_ratio_vs_bare": 1.5,
    "api_cold_import_ratio_vs_minimal_fastapi": 1.2,
    "cli_line_to_ws_p95_ms": 50.0,
    "aws_calls_per_task_ratio_vs_minimum": 1.5,
    "model_proxy_ttfb_p95_ratio": 1.05,
    "emulator_rss_growth_mb_per_100_tasks": 20.0,
}


def merge(outcomes: list[Outcome]) -> dict[str, Figure]:
    figures: dict[str, Figure] = {}
    for outcome in outcomes:
        merger, required = MERGERS[outcome.name]
        produced: dict[str, Figure] = {}
        if outcome.status == "ok":
            try:
                produced = merger(outcome.data)
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
                outcome.status, outcome.error = "failed", f"unexpected output: {exc!r}"
        for name, unit in required.items():
            if name not in produced:
                produced[name] = with_goal(
                    missing(unit, f"{outcome.name} {outcome.status}: {outcome.error}"), GOALS.get(name)
                )
        figures.update(produced)
    return {name: figures[name] for name in ORDER if name in figures} | {
        name: fig for name, fig in figures.items() if name not in ORDER
    }


def machine_info() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "load_average_at_start": [round(x, 2) for x in load] if load else None,
    }


# --------------------------------------------------------------------------------------------- README


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        text = f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.0f}"
        return text.rstrip("0").rstrip(".") if "." in text else text  # 200 stays 200; 1.50 becomes 1.5
    return str(value)


LABELS = {
    "machine_api.handler.handler": "API",
    "machine_api.authorizer.handler": "authorizer",
    "machine_ws.handler.handler": "WebSocket",
    "minimal_fastapi": "minimal FastAPI",
    "minimal_powertools": "minimal Powertools",
}


def readme_rows(figs: dict[str, Figure]) -> list[tuple[str, str, str, str]]:
    """(figure, value, baseline / context, goal) per row."""
    rows: list[tuple[str, str, str, str]] = []

    def goal(name: str) -> str:
        fig = figs.get(name, {})
        if "goal" not in fig:
            return ""
        mark = {True: "met", False: "**not met**", None: "—"}[fig.get("met")]
        unit = " ms" if fig.get("unit") == "ms" else ""
        return f"≤ {fmt(fig['goal'])}{unit}: {mark}"

    def get(name: str) -> Figure:
        return figs.get(name) or missing("", "absent")

    f = get("ingress_ack_p99_ratio_vs_bare")
    rows.append(
        (
            "webhook ack p99, real handler ÷ bare verify+send",
            fmt(f["value"]),
            f"bare p99 {fmt(f.get('baseline'), 1)} ms; p50 ratio {fmt(f.get('p50_ratio'))}",
            goal("ingress_ack_p99_ratio_vs_bare"),
        )
    )
    f = get("ingress_throughput_rps")
    latency = f.get("latency_ms") or {}
    answers = f.get("answers") or {}
    others = ", ".join(f"{n} answered {code}" for code, n in answers.items() if code != "202")
    rows.append(
        (
            "accepted signed webhooks (task created) through run-local, 4 clients",
            f"{fmt(f['value'], 1)} /s",
            f"ack p50 {fmt(latency.get('p50'), 0)} ms, p99 {fmt(latency.get('p99'), 0)} ms, runner draining"
            + (f"; not accepted: {others}" if others else "")
            + f"; deliveries recorded and ignored (no task): {fmt(f.get('ignored_deliveries_rps'), 0)} /s",
            "",
        )
    )
    f = get("api_cold_import_ratio_vs_minimal_fastapi")
    by = f.get("by_handler") or {}
    parts = ", ".join(f"{LABELS.get(name, name)} {fmt(v.get('ratio'))}" for name, v in by.items())
    rows.append(
        (
            "cold import + first invoke ÷ minimal FastAPI+Mangum (worst API function)",
            fmt(f["value"]),
            f"minimal {fmt(f.get('baseline'), 0)} ms; per function: {parts}; "
            f"÷ minimal Powertools resolver {fmt(f.get('ratio_vs_minimal_powertools'))}",
            goal("api_cold_import_ratio_vs_minimal_fastapi"),
        )
    )
    memory = get("api_cold_peak_rss_mb")
    if memory.get("by_target"):
        rows.append(
            (
                "cold-start peak RSS (MB)",
                fmt(memory["value"], 1),
                ", ".join(f"{LABELS.get(k, k)} {fmt(v, 0)}" for k, v in memory["by_target"].items()),
                "",
            )
        )
    f = get("cli_line_to_ws_p95_ms")
    rows.append(
        (
            "CLI line → WebSocket client, p95, 2,000-line burst, run-local",
            f"{fmt(f['value'], 1)} ms",
            f"p50 {fmt(f.get('p50_ms'), 1)} ms; {fmt(f.get('management_api_calls'))} management-API calls per burst",
            goal("cli_line_to_ws_p95_ms"),
        )
    )
    inner = figs.get("cli_line_to_ws_p95_ms_runner_only")
    if inner:
        rows.append(
            (
                "… the same inside the runner (no gateway/socket)",
                f"{fmt(inner['value'], 1)} ms",
                f"p50 {fmt(inner.get('p50_ms'), 1)} ms; {fmt(inner.get('management_api_calls'))} "
                f"PostToConnection, {fmt(inner.get('output_writes'))} output writes",
                "",
            )
        )
    f = get("aws_calls_per_task_ratio_vs_minimum")
    growth = f.get("growth") or []
    rows.append(
        (
            "AWS calls per chat task ÷ design minimum (worst N)",
            fmt(f["value"]),
            "calls (minimum) by N lines: "
            + ", ".join(f"{g['output_lines']}: {g['aws_calls']} ({g['minimum']})" for g in growth),
            goal("aws_calls_per_task_ratio_vs_minimum"),
        )
    )
    f = get("runner_overhead_ms")
    rows.append(
        (
            "runner overhead per task",
            f"{fmt(f['value'], 0)} ms",
            f"SQS event → CLI spawn {fmt(f.get('sqs_receive_to_cli_spawn_ms'), 0)} ms, CLI exit → booked "
            f"{fmt(f.get('cli_exit_to_task_completed_ms'), 0)} ms",
            "",
        )
    )
    f = get("model_proxy_ttfb_p95_ratio")
    added = f.get("added_ms") or {}
    busy = (f.get("busy_runner_loop") or {}).get("added_ms") or {}
    rows.append(
        (
            "model request, time to first byte through the model proxy ÷ direct, p95",
            fmt(f["value"], 3),
            f"direct p95 {fmt(f.get('baseline'), 0)} ms (upstream first byte at 300 ms); added p50 "
            f"{fmt(added.get('p50'), 2)} ms, p95 {fmt(added.get('p95'), 2)} ms; with a busy runner loop p95 "
            f"{fmt(busy.get('p95'), 2)} ms",
            goal("model_proxy_ttfb_p95_ratio"),
        )
    )
    f = get("emulator_rss_growth_mb_per_100_tasks")
    rss = f.get("rss_mb") or {}
    rows.append(
        (
            "memory growth (RSS) of the runtime and its emulator per 100 chat tasks, run-local",
            f"{fmt(f['value'], 1)} MB",
            f"data stored per 100 tasks {fmt(f.get('baseline'), 1)} MB; {fmt(rss.get('after_warmup'), 0)} → "
            f"{fmt(rss.get('end'), 0)} MB over {fmt(f.get('tasks'))} tasks",
            goal("emulator_rss_growth_mb_per_100_tasks"),
        )
    )
    return rows


def readme_block(result: dict[str, Any]) -> str:
    info = result["machine"]
    when = result["date"].replace("T", " ")[:16] + " UTC"
    lines = [
        START,
        f"Measured by `make bench-readme` on {when}: {info['platform']}, {info['cpus']} CPUs, Python {info['python']} "
        f"(load average {', '.join(str(x) for x in info.get('load_average_at_start') or [])} at the start; the "
        "machine is shared, so only ratios and counts are comparable between runs). Full figures and notes: "
        "`bench/results/latest.json`.",
        "",
        "| figure | value | baseline and context | goal |",
        "|---|---|---|---|",
    ]
    figures = {k: v for k, v in result.items() if isinstance(v, dict) and "value" in v}
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in readme_rows(figures)]
    failed = [
        f"{name} ({o['status']}: {o.get('error', '')[:120]})"
        for name, o in result["benchmarks"].items()
        if o["status"] != "ok"
    ]
    if failed:
        lines += ["", "Not measured in this run: " + "; ".join(failed)]
    lines.append(END)
    return "\n".join(lines)


def update_readme(result: dict[str, Any], path: Path = README) -> None:
    text = path.read_text()
    block = readme_block(result)
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n## Performance\n\n" + block + "\n"
    path.write_text(text)


# --------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, help=f"the merged JSON (default: {RESULTS.name}/{LAST_RUN}, with --readme {RECORD})"
    )
    parser.add_argument(
        "--only", action="append", choices=[b.name for b in BENCHMARKS], help="run only these benchmarks (repeatable)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    parser.add_argument(
        "--readme", action="store_true", help="rewrite README.md's table from this run (a full run only)"
    )
    args = parser.parse_args(argv)
    if args.readme and args.only:
        parser.error("--readme needs every benchmark (the table quotes them all): drop --only")
    out: Path = args.out or RESULTS / (RECORD if args.readme else LAST_RUN)

    raw_dir = out.parent / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    date = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    info = machine_info()
    outcomes: list[Outcome] = []
    for bench in BENCHMARKS:
        if args.only and bench.name not in args.only:
            continue
        left = TOTAL_BUDGET_SECONDS - (time.monotonic() - started)
        if left < 20:
            outcomes.append(Outcome(bench.name, "skipped", 0.0, {}, "the run's time budget was used up"))
            continue
        outcomes.append(run(bench, raw_dir, quick=args.quick, limit=min(bench.limit_seconds, left)))

    figures = merge(outcomes)
    result: dict[str, Any] = {
        "date": date,
        "machine": info,
        "duration_seconds": round(time.monotonic() - started, 1),
        "quick": args.quick,
        "benchmarks": {
            o.name: {"status": o.status, "seconds": round(o.seconds, 1), **({"error": o.error} if o.error else {})}
            for o in outcomes
        },
        **figures,  # the named figures, each {"value", "unit", "baseline", "notes", ...}
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if args.readme:
        update_readme(result, README)
    summary = {name: fig.get("value") for name, fig in figures.items()}
    print(
        json.dumps(
            {"duration_seconds": result["duration_seconds"], "figures": summary, "benchmarks": result["benchmarks"]},
            indent=2,
        )
    )
    return 0 if all(o.status == "ok" for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
