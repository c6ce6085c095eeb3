"""The PLAN.md a run wrote, read back after the CLI has exited (a planning agent's plan, kept with the task).

Only a plan this run wrote counts: one modified since the CLI started and not tracked by git (a cloned
repository's own PLAN.md is not the agent's plan). It is read as the CLI's user left it, never through a link.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from runner import config, sandbox, workspace


def read_plan(ws: workspace.Workspace, *, written_since: float) -> str | None:
    """A PLAN.md the run wrote: modified since `written_since` (wall clock) and not tracked by git (a cloned
    repository's own PLAN.md is checked out before the CLI starts, but tracked)."""
    for folder in (ws.cwd, ws.agent_dir):
        path = folder / "PLAN.md"
        try:
            if not path.is_file() or path.stat().st_mtime < written_since - 1.0 or tracked_by_git(path):
                continue
            return sandbox.read_owned_text(path, config.MAX_PLAN_BYTES)  # not through a link the CLI made
        except OSError:
            continue
    return None


def tracked_by_git(path: Path) -> bool:
    try:
        done = subprocess.run(
            ["git", "-c", "core.fsmonitor=false", "ls-files", "--error-unmatch", "--", path.name],
            cwd=path.parent,
            capture_output=True,
            timeout=10,
            check=False,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_CONFIG_NOSYSTEM": "1", "LANG": "C.UTF-8"},
            **sandbox.subprocess_options(),  # as the clone's owner: git refuses another user's repository
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
