"""A skill saved through the REST API with an empty `agents` list (the dashboard: "Empty: every agent") is on disk
in the next run's folder of every agent, the brain's and planning's alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agent_machine.domain import agents
from agent_machine.models import SkillSpec
from agent_machine.store import output
from local_runtime.events import LambdaContext, http_event
from local_runtime.provision import Provisioned
from machine_api.handler import handler as api_handler

from tests.conftest import TEST_SECRETS
from tests.integration.runner_support import run_task

pytestmark = pytest.mark.timeout(90)


def init_skills(task_id: str) -> list[str]:
    init = next(e.payload["data"] for e in output.read_events(task_id) if e.payload.get("kind") == "system")
    return list(init["skills"])


def test_a_skill_for_no_agent_in_particular_reaches_every_agent(
    stack: Provisioned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_WORK_ROOT", str(tmp_path / "runner"))
    skill = {"name": "house-rules", "description": "Rules of the house.", "content": "Be brief.", "agents": []}
    event = http_event(
        "POST",
        "/api/skills",
        body=json.dumps(skill).encode(),
        route_key="ANY /api/{proxy+}",
        headers={"content-type": "application/json", "authorization": f"Bearer {TEST_SECRETS['API_TOKEN']}"},
    )
    response = api_handler(event, LambdaContext("ApiFunction"))
    assert response["statusCode"] == 201, response

    brain = run_task(stack, "[[text]] hi")
    assert "house-rules" in init_skills(brain.task_id)
    planning = run_task(stack, "[[text]] plan", agent="planning")
    assert "house-rules" in init_skills(planning.task_id)

    named = SkillSpec(name="only-brain", agents=["brain"])
    assert agents.skill_applies(named, "brain") and not agents.skill_applies(named, "planning")
