"""`local_machine`: the local runtime started the way `make run-local` starts it, as a real child process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from local_runtime import harness
from local_runtime.harness import RunningMachine

from tests.conftest import FAKE_CLAUDE, TEST_SECRETS

__all__ = ["RunningMachine", "local_machine", "start_machine"]


def start_machine(
    tmp: Path, *, port: int | None = None, extra_env: dict[str, str] | None = None, persist: bool = True
) -> RunningMachine:
    """The local runtime with the tests' secrets and the fake CLI (local_runtime.harness does the starting)."""
    return harness.start_machine(
        tmp, secrets=TEST_SECRETS, cli_path=FAKE_CLAUDE, port=port, extra_env=extra_env, persist=persist
    )


@pytest.fixture
def local_machine(tmp_path: Path) -> Iterator[RunningMachine]:
    machine = start_machine(tmp_path)
    yield machine
    machine.stop()
