"""A skill created through the REST API is on disk, as Claude Code's own SKILL.md, in the next run's folder."""

from __future__ import annotations

import json

from agent_machine.store import output
from local_runtime.events import LambdaContext, http_event
from local_runtime.provision import Provisioned
from machine_api.handler import handler as api_handler

from tests.conftest import TEST_SECRETS
from tests.integration.runner_support import run_task


def test_a_skill_made_through_the_api_reaches_the_next_run(stack: Provisioned) -> None:
    skill = {
        "name": "release-notes",
        "description": "Write release notes from merged PRs.",
        "content": "List merged pull requests, group by label.",
        "agents": ["brain"],
    }
    event = http_event(
        "POST",
        "/api/skills",
        body=json.dumps(skill).encode(),
        route_key="ANY /api/{proxy+}",
        headers={"content-type": "application/json", "authorization": f"Bearer {TEST_SECRETS['API_TOKEN']}"},
    )
    response = api_handler(event, LambdaContext("ApiFunction"))
    assert response["statusCode"] == 201, response

    task = run_task(stack, "[[text]] what skills do you have?")

    # The fake CLI lists the skills it finds under <cwd>/.claude/skills/<name>/SKILL.md, as the real one does.
    init = next(e.payload["data"] for e in output.read_events(task.task_id) if e.payload.get("kind") == "system")
    assert "release-notes" in init["skills"]
