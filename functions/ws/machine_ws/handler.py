"""WebSocket API Lambda (`machine_ws.handler.handler`): the routes `$connect` (token check), `$disconnect`, and
`$default` (one JSON action per frame, dispatched here).

The package along its seams:
- protocol.py: the messages a client sends and their validation;
- subscriptions.py: subscribe (with its replay from the stored output) and unsubscribe;
- replies.py: replies to the sending connection, and the replay's push (stand-ins for refused events);
- this module: the routes, `ping` and `chat`.

Each message also extends the connection's record (`connections.touch`: API Gateway's 10-minute idle timeout).
Anything malformed gets `{"type": "error", "message"}`: the handler never raises for a client's mistake.

Import-light on purpose: no web framework (the chat domain is imported up front: it adds a few ms, no packages).
"""

from __future__ import annotations

from typing import Any

from agent_machine.api_token import TokenCheck, bearer_token, check_token
from agent_machine.domain.chat import start_chat
from agent_machine.observability import get_logger, quiet_noisy_loggers
from agent_machine.store import connections
from aws_lambda_powertools.utilities.data_classes import APIGatewayWebSocketEvent
from botocore.exceptions import BotoCoreError
from botocore.exceptions import ClientError as AwsError
from pydantic import ValidationError

from machine_ws.protocol import (
    ACTIONS,
    ChatMessage,
    ClientError,
    SubscribeMessage,
    decode_binary,
    parse,
    validation_message,
)
from machine_ws.replies import Quiet, Replies, aws_error_code
from machine_ws.subscriptions import subscribe, unsubscribe

logger = get_logger()
quiet_noisy_loggers()

Response = dict[str, Any]


def _token_from(event: APIGatewayWebSocketEvent) -> str | None:
    # Browsers cannot set headers on a WebSocket: the dashboard sends `?token=`; other clients may use the header.
    token = event.query_string_parameters.get("token")
    if token:
        return str(token)
    return bearer_token(event.headers.get("authorization"))


def connect(event: APIGatewayWebSocketEvent, connection_id: str) -> Response:
    result = check_token(_token_from(event))
    if result is TokenCheck.MISSING:
        logger.info("websocket connect refused: no token", extra={"connection_id": connection_id})
        return {"statusCode": 401, "body": "token required"}
    if result is not TokenCheck.OK:
        logger.info("websocket connect refused: wrong token", extra={"connection_id": connection_id})
        return {"statusCode": 403, "body": "forbidden"}
    connections.add(connection_id)
    return {"statusCode": 200}


def disconnect(connection_id: str) -> Response:
    connections.remove(connection_id)
    return {"statusCode": 200}


def chat(ws: Replies, msg: ChatMessage) -> None:
    try:
        accepted = start_chat(msg.message, msg.session_id)
    except LookupError:
        ws.error(f"unknown session {msg.session_id}", "chat")
        return
    except ValueError as exc:
        ws.error(str(exc) or "invalid chat message", "chat")
        return
    except Exception:
        logger.exception("chat could not be started")
        ws.error("the chat could not be started; try again", "chat")
        return
    ws.reply({"type": "chat.accepted", "task_id": accepted.task_id, "session_id": accepted.session_id})


def message(connection_id: str, body: str | None) -> Response:
    """A `$default` frame: parsed, dispatched by its action, answered on the connection; always a 200."""
    try:
        request = parse(body)
    except ClientError as exc:
        Replies(connection_id, None).error(str(exc))
        return {"statusCode": 200}

    ws = Replies(connection_id, request.request_id)
    action = request.action
    try:
        if action == "ping":
            ws.reply({"type": "pong"})
        elif action in ("subscribe", "unsubscribe"):
            msg = SubscribeMessage.model_validate(request.data)
            (subscribe if action == "subscribe" else unsubscribe)(ws, msg)
        elif action == "chat":
            chat(ws, ChatMessage.model_validate(request.data))
        else:
            raise ClientError(f"unknown action; expected {ACTIONS}")
    except ValidationError as exc:
        ws.error(validation_message(exc), action)
    except ClientError as exc:
        ws.error(str(exc), action)
    except (AwsError, BotoCoreError) as exc:
        # A push or table call failed: the client is told (best effort) and the Lambda still succeeds, so API
        # Gateway does not answer with its own opaque error. A subscription already registered stays.
        logger.exception("message could not be handled", extra={"action": str(action)[:32]})
        with Quiet():
            reason = aws_error_code(exc)
            ws.error(f"the server could not complete this {str(action)[:32]} ({reason}); try again", action)
    return {"statusCode": 200}


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> Response:
    ws_event = APIGatewayWebSocketEvent(event)
    try:
        request = ws_event.request_context
        route, connection_id = request.route_key, request.connection_id
    except (KeyError, TypeError):  # not an API Gateway WebSocket event: there is no one to answer
        return {"statusCode": 400, "body": "no connection id"}
    if not isinstance(connection_id, str) or not connection_id:
        return {"statusCode": 400, "body": "no connection id"}
    logger.append_keys(connection_id=connection_id, route=route)
    if route == "$connect":
        return connect(ws_event, connection_id)
    if route == "$disconnect":
        return disconnect(connection_id)
    _touch(connection_id, request.connected_at)
    body = ws_event.body
    if ws_event.is_base64_encoded and isinstance(body, str):
        body = decode_binary(body)
    return message(connection_id, body)


def _touch(connection_id: str, connected_at_ms: object) -> None:
    """Each message keeps the connection's record alive for API Gateway's idle timeout (one UpdateItem)."""
    connected = connected_at_ms / 1000 if isinstance(connected_at_ms, int | float) and connected_at_ms > 0 else None
    try:
        connections.touch(connection_id, connected)
    except (AwsError, BotoCoreError):
        logger.warning("could not record the connection's activity", exc_info=True)
