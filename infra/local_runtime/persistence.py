"""Keeping a local machine's data across restarts: the moto server lives in memory, so the runtime saves
every table and the artifacts bucket to a file (periodically and at shutdown) and loads it at the next start.

After a restore nothing is in flight: queued tasks are enqueued again, and running ones are marked stale so
their next attempt takes them over (the runner's conditional transitions make a duplicate message harmless).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import threading
import urllib.request
from pathlib import Path
from typing import Any, TextIO

import boto3
from agent_machine import queue
from agent_machine.models import TaskStatus
from agent_machine.store import tasks
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from local_runtime import heap
from local_runtime.logs import log
from local_runtime.provision import Provisioned

STALE_HEARTBEAT = "1970-01-01T00:00:00.000000Z"
WRITES_PATH = "/_local/writes"  # moto_main's count of requests that changed tables or buckets
SCAN_PAGE_ITEMS = 200  # a page at a time: a short hold of the emulator's DynamoDB lock, bounded memory here


class StateFile:
    def __init__(self, path: Path, provisioned: Provisioned, endpoint: str | None, region: str) -> None:
        self.path = path
        self.provisioned = provisioned
        self.endpoint = endpoint
        self.region = region
        self.ddb: Any = boto3.client("dynamodb", endpoint_url=endpoint, region_name=region)
        self.s3: Any = boto3.client("s3", endpoint_url=endpoint, region_name=region)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._saved_at_writes: int | None = None  # the emulator's write count the file holds, once known

    def emulator_writes(self) -> int | None:
        """How many requests have changed tables or buckets in the emulator so far (moto_main counts them and
        answers GET /_local/writes, signed as any call); None when it cannot tell (then a save is due)."""
        if not self.endpoint:
            return None
        credentials = boto3.Session().get_credentials()
        if credentials is None:
            return None
        url = f"{self.endpoint}{WRITES_PATH}"
        request = AWSRequest(method="GET", url=url)
        SigV4Auth(credentials.get_frozen_credentials(), "moto", self.region).add_auth(request)
        try:
            probe = urllib.request.Request(url, headers=dict(request.headers.items()))  # noqa: S310 - loopback
            with urllib.request.urlopen(probe, timeout=5) as resp:  # noqa: S310 - the emulator's own loopback URL
                return int(json.loads(resp.read())["writes"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, *, force: bool = False) -> bool:
        """Write every table and object to the file; False when skipped because nothing was written since the
        last save (a full scan of a grown machine every 10 s stalls the emulator for nothing)."""
        with self._lock:
            writes = self.emulator_writes()  # read before the scan: a write during it makes the next save due
            if not force and writes is not None and writes == self._saved_at_writes:
                return False
            # The state holds secrets (webhook secrets in the registry, tokens in task data): owner-only, in an
            # owner-only folder, created so from the start (never world-readable, not even for a moment).
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.path.parent, 0o700)
            tmp = self.path.with_suffix(".tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as raw, gzip.open(raw, "wt", encoding="utf-8") as fh:
                self._write_state(fh)
            os.replace(tmp, self.path)  # atomic: a crash mid-save leaves the previous state intact
            os.chmod(self.path, 0o600)  # a file saved by an older version keeps no wider mode
            self._saved_at_writes = writes
            return True

    def _write_state(self, fh: TextIO) -> None:
        """{"version": 1, "tables": {id: [item, ...]}, "buckets": {id: {key: base64}}}, written as it is read
        (a page of items, one object at a time), so the runtime never holds the whole state in memory."""
        fh.write('{"version": 1, "tables": {')
        for n, (logical_id, name) in enumerate(self.provisioned.tables.items()):
            fh.write(f"{', ' if n else ''}{json.dumps(logical_id)}: [")
            first = True
            pages = self.ddb.get_paginator("scan").paginate(
                TableName=name, ConsistentRead=True, PaginationConfig={"PageSize": SCAN_PAGE_ITEMS}
            )
            for page in pages:
                for item in page.get("Items", []):
                    fh.write(("" if first else ", ") + json.dumps(item))
                    first = False
            fh.write("]")
        fh.write('}, "buckets": {')
        for n, (logical_id, bucket) in enumerate(self.provisioned.buckets.items()):
            fh.write(f"{', ' if n else ''}{json.dumps(logical_id)}: {{")
            first = True
            for listing in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for obj in listing.get("Contents", []):
                    body = self.s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                    encoded = base64.b64encode(body).decode()
                    fh.write(f"{'' if first else ', '}{json.dumps(obj['Key'])}: {json.dumps(encoded)}")
                    first = False
            fh.write("}")
        fh.write("}}")

    def restore(self) -> int:
        """Load the saved state into empty tables; returns the number of items restored."""
        if not self.path.exists():
            return 0
        with gzip.open(self.path, "rt", encoding="utf-8") as fh:
            state = json.load(fh)
        count = 0
        for logical_id, items in state.get("tables", {}).items():
            name = self.provisioned.tables.get(logical_id)
            if not name:
                continue
            for start in range(0, len(items), 25):
                batch = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
                request: dict[str, Any] = {name: batch}
                while request:
                    request = self.ddb.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
                count += len(batch)
        for logical_id, objects in state.get("buckets", {}).items():
            bucket = self.provisioned.buckets.get(logical_id)
            if not bucket:
                continue
            for key, body in objects.items():
                self.s3.put_object(Bucket=bucket, Key=key, Body=base64.b64decode(body))
        return count

    def start_autosave(self, every_seconds: float) -> None:
        def loop() -> None:
            while not self._stop.wait(every_seconds):
                try:
                    if self.save():
                        # A save's pages of items and object bodies are freed, but glibc would keep the pages:
                        # resident memory would follow the largest save (the data's size), not what is held.
                        heap.release_free_memory()
                except Exception as exc:  # the emulator stopping under us
                    log(f"autosave failed: {exc!r}")

        self._thread = threading.Thread(target=loop, name="autosave", daemon=True)
        self._thread.start()

    def stop_autosave(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)


def requeue_unfinished() -> int:
    """Enqueue every queued task again and make running ones stale, so the runner picks them all up."""
    count = 0
    for task_id in tasks.ids_with_status(TaskStatus.RUNNING):
        tasks.set_fields(task_id, heartbeat_at=STALE_HEARTBEAT)
        queue.send(task_id)
        count += 1
    for task_id in tasks.ids_with_status(TaskStatus.QUEUED):
        queue.send(task_id)
        count += 1
    return count
