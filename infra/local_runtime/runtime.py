"""The local machine: emulator + resources from template.yaml + gateway + SQS event sources, as one object
that starts and stops cleanly (used by `python -m local_runtime`, `make run-local` and the tests)."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import uvicorn

from local_runtime import sigv4
from local_runtime.emulator import MotoServer, free_port, start_moto
from local_runtime.gateway import DEFAULT_HEADER_TIMEOUT_SECONDS, Gateway, RouteTarget, header_timeout_protocol
from local_runtime.invoker import Invoker
from local_runtime.logs import log
from local_runtime.persistence import StateFile, requeue_unfinished
from local_runtime.provision import (
    SECRET_KEYS,
    Provisioned,
    parameters_from_env,
    provision,
    stack_environment,
)
from local_runtime.sqs_source import SqsEventSource, SqsMapping
from local_runtime.template import ROOT, authorizer_handler, functions, http_api_cors

USER_SETTINGS = (
    "MAX_CONCURRENT_TASKS",
    "TASK_TIMEOUT_SECONDS",
    "LOG_LEVEL",
    "MACHINE_ID",
    "MAX_TASK_ATTEMPTS",
    "DAILY_BUDGET_USD",
    "TASK_BUDGET_USD",
    "CORS_ORIGINS",
    "LOG_JSON",
    "WEB_FETCH_DOMAINS",
)
CREDENTIAL_NAMES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def local_credentials() -> dict[str, str]:
    """Credentials made for one run: the runtime's functions get them, and its emulator and management API answer
    nobody else (sigv4.py). Random, so a CLI cannot guess them; kept only in root's processes and the 0700 data
    folder. (Not `AKIA...`: LocalStack reads an account id out of such keys.)"""
    return {
        "AWS_ACCESS_KEY_ID": "LOCAL" + secrets.token_hex(8).upper(),
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
    }


def functions_secret_for() -> Callable[[str], str | None]:
    """The secret key of the credentials the runtime's functions sign with, looked up by access key id: the
    runtime's own (local), or the ones boto3 finds (--aws; refreshed as boto3 refreshes them)."""
    source = boto3.Session().get_credentials()

    def secret_for(access_key_id: str) -> str | None:
        if source is None:
            return None
        frozen = source.get_frozen_credentials()
        known = frozen.access_key or ""
        return frozen.secret_key if known and sigv4.same(known, access_key_id) else None

    return secret_for


def private_folder(path: Path) -> None:
    """The data folder (state, api_token, runtime.json) is the runtime's own: 0700, whoever made it first."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)


def protect_secret_file(path: Path | None) -> None:
    """A .env holds the machine's secrets: readable by others, it would reach a CLI running as another user."""
    if path is None or not path.is_file():
        return
    st = path.stat()
    if st.st_mode & 0o077 and st.st_uid == os.geteuid():
        path.chmod(0o600)
        log(f"{path} was readable by other users: made it 0600 (it holds secrets)")


@dataclass
class LocalConfig:
    port: int = 8000
    host: str = "127.0.0.1"
    data_dir: Path = ROOT / ".local"
    endpoint: str | None = None  # AWS_ENDPOINT_URL (LocalStack, a moto you run); None = start a moto server
    real_aws: bool = False
    prefix: str = "local"
    region: str = "us-east-1"
    persist: bool = True
    autosave_seconds: float = 10.0
    queue_visibility_timeout: int | None = None
    static_dir: Path = ROOT / "dashboard_spa"
    env_file: Path | None = ROOT / ".env"
    # How long a client may take to send a request's headers (LOCAL_HEADER_TIMEOUT_SECONDS).
    header_timeout_seconds: float = field(
        default_factory=lambda: float(os.environ.get("LOCAL_HEADER_TIMEOUT_SECONDS") or DEFAULT_HEADER_TIMEOUT_SECONDS)
    )


@dataclass
class LocalMachine:
    config: LocalConfig
    api_token: str = ""
    moto: MotoServer | None = None
    provisioned: Provisioned | None = None
    sources: list[SqsEventSource] = field(default_factory=list)
    state: StateFile | None = None
    server: uvicorn.Server | None = None
    gateway: Gateway | None = None
    _thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://localhost:{self.config.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://localhost:{self.config.port}/ws"

    @property
    def endpoint(self) -> str | None:
        if self.moto:
            return self.moto.endpoint
        return self.config.endpoint

    def _api_token(self) -> str:
        token = os.environ.get("API_TOKEN")
        if token:
            return token
        # Made once and kept, so a bookmarked dashboard URL still signs in after a restart.
        path = self.config.data_dir / "api_token"
        if path.exists():
            return path.read_text().strip()
        token = secrets.token_urlsafe(24)
        private_folder(self.config.data_dir)
        path.write_text(token)
        path.chmod(0o600)
        return token

    def start(self) -> None:
        cfg = self.config
        private_folder(cfg.data_dir)
        protect_secret_file(cfg.env_file)
        self.api_token = self._api_token()
        _refuse_weak_secrets(self.api_token)
        if cfg.port == 0:
            cfg.port = free_port()
        if not cfg.real_aws:
            # The emulator takes any credentials: the runtime's own replace whatever the environment had.
            for key in CREDENTIAL_NAMES:
                os.environ.pop(key, None)
            os.environ.update(local_credentials())
        os.environ.setdefault("AWS_DEFAULT_REGION", cfg.region)
        os.environ.setdefault("AWS_REGION", cfg.region)
        if cfg.endpoint is None and not cfg.real_aws:
            self.moto = start_moto(access_key_id=os.environ["AWS_ACCESS_KEY_ID"])
            log(f"moto server on {self.moto.endpoint}")
        secret_values = {key: os.environ.get(key, "") for key in SECRET_KEYS}
        secret_values["API_TOKEN"] = self.api_token
        self.provisioned = provision(
            endpoint=self.endpoint,
            prefix=cfg.prefix,
            region=cfg.region,
            parameters=parameters_from_env(),
            queue_visibility_timeout=cfg.queue_visibility_timeout,
            secret_values=secret_values,
        )
        self._configure_environment()
        if cfg.persist and self.moto is not None:
            self.state = StateFile(cfg.data_dir / "state.json.gz", self.provisioned, self.endpoint, cfg.region)
            restored = self.state.restore()
            if restored:
                log(f"restored {restored} items from {self.state.path}")
                requeued = requeue_unfinished()
                if requeued:
                    log(f"re-enqueued {requeued} unfinished tasks")
            self.state.start_autosave(cfg.autosave_seconds)
        self._start_gateway()
        self._start_event_sources()
        self._write_runtime_file()

    @property
    def runtime_file(self) -> Path:
        return self.config.data_dir / "runtime.json"

    def _write_runtime_file(self) -> None:
        """Where this machine's resources are, for `make db-shell` and other tools while it runs."""
        keys = [k for k in os.environ if k.endswith(("_TABLE", "_QUEUE_URL", "_DLQ_URL", "_BUCKET"))]
        info = {
            "pid": os.getpid(),
            "port": self.config.port,
            "endpoint": self.endpoint,
            "env": {k: os.environ[k] for k in keys},
        }
        if not self.config.real_aws:
            # What tools attached to this run (db-shell, tests) sign with; never real AWS credentials.
            info["credentials"] = {k: os.environ[k] for k in CREDENTIAL_NAMES if os.environ.get(k)}
        private_folder(self.config.data_dir)
        fd = os.open(self.runtime_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(info, indent=2))

    def _configure_environment(self) -> None:
        assert self.provisioned
        cfg = self.config
        env = stack_environment(self.provisioned)
        env.update(
            {
                "API_TOKEN": self.api_token,
                "WEBSOCKET_MANAGEMENT_URL": f"http://127.0.0.1:{cfg.port}",
                "WEBSOCKET_URL": self.ws_url,
                "DASHBOARD_URL": self.base_url,
                "FARGATE_MODE": "local",
            }
        )
        if self.endpoint:
            env["AWS_ENDPOINT_URL"] = self.endpoint
        for key, value in env.items():
            if key in USER_SETTINGS and os.environ.get(key):
                continue  # the user's setting wins over the template's default
            os.environ[key] = value
        from agent_machine import aws
        from agent_machine import secrets as app_secrets
        from agent_machine.settings import get_settings

        get_settings.cache_clear()
        aws.reset_clients()
        app_secrets.clear_cache()

    def _start_gateway(self) -> None:
        assert self.provisioned
        template = self.provisioned.template
        routes: list[RouteTarget] = []
        ws_handler = None
        max_workers = 32
        for spec in functions(template):
            for route in spec.http_routes:
                routes.append(RouteTarget(route, spec.logical_id, spec.handler, spec.timeout))
        for resource in template.get("Resources", {}).values():
            if resource.get("Type") == "AWS::ApiGatewayV2::Integration":
                uri = resource.get("Properties", {}).get("IntegrationUri")
                target = _function_of_integration(uri)
                if target:
                    fn = template["Resources"][target]["Properties"]
                    ws_handler = fn.get("Handler")
        self.gateway = Gateway(
            routes=routes,
            authorizer=authorizer_handler(template),
            websocket_handler=ws_handler,
            static_dir=self.config.static_dir,
            invoker=Invoker(max_workers, "lambda"),
            cors=http_api_cors(template, self.provisioned.resolver),
            management_secret_for=functions_secret_for(),
        )
        config = uvicorn.Config(
            self.gateway.app,
            host=self.config.host,
            port=self.config.port,
            log_level="warning",
            ws="websockets-sansio",
            http=header_timeout_protocol(self.config.header_timeout_seconds),
            lifespan="off",
            ws_max_size=1024 * 1024,
        )
        self.server = uvicorn.Server(config)
        # uvicorn only installs signal handlers on the main thread; ours are in __main__.
        self._thread = threading.Thread(target=self.server.run, name="gateway", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the gateway could not listen on port {self.config.port}")
            time.sleep(0.05)

    def _start_event_sources(self) -> None:
        assert self.provisioned
        prov = self.provisioned
        for spec in functions(prov.template):
            for source in spec.sqs_sources:
                concurrency = prov.resolver.resolve(source.maximum_concurrency) if source.maximum_concurrency else 5
                if spec.logical_id == "RunnerFunction" and os.environ.get("MAX_CONCURRENT_TASKS"):
                    concurrency = os.environ["MAX_CONCURRENT_TASKS"]
                mapping = SqsMapping(
                    function_name=spec.logical_id,
                    handler=spec.handler,
                    timeout_seconds=spec.timeout,
                    queue_url=prov.queues[source.queue_logical_id],
                    queue_arn=prov.resolver.attrs[f"{source.queue_logical_id}.Arn"],
                    batch_size=source.batch_size,
                    concurrency=max(1, int(concurrency or 1)),
                    report_batch_item_failures=source.report_batch_item_failures,
                )
                event_source = SqsEventSource(mapping, self.endpoint, self.config.region)
                event_source.start()
                self.sources.append(event_source)
                log(
                    f"{spec.logical_id} polls {source.queue_logical_id} (batch {mapping.batch_size}, "
                    f"max concurrency {mapping.concurrency})"
                )

    def stop(self) -> None:
        for source in self.sources:
            source.stopping.set()
        with contextlib.suppress(ImportError, AttributeError):
            # The runner's own clean-up: interrupt running CLIs and the local "Fargate" children.
            importlib.import_module("runner.shutdown").shutdown_all()
        for source in self.sources:
            source.stop(timeout=15)
        if self.server:
            self.server.should_exit = True
        if self._thread:
            self._thread.join(10)
        if self.state:
            self.state.stop_autosave()
            try:
                self.state.save()
                log(f"saved state to {self.state.path}")
            except Exception as exc:
                log(f"could not save state: {exc!r}")
        if self.gateway:
            self.gateway.invoker.shutdown()
        self.runtime_file.unlink(missing_ok=True)
        if self.moto:
            self.moto.stop()

    def wait(self) -> None:
        """Block until the gateway stops (it does on stop())."""
        assert self._thread
        while self._thread.is_alive():
            self._thread.join(0.5)


def _refuse_weak_secrets(api_token: str) -> None:
    """Before anything starts: the API token (given or kept in the data folder) and the webhook secrets of the
    environment must be long enough to resist guessing (the functions' settings refuse them too, later)."""
    from agent_machine.settings import STRONG_SECRETS, WeakSecret, weak_secret_problem

    values = {name: os.environ.get(name) for name in STRONG_SECRETS} | {"API_TOKEN": api_token}
    problems = [p for p in (weak_secret_problem(name, value) for name, value in values.items()) if p]
    if weak_secret_problem("API_TOKEN", api_token):
        problems.append("unset API_TOKEN (and delete the data folder's api_token file): run-local makes a strong one")
    if problems:
        raise WeakSecret("refusing to start: " + "; ".join(problems))


def _function_of_integration(uri: Any) -> str | None:
    """The function behind a WebSocket route's integration (`${WebSocketFunction.Arn}` or !GetAtt form)."""
    found = re.search(r"\$\{(\w+)\.Arn\}", str(uri))
    if found:
        return found.group(1)
    if isinstance(uri, dict) and "Fn::GetAtt" in uri:
        return str(uri["Fn::GetAtt"][0])
    return None
