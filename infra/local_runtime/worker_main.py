"""One execution environment of the local runtime: `python -m local_runtime.worker_main <runtime pid> <in> <out>`.

What the Lambda runtime interface client is on AWS: it imports the function's handler once (the cold start), then
runs one invocation at a time for as long as the runtime keeps it (warm), in the function's own environment (the
runtime starts it with that environment only: function_env.py). The runtime talks to it over two pipes (file
descriptors <in> and <out>) in frames of a 4-byte big-endian length and UTF-8 JSON:

    runtime -> worker   {"init": {"handler", "function_name", "memory_mb", "timeout"}}    once, first
    worker  -> runtime  {"ready": {"init_ms": 812}}  or  {"error": {...}} (and it exits)
    runtime -> worker   {"id": 7, "request_id": "...", "deadline": <time.monotonic()>, "event": {...}}
    worker  -> runtime  {"id": 7, "result": <JSON>}  or  {"id": 7, "error": {"errorType", "errorMessage", ...}}

End of <in>: the worker exits. The handler's prints and logs go to stdout/stderr, which the runtime prefixes with
the function's name. Timeouts are the runtime's: it kills the worker at the deadline.

`python -m local_runtime.worker_main --exec <runtime pid> -- <command...>` starts a local ECS task's command
(ecs.py) the same way: tied to the runtime's life, then exec'd.
"""

from __future__ import annotations

import ctypes
import decimal
import importlib
import json
import os
import signal
import struct
import sys
import time
import traceback
from collections.abc import Callable
from typing import IO, Any

from local_runtime.events import LambdaContext, new_log_stream_name

FRAME = struct.Struct(">I")
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4


def _prctl(option: int, value: int) -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def tie_to_runtime(runtime_pid: int) -> None:
    """Die with the runtime (SIGTERM when it goes, even by SIGKILL: what an environment's processes do when its
    sandbox goes away), and keep this environment's variables (credentials) from other processes of the same
    user: another function's CLI cannot read /proc/<pid>/environ of a process that is not dumpable."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    _prctl(_PR_SET_DUMPABLE, 0)
    if os.getppid() != runtime_pid:  # the runtime was gone before the death signal was armed
        os._exit(0)


def read_frame(stream: IO[bytes]) -> Any:
    head = stream.read(FRAME.size)
    if len(head) < FRAME.size:
        return None
    (size,) = FRAME.unpack(head)
    body = stream.read(size)
    if len(body) < size:
        return None
    return json.loads(body)


def write_frame(stream: IO[bytes], message: dict[str, Any]) -> None:
    body = json.dumps(message, separators=(",", ":"), default=_json_default).encode()
    stream.write(FRAME.pack(len(body)) + body)
    stream.flush()


def _json_default(value: Any) -> Any:
    # As the Lambda runtime's serializer: Decimals (DynamoDB numbers) become numbers; anything else is an error.
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def error_of(exc: BaseException, error_type: str | None = None, message: str | None = None) -> dict[str, Any]:
    return {
        "errorType": error_type or type(exc).__name__,
        "errorMessage": message if message is not None else str(exc),
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }


def load_handler(path: str) -> Callable[[Any, Any], Any]:
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise _InitError("Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}") from exc
    handler = getattr(module, attr, None)
    if not callable(handler):
        raise _InitError("Runtime.HandlerNotFound", f"Handler '{attr}' missing on module '{module_name}'")
    return handler  # type: ignore[no-any-return]


class _InitError(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def serve(requests: IO[bytes], answers: IO[bytes]) -> int:
    init = read_frame(requests)
    if not isinstance(init, dict) or "init" not in init:
        return 0
    config = init["init"]
    started = time.monotonic()
    try:
        handler = load_handler(str(config["handler"]))
    except _InitError as exc:
        print(f"[ERROR] {exc.error_type}: {exc}", file=sys.stderr, flush=True)
        traceback.print_exc()
        write_frame(answers, {"error": error_of(exc, exc.error_type)})
        return 1
    write_frame(answers, {"ready": {"init_ms": round((time.monotonic() - started) * 1000, 1)}})
    log_stream = new_log_stream_name()
    while True:
        request = read_frame(requests)
        if request is None:
            return 0
        context = LambdaContext(
            str(config["function_name"]),
            timeout_seconds=float(config["timeout"]),
            memory_limit_in_mb=int(config["memory_mb"]),
            aws_request_id=str(request["request_id"]),
            deadline=float(request["deadline"]),
            log_stream_name=log_stream,
        )
        try:
            answer: dict[str, Any] = {"id": request["id"], "result": handler(request["event"], context)}
            try:
                write_frame(answers, answer)
                continue
            except (TypeError, ValueError) as exc:
                failure = error_of(exc, "Runtime.MarshalError", f"Unable to marshal response: {exc}")
        except Exception as exc:
            failure = error_of(exc)
            # The Lambda runtime logs a handler's error the same way.
            print(f"[ERROR] {failure['errorType']}: {failure['errorMessage']}", file=sys.stderr)
            traceback.print_exc()
            sys.stderr.flush()
        write_frame(answers, {"id": request["id"], "error": failure})


def main(argv: list[str]) -> int:
    if argv[:1] == ["--exec"]:
        runtime_pid, command = int(argv[1]), argv[3:]
        tie_to_runtime(runtime_pid)
        os.execvp(command[0], command)  # noqa: S606 - the task's command; the death signal stays armed
    runtime_pid, in_fd, out_fd = (int(a) for a in argv[:3])
    tie_to_runtime(runtime_pid)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    with os.fdopen(in_fd, "rb") as requests, os.fdopen(out_fd, "wb") as answers:
        return serve(requests, answers)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
