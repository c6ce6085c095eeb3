"""Status, costs and events over the REST API."""

from __future__ import annotations

from agent_machine.models import TaskSource
from local_runtime.provision import Provisioned

from tests.integration.test_api_tasks import get, submit
from tests.integration.test_ingress_github import comment_payload, deliver


def _book(day: str, agent: str, source: str, session_id: str, cost: float) -> None:
    from agent_machine import aws
    from agent_machine.store import costs

    aws.dynamodb().transact_write_items(
        TransactItems=costs.add_cost_items(
            day=day,
            agent=agent,
            source=source,
            session_id=session_id,
            cost_usd=cost,
            input_tokens=100,
            output_tokens=10,
        )
    )


def test_status(stack: Provisioned) -> None:
    from agent_machine.store import costs, tasks

    submit("a")
    running = submit("b")
    tasks.start(running.task_id, "r", "lambda")
    _book(costs.today(), "brain", "chat", running.session_id, 1.25)
    status, body = get("/api/status")
    assert status == 200
    assert (body["queued_tasks"], body["running_tasks"], body["sessions"]) == (1, 1, 2)
    assert body["queue"] == {"waiting": 2, "in_flight": 0}
    assert body["cost_today_usd"] == 1.25
    assert body["max_concurrent_tasks"] >= 1
    assert body["budgets"]["remaining_today_usd"] == body["budgets"]["daily_usd"] - 1.25
    assert body["machine_id"]


def test_costs_by_day_agent_source_session(stack: Provisioned) -> None:
    from agent_machine.store import costs

    today, yesterday, old = costs.days_back(40)[0], costs.days_back(40)[1], costs.days_back(40)[35]
    _book(today, "brain", "chat", "s1", 1.0)
    _book(today, "planning", "github", "s2", 2.0)
    _book(yesterday, "planning", "github", "s2", 0.5)
    _book(old, "executor", "jira", "s3", 9.0)  # outside a 7-day window
    status, body = get("/api/costs", "days=7")
    assert status == 200
    assert body["today"]["cost_usd"] == 3.0 and body["today"]["tasks"] == 2
    assert [d["key"] for d in body["by_day"]] == list(reversed(costs.days_back(7)))
    assert body["by_day"][-1]["cost_usd"] == 3.0 and body["by_day"][-2]["cost_usd"] == 0.5
    assert [(b["key"], b["cost_usd"]) for b in body["by_agent"]] == [("planning", 2.5), ("brain", 1.0)]
    assert [(b["key"], b["cost_usd"]) for b in body["by_source"]] == [("github", 2.5), ("chat", 1.0)]
    assert [b["key"] for b in body["by_session"]] == ["s2", "s1"]
    month = sum(c for d, c in ((today, 3.0), (yesterday, 0.5), (old, 9.0)) if d[:7] == today[:7])
    assert body["month"]["cost_usd"] == month
    assert body["budgets"]["spent_today_usd"] == 3.0
    assert get("/api/costs", "days=0")[0] == 422


def test_events_show_deliveries_and_decisions_newest_first(stack: Provisioned) -> None:
    deliver("issue_comment", comment_payload("@claude hi"), "ev-1")
    deliver("issue_comment", comment_payload("@claude hi", "NONE"), "ev-2")
    deliver("ping", {"zen": "z", "hook_id": 1}, "ev-3")
    status, page = get("/api/events", "limit=2")
    assert status == 200
    assert [(e["delivery_id"], e["decision"]) for e in page["items"]] == [("ev-3", "answered"), ("ev-2", "ignored")]
    status, rest = get("/api/events", f"limit=2&cursor={page['cursor']}")
    assert [(e["delivery_id"], e["decision"], e["sender"]) for e in rest["items"]] == [
        ("ev-1", "task_created", "github")
    ]
    assert rest["items"][0]["task_id"]
    assert submit("x", source=TaskSource.CHAT)
