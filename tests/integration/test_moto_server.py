"""The local runtime's emulator (local_runtime.moto_main, a real child process over HTTP): connections kept
alive, transactions that roll back item by item, TTL expiry, memory that follows the data, and the write count
that lets the autosave skip a machine at rest."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import urllib3.util.connection
from botocore.exceptions import ClientError
from local_runtime.emulator import MotoServer, start_moto
from local_runtime.moto_main import TTL_SWEEP_ENV, RecentHandles
from local_runtime.persistence import StateFile
from local_runtime.provision import Provisioned, provision

SIGNED = "AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature="


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def vm_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def new_tables(endpoint: str) -> tuple[Any, str, str]:
    """A table with a sort key and a GSI, and a hash-only one, under fresh names."""
    ddb = boto3.client("dynamodb", endpoint_url=endpoint)
    ranged, flat = f"r-{uuid.uuid4().hex[:8]}", f"f-{uuid.uuid4().hex[:8]}"
    ddb.create_table(
        TableName=ranged,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
            {"AttributeName": "status", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by_status",
                "KeySchema": [{"AttributeName": "status", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.create_table(
        TableName=flat,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return ddb, ranged, flat


def everything(ddb: Any, *tables: str) -> dict[str, list[dict[str, Any]]]:
    def key(item: dict[str, Any]) -> str:
        return json.dumps(item, sort_keys=True)

    return {t: sorted(ddb.scan(TableName=t, ConsistentRead=True)["Items"], key=key) for t in tables}


# --------------------------------------------------------------------------------------------- keep-alive


def test_one_connection_carries_many_requests(moto_server: MotoServer) -> None:
    _, _, flat = new_tables(moto_server.endpoint)
    body = json.dumps({"TableName": flat, "Key": {"pk": {"S": "absent"}}})
    conn = http.client.HTTPConnection("127.0.0.1", moto_server.port, timeout=30)
    try:
        conn.connect()
        first = conn.sock
        for _ in range(20):
            conn.request(
                "POST",
                "/",
                body=body,
                headers={
                    "X-Amz-Target": "DynamoDB_20120810.GetItem",
                    "Content-Type": "application/x-amz-json-1.0",
                    "Authorization": SIGNED + "0" * 64,
                },
            )
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read()) == {}
            assert (resp.getheader("Connection") or "").lower() != "close"
            assert not resp.will_close
            assert conn.sock is first  # http.client would have opened a new socket had the server closed it
    finally:
        conn.close()


def test_a_boto3_client_makes_one_connection_for_many_calls(
    moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, ranged, _ = new_tables(moto_server.endpoint)
    opened: list[object] = []
    connect = urllib3.util.connection.create_connection

    def counting(*args: Any, **kwargs: Any) -> Any:
        opened.append(args[0])
        return connect(*args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", counting)
    client = boto3.client("dynamodb", endpoint_url=moto_server.endpoint)
    for n in range(30):
        client.put_item(TableName=ranged, Item={"pk": {"S": "k"}, "sk": {"N": str(n)}, "status": {"S": "s"}})
    assert (
        client.query(TableName=ranged, KeyConditionExpression="pk = :k", ExpressionAttributeValues={":k": {"S": "k"}})[
            "Count"
        ]
        == 30
    )
    assert len(opened) == 1, opened


# --------------------------------------------------------------------------------------------- transactions


def test_a_failed_transaction_leaves_every_table_unchanged(moto_server: MotoServer) -> None:
    ddb, ranged, flat = new_tables(moto_server.endpoint)
    for n in range(5):
        ddb.put_item(TableName=ranged, Item={"pk": {"S": "a"}, "sk": {"N": str(n)}, "status": {"S": "old"}})
    ddb.put_item(TableName=flat, Item={"pk": {"S": "counter"}, "n": {"N": "1"}, "tags": {"SS": ["x"]}})
    before = everything(ddb, ranged, flat)
    writes = [
        {"Put": {"TableName": ranged, "Item": {"pk": {"S": "a"}, "sk": {"N": "1"}, "status": {"S": "new"}}}},
        {"Put": {"TableName": ranged, "Item": {"pk": {"S": "b"}, "sk": {"N": "1"}, "status": {"S": "new"}}}},
        {"Put": {"TableName": flat, "Item": {"pk": {"S": "fresh"}}}},
        {
            "Update": {
                "TableName": flat,
                "Key": {"pk": {"S": "counter"}},
                "UpdateExpression": "SET n = n + :one ADD tags :t",  # changes the stored item in place
                "ExpressionAttributeValues": {":one": {"N": "1"}, ":t": {"SS": ["y"]}},
            }
        },
        {"Delete": {"TableName": ranged, "Key": {"pk": {"S": "a"}, "sk": {"N": "2"}}}},
        {
            "Update": {
                "TableName": ranged,
                "Key": {"pk": {"S": "a"}, "sk": {"N": "3"}},
                "UpdateExpression": "SET #s = :s",
                "ExpressionAttributeNames": {"#s": "status"},
                "ExpressionAttributeValues": {":s": {"S": "new"}},
            }
        },
    ]
    failing_condition = {
        "ConditionCheck": {
            "TableName": ranged,
            "Key": {"pk": {"S": "a"}, "sk": {"N": "4"}},
            "ConditionExpression": "attribute_not_exists(pk)",
        }
    }
    with pytest.raises(ClientError) as cancelled:
        ddb.transact_write_items(TransactItems=[*writes, failing_condition])
    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert everything(ddb, ranged, flat) == before
    by_status = ddb.query(
        TableName=ranged,
        IndexName="by_status",
        KeyConditionExpression="#s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": "new"}},
    )
    assert by_status["Count"] == 0  # the index follows the restored items

    # Rolled back on a validation error too (moto raises before the cancellation reasons): two writes, one key.
    duplicate = {"Delete": {"TableName": flat, "Key": {"pk": {"S": "fresh"}}}}
    with pytest.raises(ClientError) as refused:
        ddb.transact_write_items(TransactItems=[*writes, duplicate])
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert everything(ddb, ranged, flat) == before

    ddb.transact_write_items(TransactItems=writes)  # and a valid one applies every write
    after = everything(ddb, ranged, flat)
    assert {(i["pk"]["S"], i["sk"]["N"], i["status"]["S"]) for i in after[ranged]} == {
        ("a", "0", "old"),
        ("a", "1", "new"),
        ("a", "3", "new"),
        ("a", "4", "old"),
        ("b", "1", "new"),
    }
    counter = next(i for i in after[flat] if i["pk"]["S"] == "counter")
    assert counter["n"] == {"N": "2"} and sorted(counter["tags"]["SS"]) == ["x", "y"]
    assert any(i["pk"]["S"] == "fresh" for i in after[flat])


# --------------------------------------------------------------------------------------------- TTL


@pytest.fixture
def sweeping_moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    """An emulator of its own whose TTL sweeper runs every 0.2 s."""
    monkeypatch.setenv(TTL_SWEEP_ENV, "0.2")
    server = start_moto()
    yield server
    server.stop()


def test_expired_items_are_deleted_as_dynamodb_does(sweeping_moto: MotoServer) -> None:
    ddb, ranged, flat = new_tables(sweeping_moto.endpoint)
    untimed = f"u-{uuid.uuid4().hex[:8]}"  # TTL not enabled: nothing expires
    ddb.create_table(
        TableName=untimed,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for table in (ranged, flat):
        ddb.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})
    now = int(time.time())
    six_years = 6 * 365 * 24 * 3600
    ddb.put_item(TableName=untimed, Item={"pk": {"S": "past"}, "ttl": {"N": str(now - 60)}})
    kept_flat = {
        "future": {"N": str(now + 3600)},
        "too-old": {"N": str(now - six_years)},  # DynamoDB leaves values over five years in the past alone
        "not-a-number": {"S": str(now - 60)},
    }
    for pk, ttl in kept_flat.items():
        ddb.put_item(TableName=flat, Item={"pk": {"S": pk}, "ttl": ttl})
    ddb.put_item(TableName=flat, Item={"pk": {"S": "no-ttl"}})
    ddb.put_item(TableName=flat, Item={"pk": {"S": "expired"}, "ttl": {"N": str(now - 60)}})
    for sk, expires in ((1, now - 60), (2, now + 3600), (3, now - 1)):
        ddb.put_item(
            TableName=ranged,
            Item={"pk": {"S": "task"}, "sk": {"N": str(sk)}, "status": {"S": "s"}, "ttl": {"N": str(expires)}},
        )

    def gone(table: str, key: dict[str, Any]) -> Callable[[], bool]:
        return lambda: "Item" not in ddb.get_item(TableName=table, Key=key, ConsistentRead=True)

    wait_for(gone(flat, {"pk": {"S": "expired"}}))
    wait_for(gone(ranged, {"pk": {"S": "task"}, "sk": {"N": "1"}}))
    wait_for(gone(ranged, {"pk": {"S": "task"}, "sk": {"N": "3"}}))
    # One more expiry seen gone proves a whole pass ran after every item above was written.
    ddb.put_item(TableName=flat, Item={"pk": {"S": "marker"}, "ttl": {"N": str(now - 60)}})
    wait_for(gone(flat, {"pk": {"S": "marker"}}))

    assert {i["pk"]["S"] for i in ddb.scan(TableName=flat)["Items"]} == {*kept_flat, "no-ttl"}
    assert [i["sk"]["N"] for i in ddb.scan(TableName=ranged)["Items"]] == ["2"]
    assert ddb.scan(TableName=untimed)["Count"] == 1


# --------------------------------------------------------------------------------------------- memory


def test_memory_follows_the_data_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many transactions on a growing table and an S3 object overwritten again and again, as a machine does
    (output chunks, task booking, the session transcript). moto kept every deep copy of every table a
    transaction touched, and every overwritten object: growth was quadratic (about 220 MB here). What may grow:
    the bytes actually stored, times 3 for Python's objects around them (an item is a dict of DynamoType objects
    holding the strings), plus 8 MB for the allocator's arenas and the connection's buffers."""
    server = start_moto()  # its own process: nothing else's data in its memory
    try:
        ddb, ranged, flat = new_tables(server.endpoint)
        s3 = boto3.client("s3", endpoint_url=server.endpoint)
        bucket = f"b-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        transactions, items_per_transaction, item_bytes, overwrites, object_bytes = 60, 10, 4000, 30, 1_000_000

        def transaction(n: int) -> int:
            puts = [
                {
                    "Put": {
                        "TableName": ranged,
                        "Item": {
                            "pk": {"S": f"task-{n}"},
                            "sk": {"N": str(k)},
                            "status": {"S": "output"},
                            "data": {"S": os.urandom(item_bytes // 2).hex()},
                        },
                    }
                }
                for k in range(items_per_transaction)
            ]
            booking = {
                "Update": {
                    "TableName": flat,
                    "Key": {"pk": {"S": "totals"}},
                    "UpdateExpression": "ADD tasks :one",
                    "ExpressionAttributeValues": {":one": {"N": "1"}},
                }
            }
            ddb.transact_write_items(TransactItems=[*puts, booking])
            return sum(len(json.dumps(p["Put"]["Item"])) for p in puts)

        for n in range(5):  # warm-up: imports, first allocations, the connection
            transaction(-1 - n)
        s3.put_object(Bucket=bucket, Key="transcript", Body=os.urandom(object_bytes))
        before = vm_rss_bytes(server.process.pid)

        stored = 0
        for n in range(transactions):
            stored += transaction(n)
            if n < overwrites:
                s3.put_object(Bucket=bucket, Key="transcript", Body=os.urandom(object_bytes))
        growth = vm_rss_bytes(server.process.pid) - before

        pages = ddb.get_paginator("scan").paginate(TableName=ranged, Select="COUNT")
        assert sum(page["Count"] for page in pages) == (transactions + 5) * items_per_transaction
        assert ddb.get_item(TableName=flat, Key={"pk": {"S": "totals"}})["Item"]["tasks"] == {
            "N": str(transactions + 5)
        }
        mb = 1024 * 1024
        bound = 3 * stored + 8 * mb  # the object replaced in place: it adds no bytes to what is stored
        assert growth <= bound, f"grew {growth / mb:.1f} MB for {stored / mb:.1f} MB stored (bound {bound / mb:.1f})"
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------- autosave


def test_the_autosave_skips_a_machine_at_rest(stack: Provisioned, moto_server: MotoServer, tmp_path: Path) -> None:
    state = StateFile(tmp_path / "state.json.gz", stack, moto_server.endpoint, "us-east-1")
    ddb = boto3.client("dynamodb", endpoint_url=moto_server.endpoint)
    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint)
    sqs = boto3.client("sqs", endpoint_url=moto_server.endpoint)
    table, bucket = stack.tables["TasksTable"], stack.buckets["ArtifactsBucket"]

    def saved() -> dict[str, Any]:
        with gzip.open(state.path, "rt", encoding="utf-8") as fh:
            return dict(json.load(fh))

    assert state.save() is True  # the first save always writes
    first = state.path.stat().st_mtime_ns
    # Reads change nothing saved: no new file.
    ddb.scan(TableName=table)
    s3.list_objects_v2(Bucket=bucket)
    sqs.receive_message(QueueUrl=stack.queues["TaskQueue"], WaitTimeSeconds=0)
    assert state.save() is False
    assert state.path.stat().st_mtime_ns == first

    ddb.put_item(TableName=table, Item={"task_id": {"S": "written-after"}})
    assert state.save() is True
    assert {"task_id": {"S": "written-after"}} in saved()["tables"]["TasksTable"]
    assert state.save() is False

    s3.put_object(Bucket=bucket, Key="sessions/x/t.jsonl", Body=b"{}\n")
    assert state.save() is True
    assert "sessions/x/t.jsonl" in saved()["buckets"]["ArtifactsBucket"]
    assert state.save(force=True) is True  # the runtime's last save at shutdown may insist


def test_the_write_count_answers_only_the_runtimes_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = "LOCAL" + uuid.uuid4().hex[:16].upper()
    server = start_moto(access_key_id=key)
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{server.endpoint}/_local/writes", timeout=10)
        assert refused.value.code == 403
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)  # the runtime's credentials, as its autosave has them
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # a session that reads them (restored after)
        stack = provision(endpoint=server.endpoint, prefix=f"w{uuid.uuid4().hex[:8]}")
        state = StateFile(tmp_path / "state.json.gz", stack, server.endpoint, "us-east-1")
        counted = state.emulator_writes()
        assert counted is not None and counted >= len(stack.tables)
        assert state.save() is True
        assert state.save() is False
        ddb = boto3.client("dynamodb", endpoint_url=server.endpoint)
        ddb.put_item(TableName=stack.tables["TasksTable"], Item={"task_id": {"S": "x"}})
        ddb.get_item(TableName=stack.tables["TasksTable"], Key={"task_id": {"S": "x"}})
        assert state.emulator_writes() == counted + 1
        assert state.save() is True
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------- SQS receipts


def test_a_deleted_message_may_be_deleted_again_and_the_handles_kept_are_bounded(moto_server: MotoServer) -> None:
    sqs = boto3.client("sqs", endpoint_url=moto_server.endpoint)
    url = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="task")
    handle = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"][0]["ReceiptHandle"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=handle)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=handle)  # as on SQS: a second delete succeeds
    with pytest.raises(ClientError, match="ReceiptHandleIsInvalid"):
        sqs.delete_message(QueueUrl=url, ReceiptHandle="never-issued")

    kept = RecentHandles(limit=3)
    kept.update(["a", "b", None])
    kept.add("c")
    kept.update(["a", "d"])  # "a" seen again: the newest now; "b" is the oldest and goes
    assert [h for h in "abcd" if h in kept] == ["a", "c", "d"]
    assert len(kept) == 3


# --------------------------------------------------------------------------------------------- heap

FRAGMENTED_HEAP = """
import json, threading
from local_runtime import heap

def rss():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmRSS:"))

heap.limit_arenas()
kept = []
def burst():
    # 150 MB in 2 KB blocks (malloc, not pymalloc), one in 64 kept: the heap's top stays in use, so glibc
    # cannot shrink it by itself; only malloc_trim gives the free pages inside back.
    blocks = [bytes(2048) for _ in range(75_000)]
    kept.extend(blocks[::64])
thread = threading.Thread(target=burst)
before = rss()
thread.start(); thread.join()
freed = rss()
released = heap.release_free_memory()
print(json.dumps({"before": before, "freed": freed, "after": rss(), "released": released}))
"""


def test_free_memory_goes_back_to_the_os_after_a_burst() -> None:
    """What the emulator's housekeeping and the runtime's autosave call after transient allocations."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "infra")}
    out = subprocess.run(
        [sys.executable, "-c", FRAGMENTED_HEAP], env=env, capture_output=True, text=True, check=True, timeout=120
    )
    sizes = json.loads(out.stdout)
    mb = 1024 * 1024
    assert sizes["freed"] - sizes["before"] > 100 * mb, sizes  # the burst's pages stayed resident
    assert sizes["released"] is True
    assert sizes["after"] - sizes["before"] < 20 * mb, sizes  # ~2.3 MB kept blocks (+ their pages) remain
