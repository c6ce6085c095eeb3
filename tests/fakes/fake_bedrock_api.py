"""A local stand-in for Amazon Bedrock (runtime and the inference-profile listing) that checks SigV4 signatures.

    with FakeBedrock(credentials=("AKID", "secret", "session-token"), region="us-east-1") as bedrock:
        ...  # point ANTHROPIC_BEDROCK_BASE_URL (of the runner, whose model proxy signs) at bedrock.url

Every request is recorded (`requests`) with whether its `Authorization` is a valid SigV4 signature, recomputed
with botocore from the request as received and the expected credentials, service `bedrock` and region.
`POST /model/<id>/invoke-with-response-stream` answers like Bedrock: an `application/vnd.amazon.eventstream`
body whose `chunk` events carry the Messages API's stream events base64-encoded (`{"bytes": ...}`), the last one
with `amazon-bedrock-invocationMetrics`; `/invoke` answers the Messages JSON. The scenario follows the user's
prompt like fake_anthropic_api.py: `[[cmd:...]]` asks for that Bash command once (its result, when it comes
back, is kept in `tool_results`), anything else gets the text "All done: <prompt>". Usage per response: 1200
input and 42 output tokens. `GET /inference-profiles` answers an empty list.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import threading
import uuid
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

INPUT_TOKENS, OUTPUT_TOKENS = 1200, 42
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request, "
    r"SignedHeaders=(?P<signed>[^,]+), Signature=(?P<signature>[0-9a-f]{64})"
)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    signature_valid: bool
    why: str = ""


@dataclass
class FakeBedrock:
    credentials: tuple[str, str, str | None]
    region: str = "us-east-1"
    requests: list[Recorded] = field(default_factory=list)
    tool_results: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeBedrock:
        fake = self

        class Handler(_Handler):
            bedrock = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def verify(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[bool, str]:
        """Whether `Authorization` is the SigV4 signature of this request by the expected credentials."""
        found = _AUTH.fullmatch(headers.get("authorization", ""))
        if found is None:
            return False, "no SigV4 Authorization header"
        key, secret, token = self.credentials
        if (found["key"], found["region"], found["service"]) != (key, self.region, "bedrock"):
            return False, f"credential scope {found['key']}/{found['region']}/{found['service']}"
        if token is not None and headers.get("x-amz-security-token") != token:
            return False, "missing or wrong X-Amz-Security-Token"
        signed = found["signed"].split(";")
        request = AWSRequest(
            method=method,
            url=f"http://{headers['host']}{path}",
            data=body,
            headers={name: headers[name] for name in signed if name != "host" and name in headers},
        )
        request.context["timestamp"] = headers.get("x-amz-date", "")
        auth = SigV4Auth(Credentials(key, secret, token), "bedrock", self.region)
        canonical = auth.canonical_request(request)
        expected = auth.signature(auth.string_to_sign(request, canonical), request)
        return expected == found["signature"], "" if expected == found["signature"] else "signature mismatch"


def _event_frame(payload: bytes) -> bytes:
    """One AWS event-stream message (prelude, string headers, payload, CRC32s) of type `chunk`."""
    headers = b""
    for name, value in ((":event-type", "chunk"), (":content-type", "application/json"), (":message-type", "event")):
        n, v = name.encode(), value.encode()
        headers += bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = 12 + len(headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + payload
    return message + struct.pack(">I", zlib.crc32(message))


def _prompt(messages: list[dict[str, Any]]) -> str:
    for m in messages:
        if m.get("role") != "user":
            continue
        c = m.get("content")
        if isinstance(c, str):
            return c
        texts = [b.get("text", "") for b in c or [] if isinstance(b, dict) and b.get("type") == "text"]
        texts = [t for t in texts if not t.lstrip().startswith("<system-reminder>")]
        return texts[-1] if texts else ""
    return ""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    bedrock: FakeBedrock

    def log_message(self, *args: Any) -> None:
        pass

    def _record(self, body: bytes) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        ok, why = self.bedrock.verify(self.command, self.path, headers, body)
        self.bedrock.requests.append(Recorded(self.command, self.path, headers, body, ok, why))

    def _json(self, code: int, obj: dict[str, Any]) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._record(b"")
        if not self.bedrock.requests[-1].signature_valid:
            self._json(403, {"message": "The request signature we calculated does not match"})
            return
        self._json(200, {"inferenceProfileSummaries": []})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self._record(body)
        if not self.bedrock.requests[-1].signature_valid:
            self._json(403, {"message": "The request signature we calculated does not match"})
            return
        match = re.fullmatch(r"/model/([^/]+)/(invoke|invoke-with-response-stream|count-tokens)", self.path)
        if match is None:
            self._json(404, {"message": "unknown operation"})
            return
        if match[2] == "count-tokens":
            self._json(200, {"inputTokens": 10})
            return
        req = json.loads(body or b"{}")
        messages = req.get("messages") or []
        tools = [t.get("name") for t in req.get("tools") or []]
        # The tool results since the model's last answer (the CLI may add a user message after them).
        answered = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=-1)
        last = [b for m in messages[answered + 1 :] if isinstance(m.get("content"), list) for b in m["content"]]
        results = [b for b in last if isinstance(b, dict) and b.get("type") == "tool_result"]
        for result in results:
            content = result.get("content")
            self.bedrock.tool_results.append(json.dumps(content) if not isinstance(content, str) else content)
        prompt = _prompt(messages)
        command = re.search(r"\[\[cmd:(.+?)\]\]", prompt)
        if "Bash" in tools and command and not results:
            blocks: list[tuple[str, Any]] = [("tool_use", {"command": command[1], "description": "run it"})]
            stop = "tool_use"
        else:
            blocks, stop = [("text", "All done: " + prompt[:80] if "Bash" in tools else "Untitled task")], "end_turn"
        model = "claude-" + match[1].split("claude-", 1)[-1].split("-v1", 1)[0] if "claude-" in match[1] else match[1]
        if match[2] == "invoke":
            content = [{"type": "text", "text": v} for k, v in blocks if k == "text"]
            usage = {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS}
            self._json(
                200,
                {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": stop,
                    "usage": usage,
                },
            )
            return
        self._stream(model, blocks, stop)

    def _stream(self, model: str, blocks: list[tuple[str, Any]], stop: str) -> None:
        events: list[dict[str, Any]] = [
            {
                "type": "message_start",
                "message": {
                    "id": "msg_" + uuid.uuid4().hex[:24],
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": 1},
                },
            },
        ]
        for i, (kind, value) in enumerate(blocks):
            if kind == "text":
                start: dict[str, Any] = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": value}]
            else:
                start = {"type": "tool_use", "id": "toolu_" + uuid.uuid4().hex[:20], "name": "Bash", "input": {}}
                deltas = [{"type": "input_json_delta", "partial_json": json.dumps(value)}]
            events.append({"type": "content_block_start", "index": i, "content_block": start})
            events += [{"type": "content_block_delta", "index": i, "delta": d} for d in deltas]
            events.append({"type": "content_block_stop", "index": i})
        events.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": OUTPUT_TOKENS},
            }
        )
        events.append(
            {
                "type": "message_stop",
                "amazon-bedrock-invocationMetrics": {
                    "inputTokenCount": INPUT_TOKENS,
                    "outputTokenCount": OUTPUT_TOKENS,
                    "invocationLatency": 10,
                    "firstByteLatency": 5,
                },
            }
        )
        self.send_response(200)
        self.send_header("content-type", "application/vnd.amazon.eventstream")
        self.send_header("x-amzn-bedrock-content-type", "application/json")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for event in events:
            payload = json.dumps({"bytes": base64.b64encode(json.dumps(event).encode()).decode(), "p": "abcd"})
            frame = _event_frame(payload.encode())
            self.wfile.write(b"%x\r\n%b\r\n" % (len(frame), frame))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
