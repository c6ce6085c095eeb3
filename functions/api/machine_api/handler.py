"""Lambda entry point of ApiFunction: the FastAPI app behind Mangum (API Gateway HTTP API, payload 2.0)."""

from __future__ import annotations

import sys
from typing import Any

from mangum import Mangum

from machine_api.app import create_app

app = create_app()
_app_handler = Mangum(app, lifespan="off")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # Each invocation starts with no log keys another invocation appended on this thread (the local runtime runs
    # every function in one process, in shared threads). Without the logging module loaded there are none, and
    # importing it here would put Powertools (and botocore) on the cold path.
    observability = sys.modules.get("agent_machine.observability")
    if observability is not None:
        observability.get_logger().clear_state()
    return _app_handler(event, context)
