"""The local API Gateway against the AWS wire shapes: GetConnection through boto3, binary WebSocket frames, and
CORS preflights answered from the template's CorsConfiguration before the authorizer."""

from __future__ import annotations

import json
import urllib.request

import boto3
import pytest
from websockets.sync.client import connect

from tests.e2e.conftest import RunningMachine

pytestmark = pytest.mark.e2e


def test_get_connection_round_trips_through_boto3(local_machine: RunningMachine) -> None:
    with connect(f"{local_machine.ws_url}?token={local_machine.api_token}", user_agent_header="fidelity-test/1") as ws:
        ws.send(json.dumps({"action": "subscribe", "topic": "all", "id": "s"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
        key, secret = _credentials(local_machine)
        client = boto3.client(  # signed with the runtime's own credentials, as its functions sign
            "apigatewaymanagementapi",
            endpoint_url=local_machine.base_url,
            region_name="us-east-1",
            aws_access_key_id=key,
            aws_secret_access_key=secret,
        )
        listing = _connection_ids(local_machine)
        assert listing, "no live connection"
        info = client.get_connection(ConnectionId=listing[0])
        assert info["ConnectedAt"].year >= 2024
        assert info["LastActiveAt"] >= info["ConnectedAt"]
        assert info["Identity"]["SourceIp"]
        assert info["Identity"]["UserAgent"] == "fidelity-test/1"
        client.post_to_connection(ConnectionId=listing[0], Data=b'{"type":"hello"}')
        assert json.loads(ws.recv(timeout=10)) == {"type": "hello"}


def _credentials(machine: RunningMachine) -> tuple[str, str]:
    """The credentials the runtime gave its functions (runtime.json, in its 0700 data folder)."""
    creds = json.loads((machine.data_dir / "runtime.json").read_text())["credentials"]
    return str(creds["AWS_ACCESS_KEY_ID"]), str(creds["AWS_SECRET_ACCESS_KEY"])


def _connection_ids(machine: RunningMachine) -> list[str]:
    """The live connection ids, from the Connections table of the machine's emulator (runtime.json says where)."""
    info = json.loads((machine.data_dir / "runtime.json").read_text())
    key, secret = _credentials(machine)
    ddb = boto3.client(
        "dynamodb",
        endpoint_url=info["endpoint"],
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )
    items = ddb.scan(TableName=info["env"]["CONNECTIONS_TABLE"])["Items"]
    return sorted({i["connection_id"]["S"] for i in items if i["sk"]["S"] == "META"})


def test_binary_frames_are_handled(local_machine: RunningMachine) -> None:
    with connect(f"{local_machine.ws_url}?token={local_machine.api_token}") as ws:
        ws.send(json.dumps({"action": "ping", "id": 1}).encode())  # a binary frame carrying JSON
        assert json.loads(ws.recv(timeout=10)) == {"type": "pong", "id": 1}
        ws.send(b"\xff\xfe\x00garbage")
        reply = json.loads(ws.recv(timeout=10))
        assert reply["type"] == "error"
        ws.send(json.dumps({"action": "ping", "id": 2}))  # the connection is still fine
        assert json.loads(ws.recv(timeout=10)) == {"type": "pong", "id": 2}
    assert "KeyError" not in local_machine.logs()


def test_cors_preflight_is_answered_without_the_authorizer(local_machine: RunningMachine) -> None:
    request = urllib.request.Request(
        f"{local_machine.base_url}/api/tasks",
        method="OPTIONS",
        headers={
            "Origin": "https://dashboard.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 204
        assert resp.headers["access-control-allow-origin"] == "*"  # CorsOrigins defaults to "*"
        assert "POST" in resp.headers["access-control-allow-methods"]
        assert resp.headers["access-control-allow-headers"] == "authorization,content-type"
        assert resp.headers["access-control-max-age"] == "600"
    # a plain request still needs the token
    try:
        urllib.request.urlopen(f"{local_machine.base_url}/api/tasks", timeout=10)
        raise AssertionError("expected 401")
    except urllib.error.HTTPError as err:
        assert err.code == 401
