"""The moto server, with DynamoDB requests taken one at a time.

moto's DynamoDB backend is not thread-safe: a TransactWriteItems copies and restores whole tables, so a
transaction racing other writes can fail with "dictionary changed size during iteration" or, on rollback, wipe
writes that were acknowledged in between. DynamoDB itself serialises conflicting writes; a lock around each
DynamoDB action gives the emulator the same guarantee (the other services keep their threads).
"""

from __future__ import annotations

import threading
from typing import Any

from moto.dynamodb.responses import DynamoHandler

_lock = threading.RLock()
_call_action = DynamoHandler.call_action


def _serialised_call_action(self: DynamoHandler) -> Any:
    with _lock:
        return _call_action(self)


DynamoHandler.call_action = _serialised_call_action  # type: ignore[method-assign]


if __name__ == "__main__":
    from moto.server import main

    main()
