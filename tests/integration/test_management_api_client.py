"""push.ManagementApi against a real HTTP server that checks each request's SigV4 signature the way the local
gateway does (local_runtime.sigv4.verify): the frame arrives signed, on one kept-alive connection; a connection
the server closed is replaced without losing the frame; error answers become botocore's ClientError; throttling
goes through the boto3 client, whose retries deliver it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from agent_machine import aws
from agent_machine.push import ManagementApi
from botocore.exceptions import ClientError
from local_runtime import sigv4


@dataclass
class Received:
    path: str
    body: bytes
    port: int  # the client's port: one per TCP connection
    signature_problem: str | None


@dataclass
class Stage:
    url: str
    received: list[Received] = field(default_factory=list)
    answers: list[tuple[int, str]] = field(default_factory=list)  # next answers (status, x-amzn-ErrorType)
    close_after_answer: list[bool] = field(default_factory=list)


@pytest.fixture
def stage(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stage]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDPUSHTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "push-test-secret")
    aws.reset_clients()
    lock = threading.Lock()
    holder: list[Stage] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            problem = sigv4.verify(
                method="POST",
                raw_path=self.path,
                query="",
                headers=list(self.headers.items()),
                body=body,
                secret_for=lambda key: "push-test-secret" if key == "AKIDPUSHTEST" else None,
            )
            with lock:
                st = holder[0]
                st.received.append(Received(self.path, body, self.client_address[1], problem))
                status, error_type = st.answers.pop(0) if st.answers else (200, "")
                close = st.close_after_answer.pop(0) if st.close_after_answer else False
            payload = b'{"message":"nope"}' if status >= 300 else b""
            self.send_response(status)
            if error_type:
                self.send_header("x-amzn-ErrorType", error_type)
            self.send_header("Content-Length", str(len(payload)))
            if close:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)
            if close:
                self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    holder.append(Stage(f"http://127.0.0.1:{server.server_address[1]}/prod"))
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
        aws.reset_clients()


def test_frames_arrive_signed_on_one_kept_alive_connection(stage: Stage) -> None:
    api = ManagementApi(stage.url)
    frames = [b'{"type":"events","events":[' + str(i).encode() + b"]}" for i in range(5)]
    for frame in frames:
        api.post("Abc123=", frame)
    assert [r.body for r in stage.received] == frames
    assert {r.path for r in stage.received} == {"/prod/@connections/Abc123%3D"}
    assert [r.signature_problem for r in stage.received] == [None] * 5
    assert len({r.port for r in stage.received}) == 1


def test_a_connection_the_server_closed_is_replaced(stage: Stage) -> None:
    api = ManagementApi(stage.url)
    stage.close_after_answer = [True]
    api.post("conn-1", b"first")
    api.post("conn-1", b"second")
    assert [r.body for r in stage.received] == [b"first", b"second"]
    assert stage.received[0].port != stage.received[1].port


def test_a_gone_connection_is_a_client_error_with_its_code(stage: Stage) -> None:
    api = ManagementApi(stage.url)
    stage.answers = [(410, "GoneException"), (413, "PayloadTooLargeException")]
    with pytest.raises(ClientError) as gone:
        api.post("conn-2", b"x")
    assert gone.value.response["Error"]["Code"] == "GoneException"
    assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 410
    with pytest.raises(ClientError) as too_big:
        api.post("conn-2", b"y")
    assert too_big.value.response["Error"]["Code"] == "PayloadTooLargeException"
    api.post("conn-2", b"z")  # the connection stays usable after error answers
    assert [r.body for r in stage.received] == [b"x", b"y", b"z"]


def test_throttling_is_retried_by_the_boto3_client(stage: Stage) -> None:
    api = ManagementApi(stage.url)
    stage.answers = [(429, "LimitExceededException"), (429, "LimitExceededException")]
    api.post("conn-3", b"payload")
    # Ours, then botocore's: one throttled, then delivered.
    assert [(r.body, r.signature_problem) for r in stage.received] == [(b"payload", None)] * 3
