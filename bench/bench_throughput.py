"""Load through a running local runtime (`python -m local_runtime`, as `make run-local` starts it).

    uv run python bench/bench_throughput.py --out bench/results/throughput.json [--seconds 20] [--clients 4]

Two measurements on one runtime (a real child process: gateway, moto server, SQS event sources, runner,
the fake `claude` CLI), real sockets only:

1. `cli_line_to_ws_p95_ms`, first, while the machine is otherwise idle: a WebSocket client subscribes to a chat
   session, then a message of that session asks the CLI for a burst of 2,000 lines (`[[lines:2000]]`). The CLI
   is the fake behind a thin relay (written here) that writes each line of the fake to its stdout, flushes, and
   notes the wall-clock time; the client notes the time each frame arrives. Lag = arrival - write, per line,
   same machine clock. The number of frames the client received for the burst is the number of
   management-API calls (PostToConnection) it cost for that connection. A few bursts, pooled.
2. `ingress_throughput_rps`: a few concurrent clients (threads, keep-alive HTTP/1.1) send signed GitHub
   `issue_comment` deliveries (an OWNER's "@claude" mention, each with its own X-GitHub-Delivery and issue
   number, so each makes a task in its own session) as fast as they are answered, for a fixed time after a
   warm-up. Throughput = 202 answers (task created and queued) per second. The runner drains the queue at the
   same time (MAX_CONCURRENT_TASKS, 1-response CLI runs): this is what the machine sustains, not ingress alone.
   The repository's clone URL is left out of the payload (no network) and REPORT_BACK is off. Then, for scale,
   the same with plain comments (no "@claude"): recorded and ignored, no task (one PutItem each).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.machine import BENCH_SECRETS, FAKE_CLAUDE, start_machine  # noqa: E402

SAMPLE = ROOT.parent / "shared" / "webhooks" / "github" / "issue_comment__created.json"
LINE_TEXT = re.compile(r"^line (\d+) of (\d+)$")

# The CLI the runner spawns for this benchmark: the fake itself (exec) unless the prompt carries a stamp id;
# then the fake runs as a child and every line it writes is relayed (write + flush) and time-stamped. A runner
# running as root starts the CLI as an unprivileged user (runner/sandbox.py): the relay runs on the system's
# python3, as the fake does (the project's interpreter may live in root's home), and writes its stamps into a
# folder that user may write to.
RELAY = r"""#!/usr/bin/env python3
import json, os, re, subprocess, sys, time
FAKE = {fake!r}
stamps_dir = os.environ.get("CLAUDE_CODE_BENCH_STAMPS")
found = re.search(r"stamp-([0-9a-f]{{8,32}})", sys.argv[-1]) if stamps_dir and len(sys.argv) > 1 else None
if found is None:
    os.execv(sys.executable, [sys.executable, FAKE, *sys.argv[1:]])
child = subprocess.Popen([sys.executable, FAKE, *sys.argv[1:]], stdout=subprocess.PIPE)
out = sys.stdout.buffer
lines, stamps = [], []
for line in child.stdout:
    out.write(line)
    out.flush()
    stamps.append(time.time())
    lines.append(line)
code = child.wait()
written = {{}}
for line, at in zip(lines, stamps):
    try:
        obj = json.loads(line)
    except ValueError:
        continue
    if not isinstance(obj, dict) or obj.get("type") != "assistant":
        continue
    for block in obj.get("message", {{}}).get("content") or []:
        match = re.match(r"line (\d+) of \d+$", str(block.get("text", ""))) if isinstance(block, dict) else None
        if match:
            written[int(match.group(1))] = at
with open(os.path.join(stamps_dir, found.group(1) + ".json"), "w") as fh:
    json.dump(written, fh)
sys.exit(code)
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


# --------------------------------------------------------------------------------------------- lag


def frame_events(message: dict[str, Any]) -> list[dict[str, Any]]:
    if message.get("type") == "events":
        return list(message.get("events") or [])
    return []


def line_number(event: dict[str, Any]) -> int | None:
    if event.get("type") != "task.output":
        return None
    data = (event.get("payload") or {}).get("data") or {}
    if data.get("type") != "assistant":
        return None
    for block in (data.get("message") or {}).get("content") or []:
        if isinstance(block, dict) and block.get("type") == "text":
            found = LINE_TEXT.match(str(block.get("text", "")))
            if found:
                return int(found.group(1))
    return None


def measure_lag(machine: Any, stamps_dir: Path, *, bursts: int, lines: int) -> dict[str, Any]:
    from websockets.sync.client import connect

    status, first = machine.api("POST", "/api/chat", {"message": "[[text]] warm up"})
    assert status == 202 and isinstance(first, dict), first
    session_id = first["session_id"]
    lags: list[float] = []
    per_burst: list[dict[str, Any]] = []
    with connect(f"{machine.ws_url}?token={machine.api_token}", open_timeout=10, max_size=2**23) as ws:
        # Naming the first task replays it even when it has already finished.
        ws.send(json.dumps({"action": "subscribe", "session_id": session_id, "last_seq": {first["task_id"]: 0}}))
        wait_until_finished(ws, first["task_id"], timeout=60)
        for _ in range(bursts):
            stamp = uuid.uuid4().hex[:16]
            status, created = machine.api(
                "POST", "/api/chat", {"message": f"[[lines:{lines}]] stamp-{stamp}", "session_id": session_id}
            )
            assert status == 202 and isinstance(created, dict), created
            arrivals = wait_until_finished(ws, created["task_id"], timeout=120)
            written = {int(k): float(v) for k, v in json.loads((stamps_dir / f"{stamp}.json").read_text()).items()}
            received: dict[int, float] = {}
            frames = 0
            for at, raw in arrivals:
                message = json.loads(raw)
                events = [e for e in frame_events(message) if e.get("task_id") == created["task_id"]]
                if message.get("type") == "event_part" and message.get("task_id") == created["task_id"]:
                    frames += 1
                if not events:
                    continue
                frames += 1
                for event in events:
                    n = line_number(event)
                    if n is not None:
                        received.setdefault(n, at)
            burst = [(received[n] - written[n]) * 1000 for n in written if n in received]
            lags.extend(burst)
            per_burst.append(
                {
                    "lines_written": len(written),
                    "lines_received": len(received),
                    "p50_ms": round(percentile(burst, 50), 2),
                    "p95_ms": round(percentile(burst, 95), 2),
                    "max_ms": round(max(burst), 2) if burst else None,
                    "frames": frames,
                }
            )
    return {
        "p50_ms": round(percentile(lags, 50), 2),
        "p95_ms": round(percentile(lags, 95), 2),
        "p99_ms": round(percentile(lags, 99), 2),
        "max_ms": round(max(lags), 2) if lags else None,
        "samples": len(lags),
        "bursts": per_burst,
        "management_api_calls_per_burst": round(statistics.median(b["frames"] for b in per_burst), 1),
    }


def wait_until_finished(ws: Any, task_id: str, *, timeout: float) -> list[tuple[float, str]]:
    """Every frame (arrival time, raw text) until the task's terminal event; parsing happens afterwards."""
    terminal = ('"task.completed"', '"task.failed"', '"task.stopped"')
    frames: list[tuple[float, str]] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"task {task_id} did not finish within {timeout}s")
        try:
            raw = ws.recv(timeout=remaining)
        except TimeoutError:
            continue
        at = time.time()
        text = raw if isinstance(raw, str) else raw.decode()
        frames.append((at, text))
        if task_id in text and any(t in text for t in terminal):
            for event in frame_events(json.loads(text)):
                if event.get("task_id") == task_id and event.get("type") in (
                    "task.completed",
                    "task.failed",
                    "task.stopped",
                ):
                    if event["type"] != "task.completed":
                        raise RuntimeError(f"burst task ended {event['type']}: {event.get('payload')}")
                    return frames


# --------------------------------------------------------------------------------------------- throughput


class Deliveries:
    """Signed `issue_comment` deliveries, each its own delivery id and issue (hence its own session)."""

    def __init__(self, secret: str, *, mention: bool = True) -> None:
        self.secret = secret.encode()
        self.mention = mention
        self.base = json.loads(SAMPLE.read_bytes())
        self.base["comment"]["author_association"] = "OWNER"
        self.base["repository"]["clone_url"] = None  # no clone: loopback only
        self._n = 0
        self._lock = threading.Lock()

    def next(self) -> tuple[bytes, dict[str, str]]:
        with self._lock:
            self._n += 1
            n = self._n
        payload = dict(self.base)
        payload["issue"] = {**self.base["issue"], "number": 100000 + n}
        text = f"@claude [[text]] throughput {n}" if self.mention else f"a plain comment {n}"
        payload["comment"] = {**self.base["comment"], "id": 900000000 + n, "body": text}
        body = json.dumps(payload).encode()
        signature = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        return body, {
            "Content-Type": "application/json",
            "X-GitHub-Event": "issue_comment",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": signature,
            "User-Agent": "GitHub-Hookshot/bench",
        }


def measure_throughput(
    port: int, secret: str, *, clients: int, seconds: float, warmup: float, mention: bool = True
) -> dict[str, Any]:
    """Deliveries answered per second; with `mention` each makes a task (202), without it each is recorded and
    ignored (200: one conditional PutItem, no transaction, no task)."""
    deliveries = Deliveries(secret, mention=mention)
    start = time.monotonic()
    measure_from, measure_to = start + warmup, start + warmup + seconds
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while time.monotonic() < measure_to:
                body, headers = deliveries.next()
                sent = time.monotonic()
                try:
                    conn.request("POST", "/webhooks/github", body=body, headers=headers)
                    resp = conn.getresponse()
                    resp.read()
                    code = resp.status
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    with lock:
                        errors[type(exc).__name__] += 1
                    continue
                done = time.monotonic()
                if sent >= measure_from and done <= measure_to:
                    with lock:
                        statuses[code] += 1
                        latencies.append((done - sent) * 1000)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, name=f"client-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    accepted = statuses.get(202 if mention else 200, 0)
    return {
        "accepted_rps": round(accepted / seconds, 2),
        "accepted": accepted,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": dict(errors),
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 1),
            "p95": round(percentile(latencies, 95), 1),
            "p99": round(percentile(latencies, 99), 1),
        },
        "clients": clients,
        "seconds": seconds,
        "warmup_seconds": warmup,
    }


# --------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "throughput.json")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time of the throughput run")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--ignored-seconds", type=float, default=5.0, help="measured time of the no-task run")
    parser.add_argument("--bursts", type=int, default=3, help="2,000-line bursts for the lag")
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--concurrency", default="2", help="MAX_CONCURRENT_TASKS of the runtime")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-runlocal-") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o711)  # the CLI's user passes through to the relay and the stamps, lists nothing
        stamps = tmp / "stamps"
        stamps.mkdir()
        stamps.chmod(0o733)  # it writes its stamps there, and cannot list what is there
        relay = tmp / "claude"
        relay.write_text(RELAY.format(fake=str(FAKE_CLAUDE)))
        relay.chmod(0o755)
        machine = start_machine(
            tmp,
            persist=False,
            extra_env={
                "CLAUDE_CLI_PATH": str(relay),
                "CLAUDE_CODE_BENCH_STAMPS": str(stamps),
                "LOG_LEVEL": "WARNING",
                "MAX_CONCURRENT_TASKS": args.concurrency,
                "REPORT_BACK": "false",
                "GITHUB_API_URL": "http://127.0.0.1:9",
            },
        )
        try:
            lag = measure_lag(machine, stamps, bursts=args.bursts, lines=args.lines)
            throughput = measure_throughput(
                machine.port,
                BENCH_SECRETS["GITHUB_WEBHOOK_SECRET"],
                clients=args.clients,
                seconds=args.seconds,
                warmup=args.warmup,
            )
            ignored = measure_throughput(
                machine.port,
                BENCH_SECRETS["GITHUB_WEBHOOK_SECRET"],
                clients=args.clients,
                seconds=args.ignored_seconds,
                warmup=1.0,
                mention=False,
            )
        finally:
            machine.stop()

    result = {
        "ingress_throughput_rps": {
            "value": throughput["accepted_rps"],
            "unit": "webhooks/s",
            "baseline": None,
            "notes": (
                f"signed GitHub issue_comment deliveries answered 202 (task created + queued) per second "
                f"through run-local's HTTP port, {args.clients} keep-alive clients, {args.seconds:g} s after "
                f"{args.warmup:g} s warm-up, while the runner drains the tasks (MAX_CONCURRENT_TASKS="
                f"{args.concurrency}); other answers: {throughput['statuses']}, errors: {throughput['errors']}; "
                f"latency p50/p99 {throughput['latency_ms']['p50']}/{throughput['latency_ms']['p99']} ms. "
                f"For scale: deliveries recorded and ignored (no @claude: one conditional PutItem, no task) went "
                f"at {ignored['accepted_rps']} /s; a task costs a TransactWriteItems and a SendMessage more, "
                "and the emulator serves every DynamoDB action one at a time (moto_main)."
            ),
            "latency_ms": throughput["latency_ms"],
            "ignored_deliveries_rps": ignored["accepted_rps"],
            "answers": throughput["statuses"],
        },
        "cli_line_to_ws_p95_ms": {
            "value": lag["p95_ms"],
            "unit": "ms",
            "baseline": None,
            "p50_ms": lag["p50_ms"],
            "management_api_calls": lag["management_api_calls_per_burst"],
            "notes": (
                f"from the CLI writing a line (relay over the fake CLI: write + flush, wall clock) to a "
                f"subscribed WebSocket client receiving the frame with it, through run-local (runner -> "
                f"DynamoDB -> management API -> gateway -> socket); {args.bursts} bursts of {args.lines} lines "
                f"([[lines:{args.lines}]]), pooled; management_api_calls = frames the client got for one "
                "burst (median) = PostToConnection calls for that connection. Goal p95 <= 50 ms."
            ),
        },
        "detail": {
            "lag": lag,
            "throughput": throughput,
            "ignored": ignored,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
