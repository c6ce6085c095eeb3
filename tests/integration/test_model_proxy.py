"""The runner's model proxy (runner/model_proxy.py) over real sockets: its token check, its unbuffered relay of a
streamed answer, its caps, and, with the REAL `claude` 2.1.197 through the runner, that the CLI holds no real
credential, that the proxy's cost agrees with the CLI's, that a cap holds at the wire, and Bedrock's SigV4.

Stand-in upstreams: a recording Messages API in this module (scripted per test), tests/fakes/fake_anthropic_api.py
(the real-CLI tests) and tests/fakes/fake_bedrock_api.py (checks every SigV4 signature)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPResponse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from agent_machine import aws, secrets
from agent_machine.domain import pricing
from agent_machine.models import AgentSpec, PermissionMode, TaskStatus
from agent_machine.settings import get_settings
from agent_machine.store import costs, output, registry
from local_runtime.provision import Provisioned
from runner import model_proxy, run

from tests.fakes.fake_bedrock_api import FakeBedrock
from tests.integration import test_real_cli
from tests.integration.runner_support import run_task, wait_until

# The real CLI's fixtures (the binary, the fake API, the runner configured for them).
claude_path = test_real_cli.claude_path
fake_api = test_real_cli.fake_api
real = test_real_cli.real
result_line = test_real_cli.result_line

REAL_KEY = "sk-ant-real-key-of-the-runner"
MODEL = "claude-opus-4-8"
USAGE = {"input_tokens": 1200, "output_tokens": 42}
ONE_ANSWER = pricing.cost_usd(MODEL, USAGE)  # what the fake API's usage costs: $0.00705


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


STREAM_HEAD = sse(
    "message_start",
    {
        "type": "message_start",
        "message": {"id": "m", "model": MODEL, "content": [], "usage": {**USAGE, "output_tokens": 1}},
    },
)
STREAM_TAIL = (
    sse(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    + sse(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
    )
    + sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    + sse(
        "message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 42}}
    )
    + sse("message_stop", {"type": "message_stop"})
)


@dataclass
class Recorder:
    """A Messages API stand-in: records every request; streams STREAM_HEAD, then the rest once `release` is set."""

    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    url: str = ""


@pytest.fixture
def upstream() -> Iterator[Recorder]:
    recorder = Recorder()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            recorder.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            if json.loads(body or b"{}").get("stream"):
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"%x\r\n%b\r\n" % (len(STREAM_HEAD), STREAM_HEAD))
                recorder.release.wait(60)
                self.wfile.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(STREAM_TAIL), STREAM_TAIL))
                recorder.finished.set()
                return
            answer = json.dumps({"id": "m", "type": "message", "model": MODEL, "content": [], "usage": USAGE}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield recorder
    recorder.release.set()
    server.shutdown()
    server.server_close()


def proxy_to(recorder: Recorder, *, cap_usd: float = 3.0, **meter: Any) -> model_proxy.ModelProxy:
    upstream = model_proxy.Upstream("anthropic", recorder.url, "us-east-1", (("x-api-key", REAL_KEY),))
    return model_proxy.ModelProxy(upstream, model_proxy.Meter(cap_usd, **meter)).start()


@pytest.fixture
def started() -> Iterator[list[model_proxy.ModelProxy]]:
    proxies: list[model_proxy.ModelProxy] = []
    yield proxies
    for proxy in proxies:
        proxy.stop()


def call(
    proxy: model_proxy.ModelProxy, path: str = "/v1/messages", *, headers: dict[str, str], body: dict[str, Any] | None
) -> tuple[int, dict[str, str], bytes]:
    conn = HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    try:
        conn.request("POST", path, body=json.dumps(body or {}).encode(), headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


MESSAGE = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def test_only_the_tasks_token_passes_and_the_real_key_goes_upstream_only(
    upstream: Recorder, started: list[model_proxy.ModelProxy]
) -> None:
    proxy = proxy_to(upstream)
    started.append(proxy)
    for headers in ({}, {"x-api-key": "machine-guess"}, {"authorization": "Bearer " + proxy.token[:-1] + "x"}):
        status, answer_headers, body = call(proxy, headers=headers, body=MESSAGE)
        assert status == 401 and json.loads(body)["error"]["type"] == "authentication_error"
        assert REAL_KEY not in body.decode() + json.dumps(answer_headers)
    assert upstream.requests == []  # nothing reached the upstream without the token
    for headers in ({"x-api-key": proxy.token}, {"authorization": f"Bearer {proxy.token}"}):
        status, answer_headers, body = call(proxy, headers=headers, body=MESSAGE)
        assert status == 200 and json.loads(body)["usage"] == USAGE
        assert REAL_KEY not in body.decode() + json.dumps(answer_headers)
    status, _, _ = call(proxy, f"/t/{proxy.token}/v1/messages", headers={}, body=MESSAGE)  # Bedrock's way
    assert status == 200
    assert [r[1] for r in upstream.requests] == ["/v1/messages"] * 3
    for _method, _path, headers, _body in upstream.requests:
        assert headers["x-api-key"] == REAL_KEY and "authorization" not in headers
        assert proxy.token not in json.dumps(headers)
    wait_until(metered(proxy, 3 * ONE_ANSWER), timeout=10)


def test_only_model_paths_are_forwarded(upstream: Recorder, started: list[model_proxy.ModelProxy]) -> None:
    proxy = proxy_to(upstream)
    started.append(proxy)
    for path in ("/v1/messages/batches", "/v1/files", "/v1/organizations/api_keys", "/v1/messages/../complete"):
        status, _, body = call(proxy, path, headers={"x-api-key": proxy.token}, body=MESSAGE)
        assert status == 404 and json.loads(body)["error"]["type"] == "not_found_error", path
    # The CLI's preconnect (HEAD /, no credential) is answered by the proxy itself: nothing is forwarded.
    conn = HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    conn.request("HEAD", "/")
    assert conn.getresponse().status == 200
    conn.close()
    assert upstream.requests == []


def metered(proxy: model_proxy.ModelProxy, cost_usd: float) -> Callable[[], bool]:
    """The proxy adds a response's cost once it has relayed it: after the client has its answer."""
    return lambda: bool(proxy.cost_usd == pytest.approx(cost_usd))


def read_until(response: HTTPResponse, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        chunk = response.read1(65536)
        assert chunk, f"the stream ended before {marker!r}: {seen!r}"
        seen += chunk
    return seen


def test_a_stream_is_relayed_chunk_by_chunk(upstream: Recorder, started: list[model_proxy.ModelProxy]) -> None:
    proxy = proxy_to(upstream)
    started.append(proxy)
    conn = HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    conn.request(
        "POST", "/v1/messages", body=json.dumps({**MESSAGE, "stream": True}), headers={"x-api-key": proxy.token}
    )
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("content-type") == "text/event-stream"
    first = read_until(response, b"message_start")
    # The client holds the first event while the upstream is still writing (it waits for `release`).
    assert not upstream.finished.is_set() and first == STREAM_HEAD
    upstream.release.set()
    rest = response.read()
    conn.close()
    assert first + rest == STREAM_HEAD + STREAM_TAIL  # unchanged, byte for byte
    wait_until(lambda: proxy.meter.cost_usd > 0, timeout=10)  # metered once the answer has been relayed
    assert proxy.cost_usd == pytest.approx(ONE_ANSWER)  # message_delta's 42 output tokens replaced the 1


def test_a_request_over_the_cap_is_refused_before_it_is_sent(
    upstream: Recorder, started: list[model_proxy.ModelProxy]
) -> None:
    proxy = proxy_to(upstream, cap_usd=ONE_ANSWER * 1.5)
    started.append(proxy)
    for n in (1, 2):  # the second starts under the cap and ends past it
        assert call(proxy, headers={"x-api-key": proxy.token}, body=MESSAGE)[0] == 200
        wait_until(metered(proxy, n * ONE_ANSWER), timeout=10)
    status, headers, body = call(proxy, headers={"x-api-key": proxy.token}, body=MESSAGE)
    assert status == 402 and headers["x-should-retry"] == "false"
    error = json.loads(body)
    assert error["type"] == "error" and error["error"]["type"] == "billing_error"
    assert "budget" in error["error"]["message"]
    assert len(upstream.requests) == 2 and proxy.meter.refused == 1
    # Token counting spends nothing: not refused.
    assert call(proxy, "/v1/messages/count_tokens", headers={"x-api-key": proxy.token}, body=MESSAGE)[0] == 200


def test_the_days_remaining_budget_caps_too(upstream: Recorder, started: list[model_proxy.ModelProxy]) -> None:
    spent = [49.995]
    proxy = proxy_to(upstream, daily_cap_usd=50.0, spent_today=lambda: spent[0])
    started.append(proxy)
    wait_until(lambda: proxy.meter.day_spent_usd == spent[0], timeout=10)  # read in the background at the start
    assert call(proxy, headers={"x-api-key": proxy.token}, body=MESSAGE)[0] == 200
    wait_until(lambda: proxy.cost_usd > 0, timeout=10)
    status, _, body = call(proxy, headers={"x-api-key": proxy.token}, body=MESSAGE)
    assert status == 402 and "today's budget of $50 is spent" in json.loads(body)["error"]["message"]


def test_the_runners_key_comes_from_secrets_manager_to_the_proxy_only(
    stack: Provisioned, upstream: Recorder, monkeypatch: pytest.MonkeyPatch, started: list[model_proxy.ModelProxy]
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", upstream.url)
    arn = stack.secrets["AppSecrets"]
    current = json.loads(aws.secretsmanager().get_secret_value(SecretId=arn)["SecretString"])
    aws.secretsmanager().put_secret_value(
        SecretId=arn, SecretString=json.dumps({**current, "ANTHROPIC_API_KEY": REAL_KEY})
    )
    secrets.clear_cache()
    get_settings.cache_clear()
    proxy = run.start_model_proxy(1.0)
    started.append(proxy)
    assert proxy.cli_env() == {"ANTHROPIC_BASE_URL": proxy.url, "ANTHROPIC_API_KEY": proxy.token}
    assert call(proxy, headers={"x-api-key": proxy.token}, body=MESSAGE)[0] == 200
    assert upstream.requests[-1][2]["x-api-key"] == REAL_KEY


# --------------------------------------------------------------------------------------------- the real CLI


def tool_agent() -> str:
    """An agent whose Bash runs any command (dontAsk), so a prompt's [[cmd:...]] runs as written."""
    spec = AgentSpec(
        name="tooler",
        description="test agent",
        allowed_tools=["Bash"],
        permission_mode=PermissionMode.DONT_ASK,
        max_turns=4,
    )
    registry.put("agent", spec, actor="test")
    return spec.name


def tool_outputs(task_id: str) -> list[str]:
    texts: list[str] = []
    for event in output.read_events(task_id):
        if event.payload.get("kind") == "user":
            for block in event.payload["data"]["message"]["content"]:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    content = block.get("content")
                    texts.append(content if isinstance(content, str) else json.dumps(content))
    return texts


def env_lines(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith(" "))


@pytest.mark.real_cli
@pytest.mark.timeout(300)
def test_the_real_cli_holds_no_key_and_both_costs_agree(
    stack: Provisioned, real: Path, fake_api: tuple[str, Path]
) -> None:
    _, log = fake_api
    before = len(log.read_text().splitlines()) if log.exists() else 0
    # (Two scripted commands: the fake API then counts tool results over the whole conversation.)
    task = run_task(stack, "[[cmd:env]] [[cmd:true]] show me", agent=tool_agent())
    assert task.status == TaskStatus.COMPLETED, task.error
    final = result_line(task.task_id)
    seen = tool_outputs(task.task_id)[0]
    env = env_lines(seen)
    # The CLI's Bash saw the proxy's address and token, never the runner's key (sk-ant-test) or AWS credentials.
    assert env["ANTHROPIC_BASE_URL"].startswith("http://127.0.0.1:") and env["ANTHROPIC_API_KEY"].startswith("machine-")
    assert "sk-ant-test" not in seen and not {n for n in env if n.startswith("AWS_")}
    # Every request the fake API answered (1200 in, 42 out each) went through the proxy, priced as the CLI did.
    answered = len(log.read_text().splitlines()) - before
    assert answered >= 3 and final["total_cost_usd"] == pytest.approx(answered * ONE_ANSWER)
    assert task.proxy_cost_usd == pytest.approx(final["total_cost_usd"])
    assert task.cost_usd == pytest.approx(final["total_cost_usd"])


@pytest.mark.real_cli
@pytest.mark.timeout(300)
def test_the_tasks_cap_holds_at_the_wire(stack: Provisioned, real: Path) -> None:
    """A tool that spends with the token (curl to the proxy) is metered: the CLI's next request is refused,
    although the CLI's own count is still under its --max-budget-usd."""
    curl = (
        'curl -s "$ANTHROPIC_BASE_URL/v1/messages" -H "x-api-key: $ANTHROPIC_API_KEY" '
        "-H 'content-type: application/json' "
        f'-d \'{{"model":"{MODEL}","max_tokens":5,"messages":[{{"role":"user","content":"x"}}]}}\''
    )
    task = run_task(stack, f"[[cmd:{curl}]] spend", agent=tool_agent(), max_budget_usd=0.01)
    assert task.status == TaskStatus.FAILED and task.error_kind == "budget", (task.status, task.error)
    assert "API Error: 402" in (task.error or "") and "this task's budget of $0.01 is spent" in (task.error or "")
    final = result_line(task.task_id)
    assert final["total_cost_usd"] == pytest.approx(ONE_ANSWER)  # the CLI counted its own request only
    assert task.proxy_cost_usd == pytest.approx(2 * ONE_ANSWER)  # the proxy also the tool's
    assert task.cost_usd == pytest.approx(2 * ONE_ANSWER)  # and that is what is booked


@pytest.mark.real_cli
@pytest.mark.timeout(300)
def test_the_days_cap_refuses_the_real_clis_next_request(
    stack: Provisioned, real: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = costs.today()
    # $0.005 a day, less than one answer. The task's cap ($3) is above it: the task holds the whole day when it
    # starts (domain/budgets.py), so it runs, and the proxy stops it at the day's cap, not at its own.
    monkeypatch.setenv("DAILY_BUDGET_USD", "0.005")
    get_settings.cache_clear()
    task = run_task(stack, "please use a tool")  # the brain asks for a tool, then would answer
    assert task.status == TaskStatus.FAILED and task.error_kind == "budget", (task.status, task.error)
    assert "today's budget of $0.005 is spent" in (task.error or "")
    assert task.proxy_cost_usd == pytest.approx(ONE_ANSWER)
    assert costs.day_total(day) == pytest.approx(ONE_ANSWER)


@pytest.mark.real_cli
@pytest.mark.timeout(300)
def test_bedrock_requests_are_signed_by_the_runner_and_the_cli_has_no_aws_credentials(
    stack: Provisioned, real: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner_credentials = ("testing", "testing", "testing")  # the runner's (tests/conftest.py)
    with FakeBedrock(credentials=runner_credentials, region="us-east-1") as bedrock:
        monkeypatch.setenv("CLAUDE_CODE_USE_BEDROCK", "1")
        monkeypatch.setenv("ANTHROPIC_BEDROCK_BASE_URL", bedrock.url)
        get_settings.cache_clear()
        task = run_task(stack, "[[cmd:env]] show me", agent=tool_agent())
        requests = list(bedrock.requests)
    assert task.status == TaskStatus.COMPLETED, task.error
    invokes = [r for r in requests if r.path.endswith("/invoke-with-response-stream")]
    assert len(invokes) == 2 and any(r.path.startswith("/inference-profiles") for r in requests)
    for request in requests:
        assert request.signature_valid, (request.path, request.why)
        assert request.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
        assert "/t/" not in request.path and "machine-" not in json.dumps(request.headers)
    (seen,) = bedrock.tool_results
    env = env_lines(seen)
    assert env["CLAUDE_CODE_SKIP_BEDROCK_AUTH"] == "1" and env["ANTHROPIC_BEDROCK_BASE_URL"].startswith("http://127.0")
    assert {n for n in env if n.startswith("AWS_")} == {"AWS_REGION"}  # no AWS credential of any kind
    final = result_line(task.task_id)
    assert final["total_cost_usd"] > 0 and task.proxy_cost_usd == pytest.approx(final["total_cost_usd"])


def test_pricing_matches_the_clis_formula() -> None:
    assert pricing.cost_usd("claude-opus-4-8", USAGE) == pytest.approx(0.00705)
    bedrock_sonnet = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    assert pricing.cost_usd(bedrock_sonnet, USAGE) == pytest.approx(1200 * 3e-6 + 42 * 15e-6)
    cached: dict[str, Any] = {
        "input_tokens": 10,
        "output_tokens": 0,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 300,
        "cache_creation": {"ephemeral_1h_input_tokens": 100},
        "server_tool_use": {"web_search_requests": 2},
    }
    expected = (10 * 1 + 1000 * 0.1 + 100 * 2 + 200 * 1.25) / 1e6 + 0.02
    assert pricing.cost_usd("claude-haiku-4-5-20251001", cached) == pytest.approx(expected)
    assert pricing.cost_usd("claude-opus-4-8", {**USAGE, "speed": "fast"}) == pytest.approx(1200 * 10e-6 + 42 * 50e-6)
    assert pricing.cost_usd("claude-opus-4-20250514", USAGE) == pytest.approx(1200 * 15e-6 + 42 * 75e-6)
    assert pricing.cost_usd("some-other-model", USAGE) == pytest.approx(0.00705)  # the CLI's default price


def test_upstream_credentials_from_the_runners_environment(stack: Provisioned) -> None:
    token = model_proxy.upstream_from_env(None, {"ANTHROPIC_AUTH_TOKEN": "gw", "ANTHROPIC_CUSTOM_HEADERS": "x-team: a"})
    assert token.headers == (("authorization", "Bearer gw"), ("x-team", "a")) and token.kind == "anthropic"
    oauth = model_proxy.upstream_from_env(None, {"CLAUDE_CODE_OAUTH_TOKEN": "oat"})
    assert oauth.beta == "oauth-2025-04-20" and oauth.base_url == model_proxy.DEFAULT_ANTHROPIC_URL
    bedrock = model_proxy.upstream_from_env(None, {"CLAUDE_CODE_USE_BEDROCK": "1"})
    assert bedrock.kind == "bedrock" and bedrock.headers == ()
    control = model_proxy.route("bedrock", "GET", "/inference-profiles")
    assert control is not None and bedrock.url_for("/inference-profiles", control).startswith("https://bedrock.us-")
    runtime = model_proxy.route("bedrock", "POST", "/model/us.anthropic.claude-x-v1%3A0/invoke")
    assert runtime is not None and runtime.metered and runtime.model == "us.anthropic.claude-x-v1:0"
    assert (
        bedrock.url_for("/model/x/invoke", runtime) == "https://bedrock-runtime.us-east-1.amazonaws.com/model/x/invoke"
    )
