"""bench/bench_memory.py's warm-up waits for the functions a schedule runs: it reads them from the template as
the runtime does, with the runtime's LOCAL_SCHEDULE_SECONDS override."""

from __future__ import annotations

import pytest

from bench import bench_memory


def test_the_scheduled_functions_are_read_from_the_template(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_SCHEDULE_SECONDS", raising=False)
    assert bench_memory.scheduled_functions() == {"SweeperFunction": 60.0}  # template.yaml: rate(1 minute)

    monkeypatch.setenv("LOCAL_SCHEDULE_SECONDS", "2.5")
    assert bench_memory.scheduled_functions() == {"SweeperFunction": 2.5}
