"""Handing long runs to Fargate: the configuration it reads, and how earlier records of such runs are read."""

from __future__ import annotations

from typing import Any

import pytest
from agent_machine import aws
from agent_machine.models import Task
from agent_machine.settings import Settings, get_settings
from pydantic import ValidationError
from runner import fargate


def test_an_empty_security_group_list_is_no_security_group() -> None:
    settings = Settings(ecs_subnets="subnet-a", ecs_security_groups="")
    assert settings.ecs_subnets == ["subnet-a"] and settings.ecs_security_groups == []
    assert Settings(ecs_security_groups=" sg-1 , ,sg-2 ").ecs_security_groups == ["sg-1", "sg-2"]


def test_fargate_is_ecs_or_off() -> None:
    assert Settings(fargate_mode="off").fargate_mode == "off"
    with pytest.raises(ValidationError):
        Settings(fargate_mode="local")


def test_a_run_recorded_as_local_by_an_earlier_version_reads_as_fargate() -> None:
    stored = Task(session_id="s", prompt="p").model_dump(mode="json") | {"run_mode": "local"}
    assert Task.model_validate(stored).run_mode == "fargate"
    assert Task.model_validate(stored | {"run_mode": "lambda"}).run_mode == "lambda"
    with pytest.raises(ValidationError):
        Task.model_validate(stored | {"run_mode": "elsewhere"})


def test_the_run_task_request_with_no_security_group(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    class FakeEcs:
        def run_task(self, **kwargs: Any) -> dict[str, Any]:
            calls.append(kwargs)
            return {"tasks": [], "failures": [{"reason": "RESOURCE:MEMORY", "detail": "no room"}]}

    for key, value in {
        "FARGATE_MODE": "ecs",
        "ECS_CLUSTER": "c",
        "ECS_TASK_DEFINITION": "td",
        "ECS_SUBNETS": "subnet-a",
        "ECS_SECURITY_GROUPS": "",
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    monkeypatch.setattr(aws, "ecs", lambda: FakeEcs())
    try:
        assert fargate.available()
        with pytest.raises(fargate.DispatchFailed, match="RESOURCE:MEMORY no room"):
            fargate.dispatch(Task(session_id="s", prompt="p", agent="executor"))
        assert calls[0]["networkConfiguration"]["awsvpcConfiguration"]["securityGroups"] == []
        monkeypatch.setenv("FARGATE_MODE", "off")
        get_settings.cache_clear()
        assert not fargate.available()
    finally:
        get_settings.cache_clear()
