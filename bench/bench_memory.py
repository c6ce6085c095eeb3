"""Memory of a local machine under chat load: RSS growth of the runtime and its emulator per 100 tasks.

    uv run python bench/bench_memory.py --out bench/results/memory.json [--tasks 200] [--warmup 20]

One runtime started as `make run-local` starts it (`python -m local_runtime`, a real child process, state saved
every 10 s as by default), the fake `claude` CLI. A few client threads send chats through the HTTP API
(`POST /api/chat`, every other one resuming the client's previous session, so transcripts are overwritten as
they are in use), each of `--lines` output lines, and wait for each task to end.

The warm-up brings the machine to its steady state before anything is measured: at least `--warmup` tasks
(imports, caches, first allocations), then rounds of tasks until every function a schedule runs (the sweeper,
every minute) has run once and a whole round started no new process (every pool at the size the load needs).
A new execution environment is a fixed ~75 MB: started inside the window it would be counted as growth per
task, which it is not. Then the resident memory (VmRSS) of the runtime and every process it started (the moto
server, function workers by function, local Fargate tasks; CLIs have exited when it is sampled) is summed;
again every `--sample-every` tasks and at the end. Figure: (RSS at the end - RSS after warm-up) / tasks x 100,
also per process.

For scale, what the machine stores at the end (the tables' items as JSON, the bucket's object bytes) is read
through the emulator with the runtime's own credentials (runtime.json), as `make db-shell` would: the emulator
keeps it in memory, so its growth is bounded below by this baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.machine import start_machine  # noqa: E402

TERMINAL = {"completed", "failed", "stopped"}


def vm_rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def descendants(root: int) -> list[int]:
    """`root` and every live process below it (by parent pid; own sessions included)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: the fields after the last ')' are fixed.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def process_label(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return "gone"
    modules = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-m"]
    label = modules[0] if modules else Path(argv[0]).name if argv else "?"
    if label == "local_runtime.worker_main":
        # Which function's execution environment (or a local Fargate task): a new one is scale-out, not growth.
        kind = "task" if "--exec" in argv else "worker"
        return f"{kind}:{function_of(pid) or '?'}"
    return label


def function_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            for entry in fh.read().split(b"\0"):
                if entry.startswith(b"AWS_LAMBDA_FUNCTION_NAME="):
                    return entry.split(b"=", 1)[1].decode(errors="replace")
    except OSError:
        pass
    return None


def sample(root: int) -> dict[str, Any]:
    by: dict[str, float] = {}
    count: dict[str, int] = {}
    for pid in descendants(root):
        label = process_label(pid)
        by[label] = round(by.get(label, 0.0) + vm_rss_mb(pid), 1)
        count[label] = count.get(label, 0) + 1
    return {"total_mb": round(sum(by.values()), 1), "by_process": by, "processes": count}


def scheduled_functions() -> dict[str, float]:
    """Function -> period (s) of the schedules the runtime runs locally, read from the template as it reads it."""
    from local_runtime import template

    override = os.environ.get("LOCAL_SCHEDULE_SECONDS")  # the runtime's own override, inherited by it
    found: dict[str, float] = {}
    for spec in template.functions(template.load()):
        for schedule in spec.schedules:
            period = float(override) if override else schedule.rate_seconds
            if schedule.enabled and period is not None:
                found[spec.logical_id] = min(period, found.get(spec.logical_id, period))
    return found


def warm_up(load: Load, root: int, *, tasks: int, round_tasks: int, timeout: float) -> dict[str, Any]:
    """At least `tasks` chats, then rounds of `round_tasks` until every scheduled function has a worker and a
    round ended with the same processes it began with. Fails when that takes past `timeout`."""
    scheduled = scheduled_functions()
    deadline = time.monotonic() + timeout
    load.run(tasks, timeout=timeout)
    processes = sample(root)["processes"]
    while True:
        load.run(round_tasks, timeout=timeout)
        now = sample(root)["processes"]
        missing = [name for name in scheduled if f"worker:{name}" not in now]
        if not missing and now == processes:
            return {"tasks": load.done, "scheduled_functions": scheduled, "processes": now}
        if time.monotonic() > deadline:
            raise TimeoutError(f"no steady state after {load.done} warm-up tasks: {now}, not run yet: {missing}")
        processes = now


def stored_bytes(data_dir: Path) -> dict[str, Any]:
    """What the machine holds, read through the emulator: items (as JSON) per table and object bytes per bucket."""
    import boto3

    info = json.loads((data_dir / "runtime.json").read_text())
    creds = info.get("credentials") or {}
    session = boto3.Session(
        aws_access_key_id=creds.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=creds.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=creds.get("AWS_SESSION_TOKEN"),
        region_name="us-east-1",
    )
    ddb = session.client("dynamodb", endpoint_url=info["endpoint"])
    s3 = session.client("s3", endpoint_url=info["endpoint"])
    tables: dict[str, dict[str, int]] = {}
    buckets: dict[str, dict[str, int]] = {}
    for key, name in info["env"].items():
        if key.endswith("_TABLE"):
            count = size = 0
            for page in ddb.get_paginator("scan").paginate(TableName=name):
                count += page["Count"]
                size += len(json.dumps(page["Items"]))
            tables[name] = {"items": count, "bytes": size}
        elif key.endswith("_BUCKET"):
            count = size = 0
            for listing in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
                for obj in listing.get("Contents", []):
                    count += 1
                    size += int(obj["Size"])
            buckets[name] = {"objects": count, "bytes": size}
    total = sum(t["bytes"] for t in tables.values()) + sum(b["bytes"] for b in buckets.values())
    return {"total_mb": round(total / 1e6, 2), "tables": tables, "buckets": buckets}


class Load:
    """`clients` threads each sending chats one after the other until `total` chats are done overall."""

    def __init__(self, machine: Any, *, lines: int, clients: int) -> None:
        self.machine = machine
        self.lines = lines
        self.clients = clients
        self.done = 0
        self.failed: list[str] = []
        self._lock = threading.Lock()
        self._sessions: dict[int, str] = {}

    def run(self, total: int, *, timeout: float) -> None:
        target = self.done + total
        deadline = time.monotonic() + timeout
        started = self.done
        claimed = [started]

        def claim() -> bool:
            with self._lock:
                if claimed[0] >= target:
                    return False
                claimed[0] += 1
                return True

        def client(index: int) -> None:
            while claim():
                self._one(index, deadline)
                with self._lock:
                    self.done += 1

        threads = [threading.Thread(target=client, args=(i,), name=f"chat-{i}") for i in range(self.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _one(self, index: int, deadline: float) -> None:
        body: dict[str, Any] = {"message": f"[[lines:{self.lines}]] memory {index}"}
        previous = self._sessions.pop(index, None)
        if previous:  # every other chat resumes the last one's session (its transcript is re-uploaded)
            body["session_id"] = previous
        status, created = self.machine.api("POST", "/api/chat", body)
        if status != 202 or not isinstance(created, dict):
            raise RuntimeError(f"chat not accepted: {status} {created}")
        task_id = created["task_id"]
        while True:
            _, detail = self.machine.api("GET", f"/api/tasks/{task_id}")
            task = detail.get("task") if isinstance(detail, dict) else None
            if isinstance(task, dict) and task.get("status") in TERMINAL:
                if task["status"] != "completed":
                    with self._lock:
                        self.failed.append(f"{task_id}: {task['status']} {task.get('error')}")
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} did not end in time")
            time.sleep(0.1)  # polling interval of a status read, not a wait for a condition's timing
        if not previous:
            self._sessions[index] = created["session_id"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "memory.json")
    parser.add_argument("--tasks", type=int, default=200, help="measured chat tasks (after warm-up)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--lines", type=int, default=50, help="output lines per chat")
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--concurrency", default="3", help="MAX_CONCURRENT_TASKS of the runtime")
    parser.add_argument("--sample-every", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--no-persist", action="store_true", help="no state file (isolates the autosave's share)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp_name:
        tmp = Path(tmp_name)
        machine = start_machine(
            tmp,
            persist=not args.no_persist,  # as `make run-local` by default: the autosave is part of the footprint
            extra_env={"LOG_LEVEL": "WARNING", "MAX_CONCURRENT_TASKS": args.concurrency, "REPORT_BACK": "false"},
        )
        try:
            load = Load(machine, lines=args.lines, clients=args.clients)
            started = time.monotonic()
            # A schedule's first run comes one period after the start: the warm-up lasts at least that long.
            warm = warm_up(
                load,
                machine.process.pid,
                tasks=args.warmup,
                round_tasks=max(args.clients * 3, 10),
                timeout=args.timeout + max(scheduled_functions().values(), default=0.0),
            )
            warmup_tasks = load.done
            before = sample(machine.process.pid)
            stored_before = stored_bytes(machine.data_dir)
            samples = [{"tasks": 0, **before}]
            measured_from = time.monotonic()
            while load.done - warmup_tasks < args.tasks:
                step = min(args.sample_every, args.tasks - (load.done - warmup_tasks))
                load.run(step, timeout=args.timeout)
                samples.append({"tasks": load.done - warmup_tasks, **sample(machine.process.pid)})
            seconds = time.monotonic() - measured_from
            after = samples[-1]
            stored_after = stored_bytes(machine.data_dir)
        finally:
            machine.stop()
            runtime_log = machine.logs()

    growth = (after["total_mb"] - before["total_mb"]) / args.tasks * 100
    stored_growth = (stored_after["total_mb"] - stored_before["total_mb"]) / args.tasks * 100
    by_process_growth = {
        name: round((mb - before["by_process"].get(name, 0.0)) / args.tasks * 100, 1)
        for name, mb in after["by_process"].items()
    }
    result = {
        "emulator_rss_growth_mb_per_100_tasks": {
            "value": round(growth, 1),
            "unit": "MB",
            "baseline": round(stored_growth, 2),
            "notes": (
                f"resident memory (VmRSS) of the local runtime and every process it started (moto server, "
                f"workers), summed, grown per 100 chat tasks of {args.lines} output lines through run-local's "
                f"HTTP API ({args.clients} clients, every other chat resuming a session, "
                f"{'no state file' if args.no_persist else 'state autosaved'}) after "
                f"a warm-up to steady state ({warmup_tasks} tasks: at least {args.warmup}, until every scheduled "
                f"function had run and a round of tasks started no new process), over {args.tasks} tasks; "
                "baseline = what the machine stores per 100 tasks (items as JSON + object bytes) read back "
                "through the emulator. Goal <= 20 MB."
            ),
            "tasks": args.tasks,
            "rss_mb": {"after_warmup": before["total_mb"], "end": after["total_mb"]},
            "by_process_mb": {"after_warmup": before["by_process"], "end": after["by_process"]},
            "growth_mb_per_100_tasks_by_process": by_process_growth,
            "processes": {"after_warmup": before["processes"], "end": after["processes"]},
            "samples": samples,
            "stored_mb": {"after_warmup": stored_before["total_mb"], "end": stored_after["total_mb"]},
            "tasks_per_second": round(args.tasks / seconds, 2),
            "failed_tasks": len(load.failed),
        },
        "detail": {
            "stored_end": stored_after,
            "failed": load.failed[:10],
            "warmup_seconds": round(measured_from - started, 1),
            "warmup": warm,
            # The runtime's own lines (cold starts, schedules): which execution environments started, and when.
            "runtime_log": [line for line in runtime_log.splitlines() if "[local-runtime]" in line][-60:],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
