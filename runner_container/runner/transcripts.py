"""The CLI's session transcripts in S3, so a chat can go on on whichever runner takes the next message.

After a run: `<config>/projects/<munged cwd>/<cli session>.jsonl` -> `s3://<artifacts>/sessions/<session_id>/
<cli session>.jsonl`, with the CLI's cumulative totals at that point in the object's metadata (what the next
run's totals continue from, so a task's cost is the difference even if the session record lags behind).
Before a `--resume`: the object back to the place the CLI looks for it under the current cwd.
"""

from __future__ import annotations

import json
from typing import Any

from agent_machine import aws
from agent_machine.models import ModelUsage
from agent_machine.settings import get_settings
from botocore.exceptions import ClientError

from runner import sandbox
from runner.results import Prior
from runner.workspace import Workspace

_MAX_METADATA = 1800  # S3 user metadata is limited to 2 KB in all


def key(session_id: str, cli_session_id: str) -> str:
    return f"sessions/{session_id}/{cli_session_id}.jsonl"


def _encode_usage(usage: dict[str, ModelUsage]) -> str:
    compact = {
        name: [u.input_tokens, u.output_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens, u.cost_usd]
        for name, u in usage.items()
    }
    return json.dumps(compact, separators=(",", ":"))


def _decode_usage(raw: str | None) -> dict[str, ModelUsage]:
    if not raw:
        return {}
    try:
        data: Any = json.loads(raw)
        return {
            str(name): ModelUsage(
                input_tokens=int(v[0]),
                output_tokens=int(v[1]),
                cache_read_input_tokens=int(v[2]),
                cache_creation_input_tokens=int(v[3]),
                cost_usd=float(v[4]),
            )
            for name, v in data.items()
        }
    except (ValueError, TypeError, IndexError, AttributeError):
        return {}


def restore(ws: Workspace, session_id: str, cli_session_id: str) -> Prior | None:
    """Put the transcript where `--resume` looks for it; None when there is none stored."""
    try:
        obj = aws.s3().get_object(Bucket=get_settings().artifacts_bucket, Key=key(session_id, cli_session_id))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None
        raise
    dest = ws.transcript_path(cli_session_id)
    dest.parent.mkdir(parents=True, exist_ok=True)
    body = obj["Body"]
    with dest.open("wb") as f:
        for chunk in body.iter_chunks(1024 * 1024):
            f.write(chunk)
    meta = obj.get("Metadata", {})
    try:
        total = float(meta.get("cli-total-cost-usd", "0") or 0)
    except ValueError:
        total = 0.0
    return Prior(total_cost_usd=total, model_usage=_decode_usage(meta.get("model-usage")))


def save(
    ws: Workspace,
    session_id: str,
    cli_session_id: str,
    *,
    total_cost_usd: float | None,
    model_usage: dict[str, ModelUsage],
) -> bool:
    """Upload the run's transcript; False when the CLI saved none (nothing to resume from)."""
    path = ws.find_transcript(cli_session_id)
    if path is None:
        return False
    metadata = {"cli-total-cost-usd": repr(total_cost_usd or 0.0)}
    usage = _encode_usage(model_usage)
    if len(usage) <= _MAX_METADATA:
        metadata["model-usage"] = usage
    with sandbox.open_owned(path) as f:  # the CLI's own file, never a link it made to another
        aws.s3().put_object(
            Bucket=get_settings().artifacts_bucket,
            Key=key(session_id, cli_session_id),
            Body=f,
            ContentType="application/x-ndjson",
            Metadata=metadata,
        )
    return True
