"""One comment delivered by three webhooks at once (a repository's, its organisation's and an App's: three delivery
ids, the same comment id) makes one task, through the local runtime's HTTP port.

20 OWNER "@claude" comments on 5 new issues, each sent by three webhooks, plus 12 byte-for-byte redeliveries: all
released at once from 36 threads (gateway -> ApiFunction -> one transaction + one SendMessage per task). The
transaction's source claim lets exactly one delivery of each comment create its task; the others are answered
202 "duplicate" with that task, and every delivery is on record once.
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

COMMENTS = 20
HOOKS = ("repo", "org", "app")
ISSUES = 5
REDELIVERED = 12
THREADS = 36


def test_a_comment_from_three_webhooks_at_once_makes_one_task(tmp_path: Path) -> None:
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
        rng = random.Random(20240608)
        deliveries: list[tuple[int, str, bytes, dict[str, str]]] = []
        for i in range(COMMENTS):
            comment_id = 990000 + i
            for hook in HOOKS:
                delivery = f"{hook}-{uuid.uuid4()}"
                body, headers = github_comment(
                    delivery, issue=8000 + i % ISSUES, comment_id=comment_id, text=f"@claude [[text]] dup {i}"
                )
                deliveries.append((comment_id, delivery, body, headers))
        requests = deliveries + rng.sample(deliveries, REDELIVERED)
        rng.shuffle(requests)

        start = threading.Barrier(THREADS)
        url = f"{machine.base_url}/webhooks/github"

        def released(item: tuple[int, str, bytes, dict[str, str]]) -> tuple[int, str, int, dict[str, str], Any]:
            comment_id, delivery, body, headers = item
            with contextlib.suppress(threading.BrokenBarrierError):
                start.wait(timeout=30)
            return (comment_id, delivery, *post(url, body, headers))

        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            answers = list(pool.map(released, requests))

        not_accepted = [(d, status, body) for _, d, status, _, body in answers if status != 202]
        assert not not_accepted, f"{len(not_accepted)} of {len(answers)} not answered 202: {not_accepted[:3]}"
        task_of_comment: dict[int, set[str]] = defaultdict(set)
        status_of_delivery: dict[str, set[str]] = defaultdict(set)
        for comment_id, delivery, _, _, body in answers:
            task_of_comment[comment_id].add(as_dict(body)["task_id"])
            status_of_delivery[delivery].add(as_dict(body)["status"])
        assert all(len(ids) == 1 for ids in task_of_comment.values()), task_of_comment
        # A redelivery gets its delivery's first answer: one status per delivery id.
        assert all(len(s) == 1 for s in status_of_delivery.values()), status_of_delivery
        created = Counter(next(iter(s)) for s in status_of_delivery.values())
        assert created == {"task_created": COMMENTS, "duplicate": COMMENTS * (len(HOOKS) - 1)}, created
        redelivered = Counter(h.get("x-webhook-redelivery") for _, _, _, h, _ in answers)
        assert redelivered["true"] == REDELIVERED, redelivered

        # What the machine recorded: one task per comment, one record per delivery id.
        answered = {next(iter(ids)) for ids in task_of_comment.values()}
        stored = paged(machine, "/api/tasks", source="github", limit=500)
        stored_ids = [t["task_id"] for t in stored]
        assert len(stored_ids) == len(set(stored_ids)) == COMMENTS, Counter(stored_ids).most_common(3)
        assert set(stored_ids) == answered
        records = [e for e in paged(machine, "/api/events", limit=500) if e.get("sender") == "github"]
        assert Counter(e["delivery_id"] for e in records) == Counter({d: 1 for _, d, _, _ in deliveries})
        assert Counter(e["decision"] for e in records) == {"task_created": COMMENTS, "ignored": 2 * COMMENTS}
        assert {e["task_id"] for e in records} == answered
        # Each issue's session counts its tasks once.
        per_session = Counter(t["session_id"] for t in stored)
        assert len(per_session) == ISSUES, per_session
        for session_id, count in per_session.items():
            status, detail = machine.api("GET", f"/api/sessions/{session_id}")
            assert status == 200
            assert as_dict(detail)["session"]["task_count"] == count, (session_id, detail)
    finally:
        machine.stop()
