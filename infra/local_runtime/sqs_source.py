"""The SQS event source mapping, emulated: long-poll the queue, invoke the function with an SQS event,
delete what succeeded, leave failures to come back after the visibility timeout (and, after
maxReceiveCount receives, to the dead-letter queue: moto applies the redrive policy itself).

MaximumConcurrency is the number of pollers: a message is only received when a worker is free to run it.
An invocation that fails in any way (the handler raised, timed out, its worker crashed) fails the whole batch,
as on Lambda. `invoke` runs the function: the local runtime's worker pools (`WorkerPools.invoke_blocking`), or
by default the handler in the poller's own thread (tests of the mapping alone).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3

from local_runtime.events import LambdaContext, sqs_event
from local_runtime.invoker import load_handler
from local_runtime.logs import log

WAIT_SECONDS = 1  # short long-polls so shutdown is prompt

Invoke = Callable[[dict[str, Any], LambdaContext], Any]


@dataclass
class SqsMapping:
    function_name: str
    handler: str
    timeout_seconds: int
    queue_url: str
    queue_arn: str
    batch_size: int
    concurrency: int
    report_batch_item_failures: bool


class SqsEventSource:
    def __init__(self, mapping: SqsMapping, endpoint: str | None, region: str, invoke: Invoke | None = None) -> None:
        self.mapping = mapping
        self.invoke: Invoke = invoke or (lambda event, context: load_handler(mapping.handler)(event, context))
        self.sqs: Any = boto3.client("sqs", endpoint_url=endpoint, region_name=region)
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.invocations = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        for i in range(self.mapping.concurrency):
            thread = threading.Thread(target=self._poll, name=f"{self.mapping.function_name}-poller-{i}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout)

    def _poll(self) -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        m = self.mapping
        while not self.stopping.is_set():
            try:
                resp = self.sqs.receive_message(
                    QueueUrl=m.queue_url,
                    MaxNumberOfMessages=m.batch_size,
                    WaitTimeSeconds=WAIT_SECONDS,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
            except Exception as exc:  # the emulator going away at shutdown, or a blip
                if self.stopping.is_set():
                    return
                log(f"{m.function_name}: receive failed: {exc}")
                self.stopping.wait(1.0)
                continue
            messages = resp.get("Messages", [])
            if messages and self.stopping.is_set():
                self._release(messages)  # received while stopping: back to the queue now, not after the timeout
                return
            if messages:
                self._deliver(messages)

    def _release(self, messages: list[dict[str, Any]]) -> None:
        try:
            self.sqs.change_message_visibility_batch(
                QueueUrl=self.mapping.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": msg["ReceiptHandle"], "VisibilityTimeout": 0}
                    for i, msg in enumerate(messages)
                ],
            )
        except Exception as exc:
            log(f"{self.mapping.function_name}: could not release {len(messages)} message(s): {exc!r}")

    def _deliver(self, messages: list[dict[str, Any]]) -> None:
        m = self.mapping
        event = sqs_event(messages, m.queue_arn)
        context = LambdaContext(m.function_name, timeout_seconds=m.timeout_seconds)
        failed_ids: set[str] = set()
        with self._lock:
            self.invocations += 1
        try:
            result = self.invoke(event, context)
            if m.report_batch_item_failures and isinstance(result, dict):
                failures = result.get("batchItemFailures") or []
                if not isinstance(failures, list):
                    failures = [None]
                ids = {str(f.get("itemIdentifier") or "") if isinstance(f, dict) else "" for f in failures}
                if not ids <= {msg["MessageId"] for msg in messages}:
                    # As Lambda does: an entry with an empty or unknown itemIdentifier fails the whole batch.
                    log(f"{m.function_name}: batchItemFailures names no message of the batch: the batch failed")
                    return
                failed_ids = ids
        except Exception as exc:
            # A failed invocation fails the whole batch: every message comes back after its visibility timeout.
            log(f"{m.function_name}: invocation failed: {exc}")
            return
        done = [msg for msg in messages if msg["MessageId"] not in failed_ids]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=m.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": msg["ReceiptHandle"]} for i, msg in enumerate(done)],
            )
