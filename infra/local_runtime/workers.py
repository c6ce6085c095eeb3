"""Execution environments: per function, a pool of worker processes (worker_main.py), as Lambda keeps them.

- A worker is started with the function's environment only (function_env.py), in a session of its own (a Ctrl-C
  in the runtime's terminal reaches the runtime alone), and imports the handler once: the first invocation that
  finds no idle worker pays a cold start, later ones reuse a warm worker (most recently used first).
- At most `concurrency` workers exist per function (the event source mapping's MaximumConcurrency, the function's
  reserved concurrency, else DEFAULT_CONCURRENCY); one invocation at a time each. Past the cap, an invocation
  waits for a worker rather than being throttled. An invocation waiting for a worker takes whichever is free
  first, a warm one or one it caused to start (at most MAX_STARTING start at once).
- An invocation times out at the function's Timeout: the worker is killed (SIGKILL to its process group) and the
  invocation fails with `Sandbox.Timedout`. A worker that exits fails its invocation with `Runtime.ExitError`;
  the next invocation starts a new one. Idle workers go after IDLE_SECONDS.
- Frames of length-prefixed JSON go over a pipe each way (worker_main's protocol), read by the runtime's event
  loop, which also prefixes each line the worker prints with `[<function>:<pid>] ` on the runtime's stdout.

`Processes` keeps track of every process the runtime starts; the runtime is a child subreaper, so what a dead
worker or task left behind (a CLI in its own session) comes back to it and is killed (`kill_orphans`), as
everything in an execution environment ends with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from local_runtime.events import LambdaContext
from local_runtime.logs import log
from local_runtime.worker_main import FRAME

DEFAULT_CONCURRENCY = 10
IDLE_SECONDS = 600.0  # Lambda keeps an idle environment for minutes
MIN_INIT_SECONDS = 10.0  # Lambda's init phase limit; a function's own timeout when longer
STOP_GRACE_SECONDS = 15.0
# Cold starts under way at once per function: a burst on AWS starts as many environments as it has requests; on
# a laptop, ten imports of FastAPI at once starve the warm worker that would have served them all meanwhile.
MAX_STARTING = 2
SETTLE_SECONDS = 1.0  # at a stop, invocations get this long to end by themselves before SIGTERM
_PR_SET_CHILD_SUBREAPER = 36

LogSink = Callable[[bytes], None]


def stdout_sink(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


class InvocationError(RuntimeError):
    """An invocation that failed as a Lambda invocation fails: the handler raised (its error type), it timed out
    (`Sandbox.Timedout`), its runtime exited (`Runtime.ExitError`), it could not start (`Runtime.ImportModuleError`)
    or the runtime is stopping (`Local.ShuttingDown`)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.error_message = message


@dataclass(frozen=True)
class FunctionConfig:
    name: str  # the template's logical id
    handler: str
    timeout: float
    memory_mb: int
    concurrency: int
    environment: Mapping[str, str]
    cwd: str | None = None


# --------------------------------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class ProcStat:
    pid: int
    state: str
    ppid: int
    pgid: int
    sid: int
    start_ticks: int


def proc_stat(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return ProcStat(pid, fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]))
    except (IndexError, ValueError):
        return None


def children_of(pid: int) -> list[ProcStat]:
    found: list[ProcStat] = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None and stat.ppid == pid:
                found.append(stat)
    return found


class Processes:
    """The processes the runtime started, and the orphans that come back to it (it is a child subreaper)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.adopting = False  # only a subreaper's unknown children are orphans (else: anybody's, e.g. a test's)
        self._known: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    def adopt_orphans(self) -> None:
        """Become a child subreaper and reap the orphans that end (their exit status is nobody's)."""
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        self.adopting = True
        self._reaper = threading.Thread(target=self._reap_loop, name="orphan-reaper", daemon=True)
        self._reaper.start()

    def add(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._known[proc.pid] = proc

    def discard(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._known.pop(proc.pid, None)

    def known(self) -> list[subprocess.Popen[bytes]]:
        with self._lock:
            return list(self._known.values())

    def orphans(self) -> list[ProcStat]:
        if not self.adopting:
            return []
        with self._lock:
            known = set(self._known)
        return [c for c in children_of(self.pid) if c.pid not in known and c.state != "Z"]

    def kill_orphans(self) -> int:
        """SIGKILL what dead workers and tasks left behind, with their process groups (a CLI's own session)."""
        killed = 0
        own_group = os.getpgrp()
        for orphan in self.orphans():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if orphan.pgid not in (own_group, 0):
                    os.killpg(orphan.pgid, signal.SIGKILL)
                os.kill(orphan.pid, signal.SIGKILL)
                killed += 1
        if killed:
            log(f"killed {killed} process(es) left behind by ended workers or tasks")
        return killed

    def stop(self) -> None:
        self._stop.set()

    def _reap_loop(self) -> None:
        while not self._stop.wait(1.0):
            self.reap_orphans()

    def reap_orphans(self) -> None:
        """Reap ended orphans. One cheap look (waitid without reaping) per round, no /proc scan: this thread
        competes with the gateway's loop for the GIL. The runtime's own children are left to their Popen."""
        while True:
            try:
                found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if found is None:
                return
            with self._lock:
                if found.si_pid in self._known:
                    return  # its Popen reaps it soon; orphans behind it wait for the next round
            with contextlib.suppress(ChildProcessError):
                os.waitpid(found.si_pid, os.WNOHANG)


class LogLines(asyncio.Protocol):
    """A child's stdout+stderr, line by line, prefixed, to the runtime's stdout."""

    def __init__(self, prefix: str, sink: LogSink) -> None:
        self.prefix = prefix.encode()
        self.sink = sink
        self.partial = b""

    def data_received(self, data: bytes) -> None:
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        if lines:
            self.sink(b"".join(self.prefix + line + b"\n" for line in lines))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.partial:
            self.sink(self.prefix + self.partial + b"\n")
            self.partial = b""


async def spawn(
    args: list[str],
    *,
    env: Mapping[str, str],
    label: str,
    processes: Processes,
    sink: LogSink,
    cwd: str | None = None,
    pass_fds: Iterable[int] = (),
) -> subprocess.Popen[bytes]:
    """Start a child in a session of its own with exactly `env`; its output goes to `sink` as `[label:pid] line`."""
    loop = asyncio.get_running_loop()
    log_read, log_write = os.pipe()
    try:
        # A fork and exec (milliseconds): not worth a thread hop.
        proc = subprocess.Popen(  # noqa: ASYNC220
            args,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log_write,
            stderr=log_write,
            pass_fds=tuple(pass_fds),
            start_new_session=True,
        )
    except BaseException:
        os.close(log_read)
        raise
    finally:
        os.close(log_write)
    processes.add(proc)
    await loop.connect_read_pipe(lambda: LogLines(f"[{label}:{proc.pid}] ", sink), os.fdopen(log_read, "rb", 0))
    return proc


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Signal a child's process group (it leads one: start_new_session), or the child alone if that is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        proc.send_signal(sig)


async def wait_exit(proc: subprocess.Popen[bytes], seconds: float) -> int | None:
    """The child's exit code once it exits (and is reaped), or None after `seconds`."""
    end = time.monotonic() + seconds
    delay = 0.005
    while True:
        code = proc.poll()
        if code is not None or time.monotonic() >= end:
            return code
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


def exit_description(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"signal: {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"


# ----------------------------------------------------------------------------------------------------- workers


class _Answers(asyncio.Protocol):
    """The worker's answer pipe: length-prefixed JSON frames."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        start = 0
        while len(buffer) - start >= FRAME.size:
            (size,) = FRAME.unpack_from(buffer, start)
            end = start + FRAME.size + size
            if len(buffer) < end:
                break
            message = json.loads(bytes(buffer[start + FRAME.size : end]))
            start = end
            self.worker.pool.on_answer(self.worker, message)
        if start:
            del buffer[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self.worker.pool.on_exit(self.worker)


@dataclass(eq=False)
class Worker:
    pool: WorkerPool
    proc: subprocess.Popen[bytes]
    ready: asyncio.Future[dict[str, Any]]
    requests: asyncio.WriteTransport | None = None
    state: str = "starting"  # starting, idle, reserved, busy, closing, dead
    call_id: int = 0
    request_id: str = ""
    current: asyncio.Future[Any] | None = None
    timer: asyncio.TimerHandle | None = None
    invocations: int = 0
    idle_since: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, message: dict[str, Any]) -> None:
        body = json.dumps(message, separators=(",", ":")).encode()
        assert self.requests is not None
        self.requests.write(FRAME.pack(len(body)) + body)


def _fail(future: asyncio.Future[Any], error: InvocationError) -> None:
    if not future.done():
        future.set_exception(error)


def _retrieve(future: asyncio.Future[Any]) -> None:
    # An invocation whose caller went away (cancelled) still ends; its error is logged, not left unretrieved.
    if not future.cancelled():
        future.exception()


class WorkerPool:
    """The execution environments of one function."""

    def __init__(self, config: FunctionConfig, *, processes: Processes, sink: LogSink = stdout_sink) -> None:
        self.config = config
        self.processes = processes
        self.sink = sink
        self.workers: set[Worker] = set()  # started and ready (idle, reserved or busy)
        self.idle: list[Worker] = []
        self.waiters: deque[asyncio.Future[Worker]] = deque()
        self.starting = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.cold_starts = 0
        self.invocations = 0
        self.closed = False
        self._seq = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._exited: set[asyncio.Task[Any]] = set()

    # --- invoking ---------------------------------------------------------------------------------------------

    async def invoke(self, event: dict[str, Any]) -> Any:
        while True:
            if self.closed:
                raise InvocationError("Local.ShuttingDown", f"{self.config.name}: the local runtime is stopping")
            worker = self._take_idle() or await self._wait_for_worker()
            if worker.state != "dead":  # (it may have exited between being handed over and now)
                # (A cancelled caller cancels only this future: the worker finishes and is released.)
                return await self._dispatch(worker, event)

    async def _wait_for_worker(self) -> Worker:
        waiter: asyncio.Future[Worker] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        self._grow()
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release(waiter.result())
            raise

    def _take_idle(self) -> Worker | None:
        while self.idle:
            worker = self.idle.pop()  # the most recently used: the others can go idle for good
            if worker.state == "idle":
                worker.state = "reserved"
                return worker
        return None

    def _dispatch(self, worker: Worker, event: dict[str, Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        future.add_done_callback(_retrieve)
        self._seq += 1
        worker.state = "busy"
        worker.call_id = self._seq
        worker.request_id = str(uuid.uuid4())
        worker.current = future
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self.invocations += 1
        timeout = self.config.timeout
        try:
            worker.send(
                {
                    "id": worker.call_id,
                    "request_id": worker.request_id,
                    "deadline": time.monotonic() + timeout,
                    "event": event,
                }
            )
        except (TypeError, ValueError) as exc:  # an event that is no JSON: the caller's bug
            worker.current = None
            self.in_flight -= 1
            _fail(future, InvocationError("Runtime.InvalidEvent", str(exc)))
            self._release(worker)
            return future
        worker.timer = loop.call_later(timeout, self._timed_out, worker)
        return future

    def on_answer(self, worker: Worker, message: dict[str, Any]) -> None:
        if "ready" in message or ("error" in message and "id" not in message):
            if not worker.ready.done():
                if "ready" in message:
                    worker.ready.set_result(dict(message["ready"]))
                else:
                    error = message["error"]
                    worker.ready.set_exception(InvocationError(error["errorType"], error["errorMessage"]))
            return
        future = worker.current
        if future is None or message.get("id") != worker.call_id:
            return  # an answer to an invocation that already timed out
        self._end_call(worker)
        worker.invocations += 1
        if "error" in message:
            error = message["error"]
            _fail(future, InvocationError(str(error.get("errorType")), str(error.get("errorMessage"))))
        elif not future.done():
            future.set_result(message.get("result"))
        self._release(worker)

    def _end_call(self, worker: Worker) -> None:
        if worker.timer is not None:
            worker.timer.cancel()
            worker.timer = None
        worker.current = None
        self.in_flight -= 1

    def _timed_out(self, worker: Worker) -> None:
        future = worker.current
        if future is None or worker.state != "busy":
            return
        request_id = worker.request_id
        self._end_call(worker)
        timeout = self.config.timeout
        message = f"RequestId: {request_id} Error: Task timed out after {timeout:.2f} seconds"
        log(f"{self.config.name}: {message} (worker {worker.pid} killed)")
        self._drop(worker)
        _fail(future, InvocationError("Sandbox.Timedout", message))
        self._grow()

    def on_exit(self, worker: Worker) -> None:
        """The worker's answer pipe closed: it exited (or was killed by us)."""
        if worker.state in ("dead", "closing"):
            self._watch_exit(worker, expected=True)
            return
        future, request_id = worker.current, worker.request_id
        if future is not None:
            self._end_call(worker)
        self._forget(worker)
        self._watch_exit(worker, expected=False, future=future, request_id=request_id)

    def _watch_exit(
        self,
        worker: Worker,
        *,
        expected: bool,
        future: asyncio.Future[Any] | None = None,
        request_id: str = "",
    ) -> None:
        async def watch() -> None:
            code = await wait_exit(worker.proc, 2.0)
            if code is None:
                kill_group(worker.proc)
                code = await wait_exit(worker.proc, 5.0)
            self.processes.discard(worker.proc)
            self.processes.kill_orphans()  # the environment is gone: so is everything started in it
            if expected:
                return
            how = exit_description(code)
            log(f"{self.config.name}: worker {worker.pid} exited ({how})")
            message = f"RequestId: {request_id} Error: Runtime exited with error: {how}"
            error = InvocationError("Runtime.ExitError", message)
            if future is not None:
                _fail(future, error)
            if not worker.ready.done():
                worker.ready.set_exception(error)
            self._grow()

        task = asyncio.get_running_loop().create_task(watch())
        self._exited.add(task)
        task.add_done_callback(self._exited.discard)

    def _forget(self, worker: Worker) -> None:
        worker.state = "dead"
        self.workers.discard(worker)
        with contextlib.suppress(ValueError):
            self.idle.remove(worker)
        if worker.requests is not None:
            worker.requests.close()

    def _drop(self, worker: Worker) -> None:
        """Kill a worker (a timeout): its whole process group; what it left behind goes once it is gone."""
        self._forget(worker)
        kill_group(worker.proc)

    def _release(self, worker: Worker) -> None:
        if worker.state == "dead":
            return
        if self.closed:
            self._close_worker(worker)
            return
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                worker.state = "reserved"
                waiter.set_result(worker)
                return
        worker.state = "idle"
        worker.idle_since = time.monotonic()
        self.idle.append(worker)

    def _close_worker(self, worker: Worker) -> None:
        """End of its input: the worker returns from its loop and exits."""
        self.workers.discard(worker)
        with contextlib.suppress(ValueError):
            self.idle.remove(worker)
        worker.state = "closing"
        if worker.requests is not None:
            worker.requests.close()

    # --- starting ---------------------------------------------------------------------------------------------

    def _grow(self) -> None:
        if self.closed:
            return
        waiting = sum(1 for w in self.waiters if not w.done())
        while (
            waiting > self.starting
            and self.starting < MAX_STARTING
            and len(self.workers) + self.starting < self.config.concurrency
        ):
            self.starting += 1
            task = asyncio.get_running_loop().create_task(self._start())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _start(self) -> None:
        worker: Worker | None = None
        started = time.monotonic()
        try:
            worker = await self._spawn()
            init = await asyncio.wait_for(asyncio.shield(worker.ready), max(MIN_INIT_SECONDS, self.config.timeout))
        except Exception as exc:
            self.starting -= 1
            if worker is not None:
                self._drop(worker)
            error = (
                exc
                if isinstance(exc, InvocationError)
                else InvocationError("Runtime.Unknown", f"the execution environment did not start: {exc!r}")
            )
            log(f"{self.config.name}: cold start failed: {error}")
            while self.waiters:
                waiter = self.waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(error)
                    break
            self._grow()
            return
        self.starting -= 1
        self.cold_starts += 1
        self.workers.add(worker)
        took = f"{(time.monotonic() - started) * 1000:.0f} ms (import {init.get('init_ms')} ms)"
        log(f"{self.config.name}: cold start, worker {worker.pid} ready in {took}")
        self._release(worker)
        self._grow()  # still more waiting than starting: the next one

    async def _spawn(self) -> Worker:
        loop = asyncio.get_running_loop()
        requests_read, requests_write = os.pipe()
        answers_read, answers_write = os.pipe()
        try:
            proc = await spawn(
                [
                    sys.executable,
                    "-m",
                    "local_runtime.worker_main",
                    str(os.getpid()),
                    str(requests_read),
                    str(answers_write),
                ],
                env=self.config.environment,
                label=self.config.name,
                processes=self.processes,
                sink=self.sink,
                cwd=self.config.cwd,
                pass_fds=(requests_read, answers_write),
            )
        except BaseException:
            os.close(requests_write)
            os.close(answers_read)
            raise
        finally:
            os.close(requests_read)
            os.close(answers_write)
        worker = Worker(self, proc, loop.create_future())
        worker.ready.add_done_callback(_retrieve)
        transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(requests_write, "wb", 0))
        worker.requests = transport
        await loop.connect_read_pipe(lambda: _Answers(worker), os.fdopen(answers_read, "rb", 0))
        config = self.config
        worker.send(
            {
                "init": {
                    "handler": config.handler,
                    "function_name": config.name,
                    "memory_mb": config.memory_mb,
                    "timeout": config.timeout,
                }
            }
        )
        return worker

    # --- housekeeping and stopping ------------------------------------------------------------------------------

    def reap_idle(self, older_than: float = IDLE_SECONDS) -> None:
        now = time.monotonic()
        for worker in list(self.idle):
            if worker.state == "idle" and now - worker.idle_since > older_than:
                self._close_worker(worker)

    def running(self) -> list[asyncio.Future[Any]]:
        return [w.current for w in self.workers if w.current is not None]

    def signal_busy(self, sig: int, only: Collection[asyncio.Future[Any]] = ()) -> None:
        """Signal the busy workers (`only`: those running these invocations)."""
        for worker in list(self.workers):
            if worker.state == "busy" and (not only or worker.current in only):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    worker.proc.send_signal(sig)

    def close(self) -> None:
        """No more invocations: waiting ones fail, idle workers end, busy ones end after their invocation."""
        self.closed = True
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(InvocationError("Local.ShuttingDown", f"{self.config.name}: stopping"))
        for worker in list(self.idle):
            self._close_worker(worker)

    def processes_alive(self) -> list[subprocess.Popen[bytes]]:
        return [w.proc for w in self.workers if w.proc.poll() is None]


class WorkerPools:
    """Every function's pool, on the runtime's event loop; `invoke` is the gateway's invoker interface."""

    def __init__(self, loop: asyncio.AbstractEventLoop, processes: Processes, sink: LogSink = stdout_sink) -> None:
        self.loop = loop
        self.processes = processes
        self.sink = sink
        self.pools: dict[str, WorkerPool] = {}
        self._housekeeping: asyncio.TimerHandle | None = None

    def add(self, config: FunctionConfig) -> WorkerPool:
        pool = WorkerPool(config, processes=self.processes, sink=self.sink)
        self.pools[config.name] = pool
        return pool

    def start_housekeeping(self, every: float = 30.0) -> None:
        def tick() -> None:
            for pool in self.pools.values():
                pool.reap_idle()
            self._housekeeping = self.loop.call_later(every, tick)

        self.loop.call_soon_threadsafe(tick)

    async def invoke(self, handler_path: str, event: dict[str, Any], context: LambdaContext) -> Any:
        """The gateway's call: the function is `context.function_name` (the handler is the pool's)."""
        pool = self.pools.get(context.function_name)
        if pool is None:
            raise InvocationError("ResourceNotFoundException", f"no function {context.function_name}")
        return await pool.invoke(event)

    def invoke_blocking(self, function_name: str, event: dict[str, Any]) -> Any:
        """For threads (the SQS pollers): run the invocation on the loop and wait for its end."""
        pool = self.pools[function_name]
        return asyncio.run_coroutine_threadsafe(pool.invoke(event), self.loop).result()

    def running(self) -> list[asyncio.Future[Any]]:
        return [f for pool in self.pools.values() for f in pool.running()]

    async def interrupt(self, grace: float) -> None:
        """End the invocations running now within `grace`: those still running after SETTLE_SECONDS (a runner's
        run; an API call ends by itself) get SIGTERM (the runner books its run as stopped). The pools still take
        new invocations meanwhile (a WebSocket's $disconnect)."""
        running = self.running()
        if not running:
            return
        started = time.monotonic()
        _, pending = await asyncio.wait(running, timeout=min(SETTLE_SECONDS, grace))
        if pending:
            for pool in self.pools.values():
                pool.signal_busy(signal.SIGTERM, only=pending)
            await asyncio.wait(pending, timeout=max(0.0, grace - (time.monotonic() - started)))

    async def close(self, grace: float) -> None:
        """Stop every pool: idle workers end at once, busy ones get up to `grace`, then everything is killed."""
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        for pool in self.pools.values():
            pool.close()
        running = self.running()
        if running:
            await asyncio.wait(running, timeout=grace)
        alive = [p for pool in self.pools.values() for p in pool.processes_alive()]
        alive += [p for p in self.processes.known() if p.poll() is None and _is_worker(p)]
        procs = list({p.pid: p for p in alive}.values())
        for proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + 5.0
        for proc in procs:
            if await wait_exit(proc, max(0.0, end - time.monotonic())) is None:
                kill_group(proc)
                await wait_exit(proc, 5.0)
            self.processes.discard(proc)


def _is_worker(proc: subprocess.Popen[bytes]) -> bool:
    args = proc.args
    return isinstance(args, list) and "local_runtime.worker_main" in args and "--exec" not in args
