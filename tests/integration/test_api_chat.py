"""POST /api/chat: 202 {task_id, session_id}, an SQS message with the task id, sessions continue, bad input."""

from __future__ import annotations

import json

import pytest
from local_runtime.provision import Provisioned

from tests.integration.test_ingress_github import TOKEN, all_tasks, call, queue_bodies

JSON = {**TOKEN, "content-type": "application/json"}


def chat(body: object) -> tuple[int, object]:
    return call("POST", "/api/chat", json.dumps(body).encode(), JSON)


def test_chat_creates_a_session_a_task_and_a_message(stack: Provisioned) -> None:
    status, answer = chat({"message": "What does the repo do?"})
    assert status == 202
    assert isinstance(answer, dict) and set(answer) == {"task_id", "session_id"}
    assert queue_bodies(stack) == [{"task_id": answer["task_id"]}]
    task = all_tasks(stack)[0]
    assert (task["agent"], task["source"], task["prompt"]) == ("brain", "chat", "What does the repo do?")
    status, again = chat({"message": "And the tests?", "session_id": answer["session_id"]})
    assert status == 202
    assert isinstance(again, dict) and again["session_id"] == answer["session_id"]
    status, detail = call("GET", f"/api/sessions/{answer['session_id']}", headers=TOKEN)
    assert status == 200
    assert isinstance(detail, dict)
    assert detail["totals"]["tasks"] == 2
    assert [t["prompt"] for t in detail["tasks"]] == ["And the tests?", "What does the repo do?"]


def test_unknown_session_is_404_and_writes_nothing(stack: Provisioned) -> None:
    status, answer = chat({"message": "hi", "session_id": "no-such-session"})
    assert status == 404
    assert isinstance(answer, dict) and answer["error"]["code"] == "unknown_session"
    assert all_tasks(stack) == []
    assert queue_bodies(stack) == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{", 400),
        (b'{"message": ', 400),
        (b"[" * 50_000 + b"]" * 50_000, 400),
        (b"{}", 422),
        (b'{"message": ""}', 422),
        (b'{"message": 5}', 422),
        (b'{"message": "   "}', 422),
        (b'{"message": "hi", "session_id": ""}', 422),
        (b"null", 422),
    ],
)
def test_bad_bodies(stack: Provisioned, body: bytes, status: int) -> None:
    got, answer = call("POST", "/api/chat", body, JSON)
    assert got == status, answer
    assert isinstance(answer, dict) and {"code", "message"} <= set(answer["error"])
    assert all_tasks(stack) == []


def test_wrong_content_type_is_415(stack: Provisioned) -> None:
    form = {**TOKEN, "content-type": "application/x-www-form-urlencoded"}
    status, answer = call("POST", "/api/chat", b"message=hi", form)
    assert status == 415
    assert isinstance(answer, dict) and answer["error"]["code"] == "unsupported_media_type"


def test_start_chat_for_the_websocket(stack: Provisioned) -> None:
    from agent_machine.domain.chat import ChatStarted, UnknownSession, start_chat

    started = start_chat("hello")
    assert isinstance(started, ChatStarted) and started.new_session
    assert start_chat("again", started.session_id).session_id == started.session_id
    with pytest.raises(UnknownSession):
        start_chat("x", "missing")
