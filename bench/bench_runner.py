"""Runner benchmark: output lag, AWS calls per task, and the runner's own overhead.

    uv run python bench/bench_runner.py --out bench/results/runner.json [--quick]

Everything runs for real except AWS itself: a moto server over HTTP (the template's tables, queues, bucket),
the fake `claude` CLI as a subprocess, and a local HTTP receiver standing in for the API Gateway management API
(`POST /@connections/{id}`, real sockets, in its own process: bench/receiver_process.py). The runner's Lambda
handler is called the way the SQS event source calls it.

(a) Lag from a CLI line to its WebSocket frame, under a 2,000-line burst (`[[lines:2000]]`, 8 tasks, 3 with
    --quick) and a paced stream (`[[lines:2000:1]]`, 1 ms apart): from the moment the runner read the line from
    the CLI's pipe to the moment the receiver got the frame carrying it (CLOCK_MONOTONIC, one clock for both
    processes). Reported: p50/p95/max over every line of every task (and each task's p95), and the number of
    management-API calls (PostToConnection) and output writes per task of 2,000 lines.

(b) AWS API calls for one chat task with N output lines (N = 0, 10, 100, 1000), one subscribed connection,
    counted with a botocore `before-call` hook on the runner's boto3 session, against the minimum this design
    needs. For a task whose CLI runs T seconds, whose events go out in F flushes, watched by C connections:

        reads before the run    4   GetItem task, GetItem agent (registry), GetItem day total (daily cap),
                                    GetItem session (the CLI session to resume)
                                2   Query skills (registry), Query tasks by_session (one message of a chat
                                    at a time)
        claim                   1   UpdateItem queued -> running (conditional, counts the attempt)
        heartbeat           floor(T)  UpdateItem every second (it also reads stop requests)
        output                  F   PutItem, one per flush (<= 10 ms of output or 500 events); F >= 3 for any
                                    task: `started` at once, the CLI's output, the terminal event after booking
        push                F x C   PostToConnection (more when a flush exceeds one 120 KB frame)
        subscriber lookups  2 x ceil(T) + 1   Query per topic (session#, task#), cached 1 s, only while there
                                    is something to push; `all` (dashboards) for the lifecycle events
        transcript              1   S3 PutObject (+1 S3 GetObject before a --resume)
        booking                 1   TransactWriteItems (task, session totals, 4 cost counters; conditional)
        (secret)                1   GetSecretValue once per container per 5 minutes, only when ANTHROPIC_API_KEY
                                    is not in the environment

    minimum = 9 + floor(T) + F x (1 + C) + 2 x ceil(T) + 1. It does not grow with the number of lines (only
    with time and flushes); writing and pushing each line would cost 2 x N calls more (`one_write_per_line`).

(c) Runner overhead: from the handler receiving the SQS event to spawning the CLI (reads, claim, workspace,
    MCP bridge), and from the CLI's exit to the task being booked (transcript upload + transaction), median of
    a few runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent_machine import aws, secrets  # noqa: E402
from agent_machine.domain import submission  # noqa: E402
from agent_machine.models import Subscription, Task  # noqa: E402
from agent_machine.settings import get_settings  # noqa: E402
from agent_machine.store import connections, tasks  # noqa: E402
from local_runtime.emulator import MotoServer, start_moto  # noqa: E402
from local_runtime.events import LambdaContext, sqs_event  # noqa: E402
from local_runtime.harness import receive_task_message as receive  # noqa: E402
from local_runtime.provision import Provisioned, provision, stack_environment  # noqa: E402
from runner import lambda_handler, output, run  # noqa: E402

FAKE_CLAUDE = ROOT / "tests" / "fakes" / "fake_claude.py"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


class Counting:
    """Counts AWS API calls made through the runner's boto3 session (`before-call` fires once per call)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.enabled = False

    def install(self) -> None:
        aws.reset_clients()
        session = aws._session()  # the session every client of the process is made from
        session.events.register("before-call", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        if self.enabled:
            self.calls[f"{model.service_model.service_name}.{model.name}"] += 1

    @contextmanager
    def measuring(self) -> Iterator[Counter[str]]:
        self.calls = Counter()
        self.enabled = True
        try:
            yield self.calls
        finally:
            self.enabled = False


class Capture:
    """Keeps the runs' TaskRun and EventStream objects (for timings) by wrapping their constructors."""

    def __init__(self) -> None:
        self.runs: list[run.TaskRun] = []
        self.streams: list[output.EventStream] = []
        original_run, original_stream = run.TaskRun.__init__, output.EventStream.__init__
        capture = self

        def run_init(self: run.TaskRun, *args: Any, **kwargs: Any) -> None:
            original_run(self, *args, **kwargs)
            capture.runs.append(self)

        def stream_init(self: output.EventStream, *args: Any, **kwargs: Any) -> None:
            original_stream(self, *args, **kwargs)
            self.track_latency = True
            capture.streams.append(self)

        run.TaskRun.__init__ = run_init  # type: ignore[method-assign]
        output.EventStream.__init__ = stream_init  # type: ignore[method-assign]


class ChildReceiver:
    """The management-API stand-in (bench/receiver_process.py) as a child process, so its threads do not take
    the runner's GIL while the runner is being measured."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "receiver_process.py")], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def snapshot(self, start: int = 0) -> tuple[int, list[tuple[float, str, str]]]:
        """(calls so far, the arrivals from the `start`-th on)."""
        with urllib.request.urlopen(f"{self.url}/arrivals?from={start}", timeout=30) as resp:
            answer = json.loads(resp.read())
        return int(answer["calls"]), [(float(a), str(c), str(b)) for a, c, b in answer["arrivals"]]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Bench:
    def __init__(self, moto: MotoServer, work: Path) -> None:
        self.moto = moto
        self.receiver = ChildReceiver()
        prefix = f"b{uuid.uuid4().hex[:8]}"
        os.environ.update(
            {
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": moto.endpoint,
            }
        )
        self.stack: Provisioned = provision(
            endpoint=moto.endpoint, prefix=prefix, queue_visibility_timeout=60, secret_values={"API_TOKEN": "bench"}
        )
        os.environ.update(stack_environment(self.stack))
        os.environ.update(
            {
                "CLAUDE_CLI_PATH": str(FAKE_CLAUDE),
                "FARGATE_MODE": "off",  # the runner itself is measured: nothing handed to an ECS task
                "LOG_LEVEL": "WARNING",
                "RUNNER_WORK_ROOT": str(work),
                "WEBSOCKET_MANAGEMENT_URL": self.receiver.url,
                "ANTHROPIC_API_KEY": "sk-ant-bench",
                "POWERTOOLS_METRICS_NAMESPACE": "AgentMachineBench",
            }
        )
        get_settings.cache_clear()
        secrets.clear_cache()
        self.counting = Counting()
        self.counting.install()
        self.capture = Capture()

    def close(self) -> None:
        self.receiver.stop()

    def chat(self, prompt: str, connection: str | None = "watcher") -> tuple[Task, float, Counter[str]]:
        """One task through the handler; returns the stored task, the handler's start time and its AWS calls."""
        task, session = submission.new_task(prompt)
        if connection:
            connections.add(connection)
            connections.subscribe(connection, Subscription(kind="session", id=task.session_id))
        submission.submit(task, session)
        message = receive(task.task_id)
        event = sqs_event([message], self.stack.resolver.attrs["TaskQueue.Arn"])
        with self.counting.measuring() as calls:
            started = time.monotonic()
            lambda_handler.handler(event, LambdaContext("RunnerFunction", timeout_seconds=900))
        aws.sqs().delete_message(QueueUrl=get_settings().task_queue_url, ReceiptHandle=message["ReceiptHandle"])
        done = tasks.get(task.task_id)
        assert done is not None and done.status.value == "completed", (done.status, done.error) if done else None
        return done, started, Counter(calls)

    def lag(self, prompt: str, runs: int = 1) -> dict[str, Any]:
        """The lag of every line over `runs` tasks of `prompt` (one burst is too few lines for a stable p95 on a
        busy machine); the calls and flushes are per task (the mean)."""
        lags: list[float] = []
        per_run_p95: list[float] = []
        events = posts = writes = flushes = duration = 0
        for _ in range(runs):
            connection = f"lag-{uuid.uuid4().hex[:6]}"
            before, _ = self.receiver.snapshot(start=sys.maxsize)
            done, _, calls = self.chat(prompt, connection)
            stream = self.capture.streams[-1]
            after, arrivals = self.receiver.snapshot()
            arrived: dict[int, float] = {}
            for at, cid, body in arrivals:
                if cid != connection:
                    continue
                frame = json.loads(body)
                for event in frame.get("events", []):
                    arrived.setdefault(event["seq"], at)
            run_lags = [(arrived[seq] - read) * 1000 for seq, read in stream.first_emit_at.items() if seq in arrived]
            lags += run_lags
            per_run_p95.append(round(percentile(run_lags, 95), 2))
            events += len(stream.first_emit_at)
            posts += after - before
            writes += calls.get("dynamodb.PutItem", 0)
            flushes += stream.flushes
            duration += done.duration_ms
        return {
            "prompt": prompt,
            "runs": runs,
            "events": events // runs,
            "events_delivered": len(lags) // runs,
            "lag_ms": {
                "p50": round(percentile(lags, 50), 2),
                "p95": round(percentile(lags, 95), 2),
                "max": round(max(lags), 2) if lags else None,
                "p95_of_each_run": per_run_p95,
            },
            "post_to_connection_calls": round(posts / runs),
            "output_put_item_calls": round(writes / runs),
            "flushes": round(flushes / runs),
            "duration_ms": round(duration / runs),
        }


def minimum_calls(seconds: float, flushes: int, watchers: int) -> int:
    """This design's minimum (see the docstring) for the observed run time and number of flushes."""
    return 9 + math.floor(seconds) + flushes * (1 + watchers) + 2 * max(1, math.ceil(seconds)) + 1


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args(argv)
    moto = start_moto()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-runner-") as tmp:
            bench = Bench(moto, Path(tmp) / "runner")
            try:
                results = measure(bench, quick=args.quick)
            finally:
                bench.close()
    finally:
        moto.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return results


def measure(bench: Bench, *, quick: bool) -> dict[str, Any]:
    bench.chat("[[text]] warm up")  # imports, clients, first connections
    load = round(os.getloadavg()[0], 2)  # the figures are only comparable on a machine equally idle
    runs = 3 if quick else 8
    lag = {
        "burst_2000": bench.lag("[[lines:2000]]", runs),
        "paced_2000_1ms": bench.lag("[[lines:2000:1]]", max(1, runs // 3)),
    }

    per_task: list[dict[str, Any]] = []
    for n in (0, 10, 100, 1000):
        prompt = "[[text]] hello" if n == 0 else f"[[lines:{n}]]"
        done, _, calls = bench.chat(prompt)
        stream = bench.capture.streams[-1]
        total = sum(calls.values())
        seconds = done.duration_ms / 1000
        per_task.append(
            {
                "output_lines": n,
                "events": stream.seq,
                "flushes": stream.flushes,
                "aws_calls": total,
                "minimum_for_this_design": minimum_calls(seconds, stream.flushes, 1),
                "one_write_per_line": minimum_calls(seconds, 0, 1) + 2 * stream.seq,
                "by_operation": dict(sorted(calls.items())),
            }
        )

    spawn, book = [], []
    for _ in range(3 if quick else 7):
        _, started, _ = bench.chat("[[text]] overhead", connection=None)
        task_run = bench.capture.runs[-1]
        assert task_run.spawned_at and task_run.exited_at and task_run.booked_at
        spawn.append((task_run.spawned_at - started) * 1000)
        book.append((task_run.booked_at - task_run.exited_at) * 1000)
    return {
        "benchmark": "runner",
        "environment": (
            "moto server over HTTP, fake claude CLI subprocess, local management-API receiver in its own process"
        ),
        "load_average_at_start": load,
        "lag": lag,
        "aws_calls_per_task": per_task,
        "overhead_ms": {
            "sqs_event_to_cli_spawn": {"median": round(statistics.median(spawn), 1), "max": round(max(spawn), 1)},
            "cli_exit_to_task_booked": {"median": round(statistics.median(book), 1), "max": round(max(book), 1)},
        },
    }


if __name__ == "__main__":
    main()
