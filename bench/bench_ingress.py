"""Ingress benchmark: webhook ack latency of the real API handler against a bare handler doing the same work.

    uv run python bench/bench_ingress.py --out bench/results/ingress.json [--n 300] [--warmup 30]

Both handlers are called the way API Gateway (HTTP API, payload 2.0) calls a Lambda, in this process, against
the same moto server over HTTP (started here, with the template's resources provisioned), in the same run, on
the same signed GitHub `issue_comment` delivery (an OWNER's "@claude" mention, so the real handler creates a
task), each delivery with its own X-GitHub-Delivery id. Calls alternate between the two handlers, so drift in
the emulator hits both alike; both are warmed up first.

- real: `machine_api.handler.handler` (Mangum + FastAPI): size/auth guard, HMAC verify over the raw body, parse,
  decide (trust, routing), ONE TransactWriteItems (task + session + delivery record, conditional on the delivery
  id) and ONE SendMessage; then the JSON answer.
- bare: a Lambda-style function that decodes the body, verifies the HMAC (constant time) and does ONE
  SendMessage with the same boto3 client: the floor for "verify + enqueue".

Reported: p50/p95/p99 of each (ms), the p99 ratio real/bare (the headline), and AWS API calls per delivery
(counted with a botocore before-call hook).

Emulator caveat: moto's TransactWriteItems deep-copies every table it touches (its rollback), so its cost grows
with the data stored, unlike DynamoDB's. Unless --keep-state is given, the task and delivery record each real
delivery created are deleted after it (untimed), so every timed transaction meets the same table sizes.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import platform
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECRET = "It's a Secret to Everybody"
SAMPLE = ROOT.parent / "shared" / "webhooks" / "github" / "issue_comment__created.json"

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "POWERTOOLS_METRICS_NAMESPACE": "AgentMachineBench",
    }
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(samples, 50), 3),
        "p95_ms": round(percentile(samples, 95), 3),
        "p99_ms": round(percentile(samples, 99), 3),
        "mean_ms": round(sum(samples) / len(samples), 3),
        "n": len(samples),
    }


def payload_bytes(comment_id: int) -> bytes:
    """A new comment per delivery: the same comment delivered again is a duplicate (one task per source event)."""
    data = json.loads(SAMPLE.read_bytes())
    data["comment"]["body"] = "@claude can you fix the typo in the README?"
    data["comment"]["author_association"] = "OWNER"
    data["comment"]["id"] = comment_id
    return json.dumps(data).encode()


def make_event(body: bytes, delivery: str) -> dict[str, Any]:
    from local_runtime.events import http_event

    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return http_event(
        "POST",
        "/webhooks/github",
        body=body,
        headers={
            "content-type": "application/json",
            "x-github-event": "issue_comment",
            "x-github-delivery": delivery,
            "x-hub-signature-256": signature,
            "user-agent": "GitHub-Hookshot/044aadd",
            "content-length": str(len(body)),
        },
    )


def bare_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The floor: verify the signature over the raw body, enqueue, answer."""
    from agent_machine import aws
    from agent_machine.settings import get_settings

    raw = event.get("body") or ""
    body = base64.b64decode(raw) if event.get("isBase64Encoded") else raw.encode()
    headers = event.get("headers") or {}
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), str(headers.get("x-hub-signature-256", "")).encode()):
        return {"statusCode": 401, "body": '{"error":"bad signature"}'}
    delivery = headers.get("x-github-delivery", "")
    aws.sqs().send_message(QueueUrl=get_settings().task_queue_url, MessageBody=json.dumps({"delivery_id": delivery}))
    return {
        "statusCode": 202,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"status": "queued", "delivery_id": delivery}),
    }


def forget(answer: dict[str, Any], tables: dict[str, str], body: bytes) -> None:
    """Delete what one delivery created (untimed), keeping moto's tables the same size."""
    from agent_machine import aws
    from agent_machine.domain.webhooks import github

    client = aws.dynamodb()
    if answer.get("task_id"):
        client.delete_item(TableName=tables["TasksTable"], Key={"task_id": {"S": answer["task_id"]}})
        # ... and its task.created event, stored in the same transaction
        client.delete_item(
            TableName=tables["OutputTable"], Key={"task_id": {"S": answer["task_id"]}, "seq": {"N": "1"}}
        )
    client.delete_item(TableName=tables["EventsTable"], Key={"delivery_key": {"S": f"github#{answer['delivery_id']}"}})
    # ... and the source event's claim (one task per comment), written in the same transaction
    claim = github.source_key("issue_comment", json.loads(body))
    if claim:
        client.delete_item(TableName=tables["EventsTable"], Key={"delivery_key": {"S": claim}})


class CallCounter:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def __call__(self, model: Any, **kwargs: Any) -> None:
        self.calls[f"{model.service_model.service_name}.{model.name}"] += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingress.json")
    parser.add_argument("--n", type=int, default=300, help="timed deliveries per handler")
    parser.add_argument("--warmup", type=int, default=30, help="untimed deliveries per handler first")
    parser.add_argument("--log-level", default="WARNING", help="the API's LOG_LEVEL (INFO logs every delivery)")
    parser.add_argument(
        "--keep-state",
        action="store_true",
        help="keep what each delivery created (moto's transactions then slow down as tables grow)",
    )
    args = parser.parse_args()

    from local_runtime.emulator import start_moto
    from local_runtime.events import LambdaContext
    from local_runtime.provision import provision, stack_environment

    server = start_moto()
    try:
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        stack = provision(
            endpoint=server.endpoint,
            prefix=prefix,
            secret_values={"API_TOKEN": "bench-api-token-01", "GITHUB_WEBHOOK_SECRET": SECRET},
        )
        os.environ.update(stack_environment(stack))
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": server.endpoint,
                "GITHUB_WEBHOOK_SECRET": SECRET,
                "API_TOKEN": "bench-api-token-01",
                "LOG_LEVEL": args.log_level,
            }
        )

        from agent_machine import aws, secrets
        from agent_machine.settings import get_settings

        get_settings.cache_clear()
        aws.reset_clients()
        secrets.clear_cache()

        import_start = time.perf_counter()
        from machine_api.handler import handler as real_handler

        import_ms = (time.perf_counter() - import_start) * 1000

        counter = CallCounter()
        for client in (aws.dynamodb(), aws.sqs()):
            client.meta.events.register("before-call", counter)

        context: Any = LambdaContext("api")
        handlers: dict[str, Callable[[dict[str, Any], Any], Any]] = {"real": real_handler, "bare": bare_handler}
        timings: dict[str, list[float]] = {"real": [], "bare": []}
        calls: dict[str, Counter[str]] = {"real": Counter(), "bare": Counter()}
        statuses: dict[str, Counter[int]] = {"real": Counter(), "bare": Counter()}
        first_call_ms: dict[str, float] = {}

        for i in range(args.warmup + args.n):
            for name in ("real", "bare") if i % 2 == 0 else ("bare", "real"):
                body = payload_bytes(10_000_000 + 2 * i + (name == "real"))
                event = make_event(body, f"{name}-{i}-{uuid.uuid4()}")
                counter.calls.clear()
                start = time.perf_counter()
                response = handlers[name](event, context)
                elapsed = (time.perf_counter() - start) * 1000
                made = Counter(counter.calls)
                if i == 0:
                    first_call_ms[name] = round(elapsed, 3)
                statuses[name][int(response["statusCode"])] += 1
                if name == "real" and json.loads(response["body"]).get("status") == "duplicate":
                    raise SystemExit("the real handler answered duplicate: each delivery must be a new event")
                if name == "real" and not args.keep_state:
                    forget(json.loads(response["body"]), stack.tables, body)
                if i >= args.warmup:
                    timings[name].append(elapsed)
                    calls[name].update(made)

        for name, counts in statuses.items():
            if set(counts) != {202}:
                raise SystemExit(f"{name} handler answered {dict(counts)}; expected only 202")
        real, bare = summary(timings["real"]), summary(timings["bare"])
        per_delivery = {
            name: {call: round(n / args.n, 3) for call, n in sorted(c.items())} for name, c in calls.items()
        }
        result = {
            "ingress_ack_p99_ratio_vs_bare": {
                "value": round(real["p99_ms"] / bare["p99_ms"], 3),
                "unit": "ratio",
                "baseline": bare["p99_ms"],
                "notes": (
                    f"p99 of {args.n} signed GitHub issue_comment deliveries (OWNER @claude mention -> task "
                    "created) through machine_api.handler.handler (Mangum+FastAPI: guard, HMAC, parse, decide, "
                    "1 TransactWriteItems, 1 SendMessage) divided by the p99 of a bare Lambda handler doing "
                    "HMAC verify + 1 SendMessage; baseline = bare p99 in ms. Same moto server over HTTP, same "
                    f"process and payload, alternating calls, {args.warmup} warm-up calls each, distinct "
                    f"delivery ids, LOG_LEVEL={args.log_level}"
                    + (
                        "."
                        if args.keep_state
                        else "; each real delivery's task and record deleted after it "
                        "(untimed) because moto's TransactWriteItems deep-copies the tables it touches."
                    )
                ),
            },
            "ingress_ack_p50_ratio_vs_bare": {
                "value": round(real["p50_ms"] / bare["p50_ms"], 3),
                "unit": "ratio",
                "baseline": bare["p50_ms"],
            },
            "ingress_ack_p95_ratio_vs_bare": {
                "value": round(real["p95_ms"] / bare["p95_ms"], 3),
                "unit": "ratio",
                "baseline": bare["p95_ms"],
            },
            "detail": {
                "real": real,
                "bare": bare,
                "aws_calls_per_delivery": per_delivery,
                "first_call_ms": first_call_ms,
                "handler_module_import_ms": round(import_ms, 1),
                "python": platform.python_version(),
                "payload_bytes": len(body),
            },
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
