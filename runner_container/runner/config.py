"""The runner's own limits and places. Module attributes (not frozen settings) so tests can tighten them.

Machine-wide configuration (tables, budgets, timeouts) stays in `agent_machine.settings`; these are the
runner's engineering bounds: how often it beats, how long it waits, how much it keeps in memory.
"""

from __future__ import annotations

import gc
import os
import tempfile
from pathlib import Path

# Control loop.
HEARTBEAT_SECONDS = 1.0  # the task's heartbeat; also how fast a stop request is noticed
STALE_AFTER_SECONDS = 30.0  # a running task whose heartbeat is older than this lost its runner
STOP_GRACE_SECONDS = 5.0  # SIGINT -> SIGKILL of the CLI's process group
DRAIN_SECONDS = 2.0  # after the CLI exits, how long its stdout/stderr may still be read
LAMBDA_SAFETY_MARGIN_SECONDS = 30.0  # Lambda time kept back for SIGINT, grace, booking and upload
SESSION_BUSY_DELAY_SECONDS = 4  # another task of the session runs: look again this much later
# The session's lease (one running task per session): it expires this long after its last renewal (a dead
# runner's lease lets go by itself), and a live runner renews it with its heartbeat every RENEW seconds.
SESSION_LEASE_SECONDS = 15.0
SESSION_LEASE_RENEW_SECONDS = 5.0
# Messages of a session run in the order their tasks were created: a task waits for older queued ones of its
# session, but not for one created this much earlier (a queued task whose message was lost must not block it).
SESSION_ORDER_WINDOW_SECONDS = 900.0
FARGATE_WATCHDOG_SECONDS = 900  # a delayed copy of a dispatched task's message re-checks its run
# A queued task handed to Fargate this long ago and still not claimed: that run was lost (it never started, or
# died before its claim), counted as an attempt. Less than the watchdog's delay, so the watchdog copy acts on it.
FARGATE_CLAIM_WAIT_SECONDS = 600.0

# Output pipeline.
# Coalescing window: at most one flush (one write, one post per watcher) per interval while output keeps coming.
# 10 ms keeps a line's lag to its watchers within ~20 ms at p95 under a burst (window + one write + one post),
# for at most 100 flushes a second (DynamoDB bills by size, not by call, so smaller batches cost about the same).
FLUSH_INTERVAL_SECONDS = 0.010
FLUSH_MAX_EVENTS = 500  # ... unless this many events are waiting (also the most one flush takes)
FLUSH_MAX_BYTES = 256 * 1024  # ... or this many bytes
MAX_PENDING_BYTES = 4 * 1024 * 1024  # the reader waits (the CLI blocks on its pipe) above this
SUBSCRIBER_CACHE_SECONDS = 1.0
TERMINAL_STORE_WAIT_SECONDS = 10.0  # how long the booking waits for the terminal event to be stored
MAX_OUTPUT_BYTES = 16 * 1024 * 1024  # per task: output beyond this is counted, not stored or pushed

# Stream reading.
READ_CHUNK_BYTES = 64 * 1024
MAX_LINE_BYTES = 1024 * 1024  # a longer stdout line is truncated (the rest is counted and dropped) ...
LINE_TAIL_BYTES = 64 * 1024  # ... except its last bytes: a result line's cost and usage come after its text
MAX_EVENT_BYTES = 200 * 1024  # a line bigger than this is stored/pushed as a truncated text preview
PREVIEW_BYTES = 16 * 1024
STDERR_TAIL_LINES = 40
STDERR_LINE_BYTES = 2048

# What a task keeps (DynamoDB items are at most 400 KB).
MAX_RESULT_BYTES = 100 * 1024
MAX_PLAN_BYTES = 100 * 1024
MAX_ERROR_BYTES = 8 * 1024

# Delegation (issue 6): caps on the task tree an agent can grow.
MAX_DELEGATION_DEPTH = 2  # brain (0) -> planning (1) -> executor (2)
MAX_CHILDREN_PER_TASK = 5
MAX_WAIT_SECONDS = 840.0
WAIT_POLL_SECONDS = 2.0

CLONE_TIMEOUT_SECONDS = 300.0
CLI_INSTALL_HINT = "install it with `npm install -g @anthropic-ai/claude-code@2.1.197`"


def work_root() -> Path:
    """Where task folders live: RUNNER_WORK_ROOT, else <tmp>/agent-machine (Lambda: /tmp is the writable disk).

    The path must be the same on every runner: a resumed session's working folder is found by its path.
    """
    configured = os.environ.get("RUNNER_WORK_ROOT")
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "agent-machine"


def agents_dir() -> Path:
    """The agent trees shipped with the runner (runner_container/agents in the repository, /var/task/agents in
    the image)."""
    configured = os.environ.get("RUNNER_AGENTS_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parent.parent / "agents"


def code_root() -> Path:
    """The folder that holds the `runner` package (for `python -m runner.machine_mcp`)."""
    return Path(__file__).resolve().parent.parent


_frozen = False


def freeze_warm_state() -> None:
    """Move what is alive now (modules, pydantic schemas, botocore's service models and clients: the process's
    long-lived state) out of the garbage collector's reach. A full collection walks every tracked object with every
    thread stopped: with the warm state frozen it walks only what runs created since, instead of stalling a
    burst of output for 100-200 ms. Called once per process, after its warm-up (collected first, so no garbage is
    frozen)."""
    global _frozen
    if _frozen:
        return
    _frozen = True
    gc.collect()
    gc.freeze()
