"""How the gateway and the event sources invoke a function (`FunctionInvoker`), and an in-process invoker.

The local runtime invokes through `workers.WorkerPools`: each function in its own worker processes. `Invoker`
runs handlers in threads of the calling process instead (import by the template's handler string, call with
(event, context), each thread with an event loop: Mangum expects one), for tests that exercise the gateway or a
handler without execution environments.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from local_runtime.events import LambdaContext

Handler = Callable[[dict[str, Any], Any], Any]


class FunctionInvoker(Protocol):
    async def invoke(self, handler_path: str, event: dict[str, Any], context: LambdaContext) -> Any:
        """The handler's result; raises when the invocation fails. `context.function_name` names the function."""
        ...


_loaded: dict[str, Handler] = {}
_load_lock = threading.Lock()


def load_handler(path: str) -> Handler:
    """'machine_api.handler.handler' -> the callable, imported once (like a warm Lambda container)."""
    with _load_lock:
        if path not in _loaded:
            module_name, _, attr = path.rpartition(".")
            module = importlib.import_module(module_name)
            _loaded[path] = getattr(module, attr)
        return _loaded[path]


def _thread_loop() -> None:
    asyncio.set_event_loop(asyncio.new_event_loop())


class Invoker:
    """A pool of 'warm containers': handlers run concurrently in threads, each with its own loop."""

    def __init__(self, workers: int, name: str) -> None:
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name, initializer=_thread_loop)

    def invoke_sync(self, handler_path: str, event: dict[str, Any], context: LambdaContext) -> Any:
        return load_handler(handler_path)(event, context)

    async def invoke(self, handler_path: str, event: dict[str, Any], context: LambdaContext) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, self.invoke_sync, handler_path, event, context)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
