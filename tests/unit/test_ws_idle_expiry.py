"""Connection records expire like API Gateway's connections: 10 minutes after the last message, 2 h at most."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
from agent_machine.settings import get_settings
from agent_machine.store import connections
from local_runtime.events import LambdaContext, websocket_event
from machine_ws.handler import handler

from tests.unit.test_ws_handler import Management, connected, make_task, mgmt  # noqa: F401 (fixture)


def meta(connection_id: str) -> dict[str, Any]:
    item = boto3.client("dynamodb").get_item(
        TableName=get_settings().connections_table,
        Key={"connection_id": {"S": connection_id}, "sk": {"S": "META"}},
        ConsistentRead=True,
    )["Item"]
    return {k: int(v["N"]) for k, v in item.items() if "N" in v}


def message(connection_id: str, body: dict[str, Any], connected_at: float) -> dict[str, Any]:
    event = websocket_event("$default", connection_id, body=json.dumps(body), connected_at=int(connected_at * 1000))
    result: dict[str, Any] = handler(event, LambdaContext("ws"))
    return result


def test_each_message_extends_the_record_by_the_idle_timeout(mgmt: Management) -> None:  # noqa: F811
    connection_id = connected()
    start = meta(connection_id)
    assert start["expires_at"] - start["connected_at"] <= 600  # idle unless it talks
    connected_at = time.time() - 300
    before = time.time()
    message(connection_id, {"action": "ping"}, connected_at)
    after = meta(connection_id)
    assert int(before) + 600 <= after["expires_at"] <= int(time.time()) + 600
    assert int(before) <= after["last_active"] <= int(time.time())
    assert mgmt.frames(connection_id)[-1]["type"] == "pong"


def test_the_two_hour_limit_caps_the_extension(mgmt: Management) -> None:  # noqa: F811
    connection_id = connected()
    connected_at = time.time() - 2 * 3600 + 120  # 2 minutes before API Gateway closes it
    message(connection_id, {"action": "ping"}, connected_at)
    assert meta(connection_id)["expires_at"] == int(connected_at + 2 * 3600)


def test_subscriptions_outlive_the_idle_window_of_a_live_connection(mgmt: Management) -> None:  # noqa: F811
    connection_id = connected()
    task = make_task()
    message(connection_id, {"action": "subscribe", "task_id": task.task_id}, time.time())
    assert connections.subscribers([f"task#{task.task_id}"]) == {connection_id}
    sub = boto3.client("dynamodb").get_item(
        TableName=get_settings().connections_table,
        Key={"connection_id": {"S": connection_id}, "sk": {"S": f"SUB#task#{task.task_id}"}},
    )["Item"]
    assert int(sub["expires_at"]["N"]) >= meta(connection_id)["connected_at"] + 2 * 3600 - 5


def test_a_message_from_an_unknown_connection_creates_no_record(mgmt: Management) -> None:  # noqa: F811
    assert message("never-connected=", {"action": "ping"}, time.time()) == {"statusCode": 200}
    assert connections.count() == 0
