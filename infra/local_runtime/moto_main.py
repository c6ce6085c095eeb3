"""The local runtime's AWS emulator: the moto server, made fit to run a machine for days.

`python -m local_runtime.moto_main` (started by emulator.start_moto; the port comes in MOTO_PORT and the access
key in the environment, never on the command line). What it changes in moto, and why:

- DynamoDB requests are taken one at a time. moto's DynamoDB backend is not thread-safe (a transaction racing
  other writes could fail with "dictionary changed size during iteration" or, on rollback, undo acknowledged
  writes); DynamoDB itself serialises conflicting writes, and one lock around each action gives the same.
- Memory stays proportional to the data. moto appends every model object it ever creates to a class-level list
  (`BaseModel.__new__` -> `instances_tracked`, read only by its dashboard dump and its reset) and never clears
  it: every deep-copied table of a transaction, every overwritten S3 object with its buffer, stayed alive.
  Here nothing is tracked. And a TransactWriteItems backs up only the items it touches (the old item, or its
  absence), restored if the transaction fails, instead of deep-copying every table it names: its cost is
  O(items in the transaction), as on DynamoDB, not O(table size).
- Items whose TTL attribute has passed are deleted (moto never expires them; DynamoDB does within days), by a
  sweeper every LOCAL_TTL_SWEEP_SECONDS (60).
- SQS keeps the receipt handles of deleted messages (a second delete of one succeeds, as on SQS) in a set that
  never shrank: here the last DELETED_HANDLES_KEPT of each queue (a receipt handle expires on SQS anyway).
- Resident memory follows the data, not the peaks: two malloc arenas shared by the server's threads (one per
  connection thread otherwise), and the free pages given back to the OS every RELEASE_SECONDS (heap.py).
- The service a request is for is looked up once per host, not per request (moto's lookup costs about 1 ms,
  under a lock every request takes).
- HTTP/1.1 keep-alive. moto's werkzeug server closes every connection (`Connection: close`), so each AWS call
  cost a TCP connect and a new server thread. This server answers with a Content-Length and keeps the
  connection, so a client's pool reuses it.
- `GET /_local/writes` answers how many requests have changed the saved state (tables, buckets) so far: the
  runtime's autosave skips a save when the number has not moved (persistence.py).
- With an access key (LOCAL_EMULATOR_ACCESS_KEY_ID), every request (the AWS APIs, moto's own /moto-api/, which
  can dump or reset everything, and /_local/) must be signed with it: a process that finds the port
  (/proc/net/tcp lists it) gets 403.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any, cast
from urllib.parse import unquote

import moto.dynamodb.models as dynamodb_models
from moto.core.common_models import BaseModel
from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.sqs.models import Queue
from werkzeug.serving import make_server

from local_runtime import heap, sigv4
from local_runtime.emulator import ACCESS_KEY_ENV

WRITES_PATH = "/_local/writes"
TTL_SWEEP_ENV = "LOCAL_TTL_SWEEP_SECONDS"
DEFAULT_TTL_SWEEP_SECONDS = 60.0
RELEASE_SECONDS = 10.0  # free pages back to the OS this often (a few ms of malloc_trim)
DELETED_HANDLES_KEPT = 10_000  # per queue: ~2.5 MB at most
IDLE_CONNECTION_SECONDS = 120.0  # a kept-alive connection left idle this long is closed (the client reconnects)
# DynamoDB leaves alone an item whose TTL value lies more than five years in the past (a unit mistake, likely).
TTL_MAX_AGE_SECONDS = 5 * 365 * 24 * 3600

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# --------------------------------------------------------------------------------------------- DynamoDB lock

_lock = threading.RLock()
_call_action = DynamoHandler.call_action


def _serialised_call_action(self: DynamoHandler) -> Any:
    with _lock:
        return _call_action(self)


DynamoHandler.call_action = _serialised_call_action  # type: ignore[method-assign]

# --------------------------------------------------------------------------------------------- dispatch

_backend_for_host = DomainDispatcherApplication.get_backend_for_host
_backends_by_host: dict[str, Any] = {}
MAX_CACHED_HOSTS = 256  # hosts are service.region names, a handful; the cap only bounds odd unsigned paths


def _cached_backend_for_host(self: DomainDispatcherApplication, host: str | None) -> Any:
    """moto finds the service of every request by listing its package folder (a stat per service) and trying
    hundreds of URL patterns, under one lock shared by all requests: about a millisecond each. The answer for a
    host never changes."""
    if host is None:
        return None
    found = _backends_by_host.get(host)
    if found is None:
        found = _backend_for_host(self, host)
        if found is not None and len(_backends_by_host) < MAX_CACHED_HOSTS:
            _backends_by_host[host] = found
    return found


DomainDispatcherApplication.get_backend_for_host = _cached_backend_for_host  # type: ignore[method-assign]

# --------------------------------------------------------------------------------------------- no model tracking


def _untracked_new(cls: type[BaseModel], *args: Any, **kwargs: Any) -> BaseModel:
    # What BaseModel.__new__ does, less `cls.instances_tracked.append(instance)`.
    instance: BaseModel = super(BaseModel, cls).__new__(cls)
    return instance


BaseModel.__new__ = staticmethod(_untracked_new)  # type: ignore[method-assign]

# --------------------------------------------------------------------------------------------- SQS


class RecentHandles:
    """What moto's `Queue.deleted_messages` set is used as (`in`, `update`), keeping the newest `limit`."""

    def __init__(self, limit: int = DELETED_HANDLES_KEPT) -> None:
        self.limit = limit
        self._handles: dict[str, None] = {}  # insertion-ordered: the oldest first

    def __contains__(self, handle: object) -> bool:
        return handle in self._handles

    def __len__(self) -> int:
        return len(self._handles)

    def update(self, handles: Iterable[str | None]) -> None:
        for handle in handles:
            if handle is not None:
                self._handles.pop(handle, None)
                self._handles[handle] = None
        while len(self._handles) > self.limit:
            del self._handles[next(iter(self._handles))]

    def add(self, handle: str) -> None:
        self.update([handle])


_queue_init = Queue.__init__


def _queue_init_bounded(self: Queue, *args: Any, **kwargs: Any) -> None:
    _queue_init(self, *args, **kwargs)
    self.deleted_messages = RecentHandles()  # type: ignore[assignment]


Queue.__init__ = _queue_init_bounded  # type: ignore[method-assign]

# --------------------------------------------------------------------------------------------- transactions

_transaction = threading.local()
_transact_write_items = DynamoDBBackend.transact_write_items
Slot = tuple[str, DynamoType, DynamoType | None]


class _CopyModule:
    """Stands for the `copy` module inside moto.dynamodb.models: while one of our transactions runs, moto's
    whole-table backup (`copy.deepcopy(table)`) hands back the table itself, so its rollback (`tables[name] =
    backup`) changes nothing and the item-level backup below restores what the transaction wrote."""

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)

    @staticmethod
    def deepcopy(obj: Any, memo: dict[int, Any] | None = None) -> Any:
        if isinstance(obj, Table) and getattr(_transaction, "items_backed_up", False):
            return obj
        return copy.deepcopy(obj, memo)


setattr(dynamodb_models, "copy", _CopyModule())  # noqa: B010 - the module global its functions read


def _items(table: Table) -> dict[Any, Any]:
    """hash -> Item, or hash -> {range -> Item} when the table has a sort key (a defaultdict(dict))."""
    items: dict[Any, Any] = table.items
    return items


def _peek(table: Table, hash_value: DynamoType, range_value: DynamoType | None) -> Item | None:
    # `.get` reads without inserting the empty bucket the defaultdict would.
    found = _items(table).get(hash_value)
    if range_value is not None and found is not None:
        found = found.get(range_value)
    return cast(Item | None, found)


class ItemBackup:
    """The items a transaction may write, as they were before it (a deep copy, or None when absent)."""

    def __init__(self) -> None:
        self.saved: dict[Slot, tuple[Table, Item | None]] = {}

    @classmethod
    def of(cls, backend: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> ItemBackup:
        backup = cls()
        for entry in transact_items:
            if not isinstance(entry, dict) or len(entry) != 1:
                continue  # moto refuses it before writing anything
            ((op_type, op),) = entry.items()
            if not isinstance(op, dict) or op_type == "ConditionCheck":
                continue
            table = backend.tables.get(str(op.get("TableName")))
            key = op.get("Item") if op_type == "Put" else op.get("Key")
            if table is None or not isinstance(key, dict):
                continue
            try:
                hash_value = DynamoType(key[table.hash_key_attr])
                range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
            except (KeyError, TypeError, IndexError, AttributeError):
                continue  # a malformed key: moto refuses that operation without writing it
            slot = (table.name, hash_value, range_value)
            if slot not in backup.saved:  # the first sight is the state before the transaction
                current = _peek(table, hash_value, range_value)
                backup.saved[slot] = (table, copy.deepcopy(current) if current is not None else None)
        return backup

    def restore(self) -> None:
        for (_, hash_value, range_value), (table, old) in self.saved.items():
            items = _items(table)
            if range_value is None:
                if old is None:
                    items.pop(hash_value, None)
                else:
                    items[hash_value] = old
                continue
            bucket = items.get(hash_value)
            if old is not None:
                items.setdefault(hash_value, {})[range_value] = old
            elif bucket is not None:
                bucket.pop(range_value, None)
                if not bucket:
                    del items[hash_value]


def _item_level_transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    ops = [op for entry in transact_items if isinstance(entry, dict) for op in entry.values() if isinstance(op, dict)]
    tables = [self.tables.get(str(op.get("TableName"))) for op in ops]
    if any(table is not None and table.stream_shard is not None for table in tables):
        # A rollback must also take back the stream records the writes made: moto's whole-table copy does.
        _transact_write_items(self, transact_items)
        return
    backup = ItemBackup.of(self, transact_items)
    _transaction.items_backed_up = True
    try:
        _transact_write_items(self, transact_items)
    except BaseException:
        backup.restore()
        raise
    finally:
        _transaction.items_backed_up = False


DynamoDBBackend.transact_write_items = _item_level_transact_write_items  # type: ignore[method-assign]

# --------------------------------------------------------------------------------------------- saved-state writes


class WriteCounter:
    """How many requests have changed what the runtime saves (tables and buckets): counted once the request
    has been served, so a reader that sees the number unchanged knows its last save already holds the state."""

    def __init__(self) -> None:
        self._value = 0
        self._lock = threading.Lock()

    def add(self, n: int = 1) -> None:
        with self._lock:
            self._value += n

    @property
    def value(self) -> int:
        return self._value


writes = WriteCounter()

_DYNAMODB_READS = frozenset({"BatchGetItem", "GetItem", "Query", "Scan", "TransactGetItems"})
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Services whose state the runtime does not save (query or REST protocols, told apart by the signature's scope).
_UNSAVED_SERVICES = frozenset(
    {"sqs", "ec2", "ecs", "sts", "iam", "logs", "events", "secretsmanager", "ssm", "lambda", "monitoring"}
)
_SCOPE = re.compile(r"Credential=[^/\s,]+/\d{8}/[^/\s,]+/([^/\s,]+)/aws4_request")


def _scope_service(environ: dict[str, Any]) -> str | None:
    found = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", "")) or _SCOPE.search(
        "Credential=" + unquote(environ.get("QUERY_STRING", "")).partition("X-Amz-Credential=")[2]
    )
    return found.group(1) if found else None


def changes_saved_state(environ: dict[str, Any]) -> bool:
    """Whether a request may have written a table or a bucket (when unsure, yes: a save too many is harmless)."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:  # JSON protocols: DynamoDB_20120810.PutItem, AmazonSQS.ReceiveMessage, ...
        service, _, action = target.partition(".")
        return service.startswith("DynamoDB") and not (
            action in _DYNAMODB_READS or action.startswith(("Describe", "List", "Get"))
        )
    if environ.get("REQUEST_METHOD") in _READ_METHODS:
        return False
    return _scope_service(environ) not in _UNSAVED_SERVICES


# --------------------------------------------------------------------------------------------- TTL


def _expired(item: Item, attribute: str, now: float) -> bool:
    value = item.attrs.get(attribute)
    if value is None or value.type != "N":
        return False  # DynamoDB ignores a TTL attribute that is not a number
    try:
        at = float(value.value)
    except (TypeError, ValueError):
        return False
    return now - TTL_MAX_AGE_SECONDS <= at < now


def sweep_table(table: Table, now: float) -> int:
    """Delete the table's expired items (through moto, so a stream sees them); drop the empty hash buckets moto
    leaves behind (a missing key read or a last item deleted). Call under `_lock`."""
    items = _items(table)
    attribute = table.ttl.get("AttributeName")
    if table.ttl.get("TimeToLiveStatus") != "ENABLED" or not isinstance(attribute, str):
        attribute = None
    expired: list[tuple[DynamoType, DynamoType | None]] = []
    for hash_value, found in list(items.items()):
        if table.range_key_attr is None:
            if attribute and _expired(found, attribute, now):
                expired.append((hash_value, None))
            continue
        if attribute:
            expired.extend((hash_value, r) for r, item in found.items() if _expired(item, attribute, now))
        if not found:
            del items[hash_value]
    for hash_value, range_value in expired:
        table.delete_item(hash_value, range_value)
        if range_value is not None and not items.get(hash_value, True):
            del items[hash_value]
    return len(expired)


def sweep_expired_items(now: float | None = None) -> int:
    """One pass over every DynamoDB table of every account and region; the number of items deleted."""
    now = time.time() if now is None else now
    deleted = 0
    for account in list(dynamodb_backends.values()):
        for backend in list(account.values()):
            for table in list(backend.tables.values()):
                with _lock:  # table by table: requests go on between them
                    deleted += sweep_table(table, now)
    if deleted:
        writes.add(deleted)
    return deleted


def start_ttl_sweeper(every_seconds: float, release_every: float = RELEASE_SECONDS) -> threading.Thread:
    """Sweep expired items every `every_seconds`; between sweeps, give free memory back every `release_every`."""

    def loop() -> None:
        next_sweep = time.monotonic() + every_seconds
        while True:
            time.sleep(max(0.0, min(release_every, next_sweep - time.monotonic())))  # a period, not a wait
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + every_seconds
                try:
                    sweep_expired_items()
                except Exception:  # a table deleted mid-pass: the next pass sees the new state
                    traceback.print_exc()
            heap.release_free_memory()

    thread = threading.Thread(target=loop, name="ttl-sweeper", daemon=True)
    thread.start()
    return thread


# --------------------------------------------------------------------------------------------- WSGI app


def _answer(
    start_response: Callable[..., Any], status: str, body: dict[str, Any], extra: list[tuple[str, str]]
) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *extra])
    return [data]


class EmulatorApp:
    """moto's dispatcher behind the access-key gate, with the write counter and its endpoint."""

    def __init__(self, moto_app: WSGIApp, access_key_id: str | None) -> None:
        self.moto_app = moto_app
        self.access_key_id = access_key_id

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self.access_key_id is not None:
            shown = sigv4.access_key_id(environ.get("HTTP_AUTHORIZATION"), environ.get("QUERY_STRING"))
            if shown is None or not sigv4.same(shown, self.access_key_id):
                return _answer(
                    start_response,
                    "403 Forbidden",
                    {"__type": "AccessDeniedException", "message": "not signed with the local runtime's credentials"},
                    [("x-amzn-ErrorType", "AccessDeniedException")],
                )
        if environ.get("PATH_INFO") == WRITES_PATH:
            return _answer(start_response, "200 OK", {"writes": writes.value}, [])
        answer = self.moto_app(environ, start_response)
        if changes_saved_state(environ):
            writes.add()
        return answer


# --------------------------------------------------------------------------------------------- keep-alive server

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})


class KeepAliveHandler(MotoRequestHandler):
    """werkzeug's request handler (and moto's header handling) with a response of known length, so the
    connection stays open for the client's next request (HTTP/1.1 keep-alive)."""

    protocol_version = "HTTP/1.1"
    timeout = IDLE_CONNECTION_SECONDS
    disable_nagle_algorithm = True  # a response goes out whole, at once

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # one line per call, to a stderr nobody reads, costs more than the call

    def _body(self, environ: dict[str, Any]) -> bytes:
        if environ.get("wsgi.input_terminated"):  # chunked: werkzeug's DechunkedInput reads to the last chunk
            return bytes(environ["wsgi.input"].read())
        length = int(environ.get("CONTENT_LENGTH") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def run_wsgi(self) -> None:
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.environ = environ = self.make_environ()
        # The whole body first: the next request on this connection starts right after it.
        body = self._body(environ)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("wsgi.input_terminated", None)
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        started: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            started[:] = [status, headers]
            return pending.append

        pending: list[bytes] = []  # what the app gave to `write` (old-style WSGI)
        try:
            chunks = self.server.app(environ, start_response)
            try:
                data = b"".join([*pending, *chunks])
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
            status, headers = started
        except Exception:
            traceback.print_exc()
            data = b'{"__type": "InternalFailure", "message": "the emulator failed on this request"}'
            status, headers = "500 Internal Server Error", [("Content-Type", "application/json")]
            self.close_connection = True
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        declared = None
        for name, value in headers:
            if name.lower() == "content-length":
                declared = value
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        if self.command == "HEAD":
            if declared is not None:  # a HEAD states the length of what a GET would send (S3 HeadObject)
                self.send_header("Content-Length", declared)
        elif int(code) >= 200 and int(code) not in (204, 304):
            self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)
        self.wfile.flush()


def serve(port: int, access_key_id: str | None, *, host: str = "127.0.0.1") -> None:
    app = EmulatorApp(DomainDispatcherApplication(create_backend_app), access_key_id)
    server = make_server(host, port, app, threaded=True, request_handler=KeepAliveHandler)

    def stop(signum: int, frame: FrameType | None) -> None:
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def main() -> None:
    # The port comes in MOTO_PORT and the key in the environment, never on the command line (emulator.py).
    key = os.environ.pop(ACCESS_KEY_ENV, "") or None
    port = int(os.environ.get("MOTO_PORT", "5000"))
    heap.limit_arenas()  # before any thread starts
    start_ttl_sweeper(float(os.environ.get(TTL_SWEEP_ENV) or DEFAULT_TTL_SWEEP_SECONDS))
    serve(port, key)


if __name__ == "__main__":
    main()
