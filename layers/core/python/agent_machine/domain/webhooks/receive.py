"""One delivery from raw bytes to an answer: check the media type, verify the signature over the raw body,
parse, decide, record (deduped by delivery id and by the event's source key, see `dedupe`). The HTTP layer only
reads the (size-capped) body and maps errors to status codes.

`receive(sender, ...)` serves every sender: what differs between them (media types, signature scheme, delivery id
header, what their payload means) is one `accept` function per built-in sender in SENDERS, or the registry's spec
for a webhook defined through /api/webhooks; deciding, recording and logging are the same for all.

Signature first: nothing from an unauthenticated body is parsed (the exceptions: the legacy unsigned Sentry plugin,
accepted only when SENTRY_ALLOW_LEGACY_UNSIGNED is set, and Jira without a secret, only when JIRA_ALLOW_UNSIGNED is
set). A refusal tells the sender only that the signature is missing or invalid; the detail is logged.
JSON is parsed strictly: NaN, Infinity and numbers out of float range are a 400.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from pydantic import ValidationError

from agent_machine import secrets
from agent_machine.domain.webhooks import dynamic, github, jira, sentry
from agent_machine.domain.webhooks.common import PlanLookup
from agent_machine.domain.webhooks.decisions import Decision, Delivery
from agent_machine.domain.webhooks.errors import (
    BadSignature,
    InvalidPayload,
    MalformedPayload,
    UnknownWebhook,
    UnsupportedMediaType,
)
from agent_machine.domain.webhooks.ingest import Outcome, record
from agent_machine.domain.webhooks.plans import latest_plan
from agent_machine.domain.webhooks.signatures import (
    SignatureError,
    verify_generic,
    verify_github,
    verify_jira,
    verify_sentry,
)
from agent_machine.domain.webhooks.text import one_line
from agent_machine.models import NAME_PATTERN, TaskSource, WebhookSpec
from agent_machine.observability import get_logger
from agent_machine.settings import get_settings
from agent_machine.store import registry

_DELIVERY_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
JSON_TYPES = ("application/json",)
FORM_TYPE = "application/x-www-form-urlencoded"


# What a refused sender is told: nothing about our configuration (which secret is missing, what we expected).
# The detail goes to the log.
REFUSED = "the webhook signature is missing or invalid"


def refuse(sender: str, detail: str) -> BadSignature:
    get_logger().warning("webhook refused", extra={"sender": sender, "detail": detail})
    return BadSignature(REFUSED)


def media_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _require_json(headers: Mapping[str, str]) -> None:
    kind = media_type(headers)
    if kind not in JSON_TYPES and not kind.endswith("+json"):
        raise UnsupportedMediaType(f"expected application/json, got {one_line(kind, 80) or 'no content type'}")


def _no_constant(name: str) -> Any:
    raise MalformedPayload(f"body is not valid JSON: {name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: valid JSON, but no number anything downstream can store
        raise MalformedPayload("body has a number out of range")
    return value


def parse_json(raw: bytes | str, *, objects_only: bool = True) -> Any:
    try:
        data = json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except MalformedPayload:
        raise
    except RecursionError as exc:
        raise MalformedPayload("JSON is nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise MalformedPayload(f"body is not valid JSON: {one_line(str(exc), 200)}") from exc
    if objects_only and not isinstance(data, dict):
        raise InvalidPayload("the payload must be a JSON object")
    if not isinstance(data, dict | list):
        raise InvalidPayload("the payload must be a JSON object or array")
    return data


def delivery_id(header: str | None, body: bytes) -> str:
    """The sender's delivery id when it looks like one; otherwise a hash of the body (same body, same id)."""
    if header and _DELIVERY_ID.match(header.strip()):
        return header.strip()
    return "sha256-" + hashlib.sha256(body).hexdigest()


def _decide(decide: Callable[[], Decision]) -> Decision:
    """Run a sender's decision; its payload models' validation errors are the sender's fault (422)."""
    try:
        decision = decide()
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidPayload(f"invalid payload field {where or '(root)'}: {first.get('msg')}") from exc
    return decision


def _log(delivery: Delivery, outcome: Outcome) -> None:
    get_logger().info(
        "webhook delivery",
        extra={
            "delivery_key": delivery.key,
            "event": delivery.event,
            "action": delivery.action,
            "decision": outcome.body.get("status"),
            "reason": outcome.body.get("reason"),
            "task_id": outcome.body.get("task_id"),
            "redelivery": outcome.redelivery,
        },
    )


@dataclass(frozen=True)
class Accepted:
    """A delivery whose signature checked out and whose payload parsed: what every sender hands the shared tail."""

    delivery: Delivery
    decide: Callable[[], Decision]


Accept = Callable[[bytes, Mapping[str, str], PlanLookup], Accepted]


def _github(body: bytes, headers: Mapping[str, str], plan_lookup: PlanLookup) -> Accepted:
    kind = media_type(headers)
    if kind not in JSON_TYPES and kind != FORM_TYPE:
        raise UnsupportedMediaType(f"expected application/json or {FORM_TYPE}, got {one_line(kind, 80) or 'none'}")
    try:
        verify_github(body, headers.get("x-hub-signature-256"), secrets.get_secret("github_webhook_secret"))
    except SignatureError as exc:
        raise refuse("github", str(exc)) from exc
    if kind == FORM_TYPE:
        try:
            fields = dict(
                parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20, strict_parsing=False)
            )
        except (UnicodeDecodeError, ValueError) as exc:
            raise MalformedPayload("form body does not parse") from exc
        if "payload" not in fields:
            raise MalformedPayload("form body has no 'payload' field")
        payload = parse_json(fields["payload"])
    else:
        payload = parse_json(body)
    event = one_line(headers.get("x-github-event") or "unknown", 80)
    action = payload.get("action")
    delivery = Delivery(
        "github",
        delivery_id(headers.get("x-github-delivery"), body),
        event,
        one_line(action, 80) if isinstance(action, str) else None,
        TaskSource.GITHUB,
        github.source_key(event, payload),
    )
    return Accepted(delivery, lambda: github.decide(event, payload, get_settings(), plan_lookup))


def _jira(body: bytes, headers: Mapping[str, str], plan_lookup: PlanLookup) -> Accepted:
    _require_json(headers)
    secret = secrets.get_secret("jira_webhook_secret")
    if secret:  # with a secret configured, unsigned deliveries are refused
        try:
            verify_jira(body, headers.get("x-hub-signature"), secret)
        except SignatureError as exc:
            raise refuse("jira", str(exc)) from exc
    elif not get_settings().jira_allow_unsigned:  # fail closed: no secret means no delivery is trusted
        raise refuse("jira", "JIRA_WEBHOOK_SECRET is not configured and JIRA_ALLOW_UNSIGNED is not set")
    payload = parse_json(body)
    issue_event = payload.get("issue_event_type_name")
    delivery = Delivery(
        "jira",
        delivery_id(headers.get("x-atlassian-webhook-identifier"), body),
        jira.event_name(payload),
        one_line(issue_event, 80) if isinstance(issue_event, str) else None,
        TaskSource.JIRA,
        jira.source_key(payload),
    )
    return Accepted(delivery, lambda: jira.decide(payload, get_settings(), plan_lookup))


def _sentry(body: bytes, headers: Mapping[str, str], plan_lookup: PlanLookup) -> Accepted:
    _require_json(headers)
    resource = headers.get("sentry-hook-resource") or None
    signature = headers.get("sentry-hook-signature")
    if signature or resource or not get_settings().sentry_allow_legacy_unsigned:
        try:
            verify_sentry(body, signature, secrets.get_secret("sentry_webhook_secret"))
        except SignatureError as exc:
            raise refuse("sentry", str(exc)) from exc
        payload = parse_json(body)
    else:
        payload = parse_json(body)
        if not sentry.is_legacy(payload):
            raise refuse("sentry", "missing Sentry-Hook-Signature (only legacy plugin payloads may be unsigned)")
    action = payload.get("action")
    delivery = Delivery(
        "sentry",
        delivery_id(headers.get("request-id"), body),
        sentry.resource_name(resource, payload),
        one_line(action, 80) if isinstance(action, str) else None,
        TaskSource.SENTRY,
        sentry.source_key(resource, payload),
    )
    return Accepted(delivery, lambda: sentry.decide(resource, payload))


DYNAMIC_DELIVERY_HEADERS = (
    "x-delivery-id",
    "x-request-id",
    "idempotency-key",
    "x-github-delivery",
    "x-atlassian-webhook-identifier",
    "request-id",
)


def _dynamic(name: str, body: bytes, headers: Mapping[str, str]) -> Accepted:
    valid = NAME_PATTERN.fullmatch(name) is not None and name not in dynamic.RESERVED_NAMES
    spec = registry.get("webhook", name, WebhookSpec) if valid else None
    if spec is None:
        raise UnknownWebhook(f"no webhook named '{one_line(name, 64)}'")
    _require_json(headers)
    if not spec.secret:
        raise refuse(spec.name, f"webhook '{spec.name}' has no secret: every delivery is refused")
    try:
        verify_generic(body, headers.get(spec.signature_header.lower()), spec.secret, spec.signature_header)
    except SignatureError as exc:
        raise refuse(spec.name, str(exc)) from exc
    payload = parse_json(body, objects_only=False)
    header_id = next((headers[h] for h in DYNAMIC_DELIVERY_HEADERS if headers.get(h)), None)
    action = payload.get("action") if isinstance(payload, dict) else None
    delivery = Delivery(
        spec.name,
        delivery_id(header_id, body),
        "webhook",
        one_line(action, 80) if isinstance(action, str) else None,
        TaskSource.WEBHOOK,
    )
    return Accepted(delivery, lambda: dynamic.decide(spec, payload))


# The built-in senders, by the name in their path (/webhooks/<name>). Any other name is a webhook defined
# through /api/webhooks (its spec in the registry). The API documents each of these names (machine_api.webhooks).
SENDERS: Mapping[str, Accept] = {"github": _github, "jira": _jira, "sentry": _sentry}


def receive(sender: str, body: bytes, headers: Mapping[str, str], plan_lookup: PlanLookup | None = None) -> Outcome:
    """POST /webhooks/<sender>: the sender's checks and parse, then decide, record and log the same for all."""
    accept = SENDERS.get(sender)
    accepted = accept(body, headers, plan_lookup or latest_plan) if accept else _dynamic(sender, body, headers)
    delivery = accepted.delivery
    outcome = record(delivery, _decide(accepted.decide))
    _log(delivery, outcome)
    return outcome
