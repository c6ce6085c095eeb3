"""The moto server, with DynamoDB requests taken one at a time.

moto's DynamoDB backend is not thread-safe: a TransactWriteItems copies and restores whole tables, so a
transaction racing other writes can fail with "dictionary changed size during iteration" or, on rollback, wipe
writes that were acknowledged in between. DynamoDB itself serialises conflicting writes; a lock around each
DynamoDB action gives the emulator the same guarantee (the other services keep their threads).

Started by the local runtime, it answers only requests signed with the runtime's own access key (`only_for`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from moto.dynamodb.responses import DynamoHandler

from local_runtime import sigv4
from local_runtime.emulator import ACCESS_KEY_ENV

_lock = threading.RLock()
_call_action = DynamoHandler.call_action


def _serialised_call_action(self: DynamoHandler) -> Any:
    with _lock:
        return _call_action(self)


DynamoHandler.call_action = _serialised_call_action  # type: ignore[method-assign]


def _forbidden(start_response: Callable[..., Any]) -> list[bytes]:
    body = b'{"__type": "AccessDeniedException", "message": "not signed with the local runtime\'s credentials"}'
    start_response(
        "403 Forbidden",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("x-amzn-ErrorType", "AccessDeniedException"),
        ],
    )
    return [body]


def only_for(access_key_id: str) -> None:
    """Every request (the AWS APIs and moto's own /moto-api/, which can dump or reset everything) must be signed
    with the runtime's access key: a process that finds the port (/proc/net/tcp lists it) gets 403."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    answer = DomainDispatcherApplication.__call__

    def guarded(self: DomainDispatcherApplication, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        shown = sigv4.access_key_id(environ.get("HTTP_AUTHORIZATION"), environ.get("QUERY_STRING"))
        if shown is None or not sigv4.same(shown, access_key_id):
            return _forbidden(start_response)
        return answer(self, environ, start_response)

    DomainDispatcherApplication.__call__ = guarded  # type: ignore[method-assign]


if __name__ == "__main__":
    from moto.server import main

    # The port comes in MOTO_PORT and the key in the environment, never on the command line (emulator.py).
    key = os.environ.pop(ACCESS_KEY_ENV, "")
    if key:
        only_for(key)
    main([])
