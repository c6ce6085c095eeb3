"""200 concurrent GitHub deliveries, 20 % of them redeliveries: every distinct delivery makes exactly one task.

Through the local runtime's HTTP port (gateway -> ApiFunction -> one transaction + one SendMessage per task),
all requests released at once from 50 threads. The 160 distinct deliveries are OWNER "@claude" comments on 10
issues that do not exist yet (16 each), so they also race to create each issue's session; the 40 redeliveries
repeat an original byte for byte (same X-GitHub-Delivery, same signature), possibly while it is in flight.
"""

from __future__ import annotations

import contextlib
import random
import threading
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import start_machine
from tests.faults import as_dict, github_comment, paged, post

pytestmark = pytest.mark.e2e

DISTINCT = 160
REDELIVERED = 40
ISSUES = 10
THREADS = 50


@pytest.mark.parametrize("issues", [DISTINCT, ISSUES], ids=["one-issue-each", "16-per-new-issue"])
def test_every_distinct_delivery_makes_exactly_one_task(tmp_path: Path, issues: int) -> None:
    machine = start_machine(
        tmp_path,
        persist=False,
        extra_env={
            "REPORT_BACK": "false",
            "GITHUB_API_URL": "http://127.0.0.1:9",
            "MAX_CONCURRENT_TASKS": "1",
            "LOG_LEVEL": "WARNING",
        },
    )
    try:
        rng = random.Random(20240607)
        originals = []
        for i in range(DISTINCT):
            delivery = str(uuid.uuid4())
            body, headers = github_comment(
                delivery, issue=7000 + i % issues, comment_id=880000 + i, text=f"@claude [[text]] storm {i}"
            )
            originals.append((delivery, body, headers))
        requests = originals + rng.sample(originals, REDELIVERED)
        rng.shuffle(requests)

        start = threading.Barrier(THREADS)
        url = f"{machine.base_url}/webhooks/github"

        def send(item: tuple[str, bytes, dict[str, str]]) -> tuple[str, int, dict[str, str], Any]:
            delivery, body, headers = item
            return (delivery, *post(url, body, headers))

        def released(item: tuple[str, bytes, dict[str, str]]) -> tuple[str, int, dict[str, str], Any]:
            with contextlib.suppress(threading.BrokenBarrierError):
                start.wait(timeout=30)
            return send(item)

        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            answers = list(pool.map(released, requests))

        not_accepted = [(d, status, body) for d, status, _, body in answers if status != 202]
        reasons = Counter(
            f"{status} {body.get('reason') if isinstance(body, dict) else body}"[:160]
            for _, status, body in not_accepted
        )
        assert not not_accepted, f"{len(not_accepted)} of {len(answers)} deliveries not answered 202: {reasons}"
        task_of: dict[str, set[str]] = defaultdict(set)
        for delivery, _, _, body in answers:
            task_of[delivery].add(as_dict(body)["task_id"])
        assert all(len(ids) == 1 for ids in task_of.values()), {d: ids for d, ids in task_of.items() if len(ids) != 1}
        redelivery_headers = Counter(h.get("x-webhook-redelivery") for _, _, h, _ in answers)
        assert redelivery_headers["true"] == REDELIVERED, redelivery_headers
        answered = {next(iter(ids)) for ids in task_of.values()}
        assert len(task_of) == DISTINCT and len(answered) == DISTINCT

        # What the machine recorded: one task per distinct delivery, one delivery record each, nothing else.
        stored = paged(machine, "/api/tasks", source="github", limit=500)
        stored_ids = [t["task_id"] for t in stored]
        assert len(stored_ids) == len(set(stored_ids)) == DISTINCT, Counter(stored_ids).most_common(3)
        assert set(stored_ids) == answered
        records = [e for e in paged(machine, "/api/events", limit=500) if e.get("sender") == "github"]
        by_delivery = Counter(e["delivery_id"] for e in records)
        assert set(by_delivery) == set(task_of) and set(by_delivery.values()) == {1}, by_delivery.most_common(3)
        assert {e["decision"] for e in records} == {"task_created"}, Counter(e["decision"] for e in records)
        assert {e["delivery_id"]: e["task_id"] for e in records} == {d: next(iter(ids)) for d, ids in task_of.items()}

        # Each issue is one session, and its task count is the number of its tasks (no double counting).
        per_session = Counter(t["session_id"] for t in stored)
        assert len(per_session) == issues, per_session
        for session_id, count in per_session.items():
            status, detail = machine.api("GET", f"/api/sessions/{session_id}")
            assert status == 200
            assert as_dict(detail)["session"]["task_count"] == count, (session_id, detail)
    finally:
        machine.stop()
