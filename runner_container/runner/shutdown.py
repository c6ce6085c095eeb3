"""Clean shutdown of everything the runner started in this process (the local runtime calls `shutdown_all`).

Running CLIs are interrupted (SIGINT: they write their result, the task is booked as stopped with its cost) and
the local "Fargate" children get SIGTERM (they do the same for their runs).
"""

from __future__ import annotations

import time

from runner.fargate import shutdown_local_children
from runner.run import active_runs


def shutdown_all(timeout: float = 15.0) -> None:
    for controller in active_runs().values():
        controller.request("shutdown")
    shutdown_local_children(timeout)
    end = time.monotonic() + timeout
    while active_runs() and time.monotonic() < end:
        time.sleep(0.05)
