"""template.yaml: the WebSocket stage auto-deploys, and functions only get write access to tables they write."""

from __future__ import annotations

from typing import Any

from tests.unit.test_template import props


def _policies(logical_id: str) -> list[dict[str, Any]]:
    policies: list[dict[str, Any]] = props(logical_id).get("Policies", [])
    return policies


def _access(logical_id: str, table: str) -> set[str]:
    return {kind for p in _policies(logical_id) for kind, arg in p.items() if arg == {"TableName": {"Ref": table}}}


def test_the_websocket_stage_auto_deploys_route_changes() -> None:
    stage = props("WebSocketStage")
    assert stage["AutoDeploy"] is True
    assert "DeploymentId" not in stage  # pinned to one deployment, later changes would never go live


def test_read_only_tables_get_read_policies() -> None:
    assert _access("ApiFunction", "CostsTable") == {"DynamoDBReadPolicy"}
    # the API writes Output: the task.stopped event of a task stopped while queued (domain.submission)
    assert _access("ApiFunction", "OutputTable") == {"DynamoDBCrudPolicy"}
    assert _access("WebSocketFunction", "OutputTable") == {"DynamoDBReadPolicy"}
    assert _access("WebSocketFunction", "CostsTable") == set()
