"""The local machine: emulator + resources from template.yaml + each function in its own execution environments
(workers.py) + the gateway + the SQS event sources + the local ECS (ecs.py), as one object that starts and
stops cleanly (used by `python -m local_runtime`, `make run-local` and the tests).

One asyncio loop, in a thread of its own, runs the gateway (uvicorn), the worker pools and the ECS agent, so an
HTTP request reaches its function's worker without a thread hop. Stopping (Ctrl-C, SIGTERM): the event sources
stop receiving, every busy worker and ECS task gets SIGTERM (the runner books its run as stopped, with its cost)
and up to `stop_grace_seconds` to end, then the gateway stops, then whatever is left is killed; the runtime is
a child subreaper, so nothing its workers or tasks started outlives it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import json
import os
import re
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import boto3
import uvicorn
from agent_machine import aws
from agent_machine import secrets as app_secrets
from agent_machine.settings import STRONG_SECRETS, WeakSecret, get_settings, weak_secret_problem

from local_runtime import sigv4
from local_runtime.ecs import EcsAgent, keep_tasks_running
from local_runtime.emulator import MotoServer, free_port, start_moto
from local_runtime.function_env import AWS_CONFIG_NAMES, LocalEnvironment, lambda_environment
from local_runtime.gateway import DEFAULT_HEADER_TIMEOUT_SECONDS, Gateway, RouteTarget, header_timeout_protocol
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
from local_runtime.template import (
    ROOT,
    TEMPLATE_PATH,
    FunctionSpec,
    authorizer_function,
    functions,
    http_api_cors,
    task_definitions,
)
from local_runtime.workers import DEFAULT_CONCURRENCY, STOP_GRACE_SECONDS, FunctionConfig, Processes, WorkerPools

_new_event_loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
with contextlib.suppress(ImportError):  # uvicorn's optional fast loop (its wheels are not built for every platform)
    import uvloop

    _new_event_loop = uvloop.new_event_loop

T = TypeVar("T")
_PR_SET_DUMPABLE = 4
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
    template_path: Path = TEMPLATE_PATH  # LOCAL_TEMPLATE: another template (tests point functions at probes)
    # How long running invocations and ECS tasks get to end after SIGTERM when the runtime stops.
    stop_grace_seconds: float = STOP_GRACE_SECONDS
    # LOCAL_SCHEDULE_SECONDS: every EventBridge schedule fires this often instead of at its rate (tests sweep every
    # second or two; EventBridge's shortest rate is a minute).
    schedule_seconds: float | None = field(
        default_factory=lambda: (
            float(os.environ["LOCAL_SCHEDULE_SECONDS"]) if os.environ.get("LOCAL_SCHEDULE_SECONDS") else None
        )
    )


@dataclass
class LocalMachine:
    config: LocalConfig
    api_token: str = ""
    moto: MotoServer | None = None
    provisioned: Provisioned | None = None
    sources: list[SqsEventSource] = field(default_factory=list)
    schedules: list[concurrent.futures.Future[None]] = field(default_factory=list)
    state: StateFile | None = None
    server: uvicorn.Server | None = None
    gateway: Gateway | None = None
    pools: WorkerPools | None = None
    ecs_agents: list[EcsAgent] = field(default_factory=list)
    processes: Processes = field(default_factory=Processes)
    loop: asyncio.AbstractEventLoop | None = None
    _loop_thread: threading.Thread | None = None
    _serving: concurrent.futures.Future[None] | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)

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
        user_env = dict(os.environ)  # what the user configured: the functions' pass-throughs come from it
        private_folder(cfg.data_dir)
        protect_secret_file(cfg.env_file)
        self.api_token = self._api_token()
        _refuse_weak_secrets(self.api_token)
        if cfg.port == 0:
            cfg.port = free_port()
        _not_dumpable()
        if not cfg.real_aws:
            # The emulator takes any credentials: the runtime's own replace whatever the environment had.
            for key in CREDENTIAL_NAMES:
                os.environ.pop(key, None)
            os.environ.update(local_credentials())
        os.environ.setdefault("AWS_DEFAULT_REGION", cfg.region)
        os.environ.setdefault("AWS_REGION", cfg.region)
        self.processes.adopt_orphans()
        if cfg.endpoint is None and not cfg.real_aws:
            self.moto = start_moto(access_key_id=os.environ["AWS_ACCESS_KEY_ID"])
            self.processes.add(self.moto.process)
            log(f"moto server on {self.moto.endpoint}")
        self.provisioned = self._provision()
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
        self._start_loop()
        local = self._local_environment(user_env)
        self._start_pools(local)
        self._start_ecs(local)
        self._start_gateway()
        self._start_event_sources()
        self._start_schedules()
        self._write_runtime_file()

    def _provision(self) -> Provisioned:
        cfg = self.config
        secret_values = {key: os.environ.get(key, "") for key in SECRET_KEYS}
        secret_values["API_TOKEN"] = self.api_token

        def run(ecs: bool) -> Provisioned:
            return provision(
                endpoint=self.endpoint,
                prefix=cfg.prefix,
                region=cfg.region,
                parameters=parameters_from_env(),
                queue_visibility_timeout=cfg.queue_visibility_timeout,
                secret_values=secret_values,
                template_path=cfg.template_path,
                ecs=ecs,
            )

        if cfg.real_aws:
            return run(False)  # no local Fargate against real AWS: long runs stay on the (local) Lambda
        if self.moto is not None:
            return run(True)
        try:
            return run(True)
        except Exception as exc:  # an emulator without ECS (LocalStack's free edition)
            log(f"no ECS in {self.endpoint} ({exc}): long runs stay on Lambda")
            return run(False)

    @property
    def runtime_file(self) -> Path:
        return self.config.data_dir / "runtime.json"

    def _write_runtime_file(self) -> None:
        """Where this machine's resources are, for `make db-shell` and other tools while it runs."""
        keys = [k for k in os.environ if k.endswith(("_TABLE", "_QUEUE_URL", "_DLQ_URL", "_BUCKET"))]
        info: dict[str, Any] = {
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
        """The runtime's own environment, for its own tools (re-enqueueing after a restore, runtime.json): the
        stack's resources and the emulator. The functions never see it (function_env.py)."""
        assert self.provisioned
        env = stack_environment(self.provisioned)
        if self.endpoint:
            env["AWS_ENDPOINT_URL"] = self.endpoint
        os.environ.update(env)

        get_settings.cache_clear()
        aws.reset_clients()
        app_secrets.clear_cache()

    def _local_environment(self, user_env: dict[str, str]) -> LocalEnvironment:
        cfg = self.config
        if cfg.real_aws:
            credentials = {k: user_env[k] for k in AWS_CONFIG_NAMES if user_env.get(k)}
        else:
            credentials = {k: os.environ[k] for k in CREDENTIAL_NAMES if os.environ.get(k)}
        return LocalEnvironment(
            user_env=user_env,
            region=cfg.region,
            endpoint=self.endpoint,
            credentials=credentials,
            urls={
                "WEBSOCKET_URL": self.ws_url,
                "DASHBOARD_URL": self.base_url,
                "WEBSOCKET_MANAGEMENT_URL": f"http://127.0.0.1:{cfg.port}",
            },
        )

    # --- the event loop -----------------------------------------------------------------------------------------

    def _start_loop(self) -> None:
        loop = _new_event_loop()
        self.loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_forever()

        # Workers are started from this thread (their parent-death signal follows it): it lives until stop().
        self._loop_thread = threading.Thread(target=run, name="runtime-loop", daemon=True)
        self._loop_thread.start()

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    # --- functions ----------------------------------------------------------------------------------------------

    def _deployed(self) -> list[FunctionSpec]:
        assert self.provisioned
        resolver = self.provisioned.resolver
        return [s for s in functions(self.provisioned.template) if not s.condition or resolver.condition(s.condition)]

    def _concurrency(self, spec: FunctionSpec) -> int:
        """Reserved concurrency, else the SQS mapping's MaximumConcurrency (its pollers), else a local default."""
        assert self.provisioned
        resolver = self.provisioned.resolver
        for value in (spec.reserved_concurrency, *(s.maximum_concurrency for s in spec.sqs_sources)):
            if value is not None:
                resolved = resolver.resolve(value)
                if resolved is not None and str(resolved).isdigit():
                    return max(1, int(resolved))
        return 5 if spec.sqs_sources else DEFAULT_CONCURRENCY

    def _start_pools(self, local: LocalEnvironment) -> None:
        assert self.provisioned and self.loop
        self.pools = WorkerPools(self.loop, self.processes)
        for spec in self._deployed():
            self.pools.add(
                FunctionConfig(
                    name=spec.logical_id,
                    handler=spec.handler,
                    timeout=float(spec.timeout),
                    memory_mb=spec.memory_mb,
                    concurrency=self._concurrency(spec),
                    environment=lambda_environment(spec, self.provisioned.resolver, local),
                )
            )
        self.pools.start_housekeeping()

    def _start_ecs(self, local: LocalEnvironment) -> None:
        assert self.provisioned
        prov = self.provisioned
        if not prov.clusters or not prov.task_definitions:
            return
        if self.moto is not None:
            keep_tasks_running(self.moto.endpoint, os.environ["AWS_ACCESS_KEY_ID"])
        names: dict[str, list[str]] = {}
        for spec in task_definitions(prov.template):
            for container in spec.properties.get("ContainerDefinitions") or []:
                names[str(container.get("Name"))] = [str(e.get("Name")) for e in container.get("Environment") or []]
        for cluster in prov.clusters.values():
            agent = EcsAgent(
                cluster=cluster,
                endpoint=self.endpoint,
                region=self.config.region,
                local=local,
                template_names=names,
                code_dirs=[str(ROOT / "runner_container"), str(ROOT / "layers" / "core" / "python")],
                processes=self.processes,
            )
            self._call(agent.start())
            self.ecs_agents.append(agent)
            log(f"ECS cluster {cluster}: tasks run as local processes (task metadata on {agent.metadata_url})")

    def _start_gateway(self) -> None:
        assert self.provisioned and self.pools and self.loop
        template = self.provisioned.template
        routes: list[RouteTarget] = []
        specs = {spec.logical_id: spec for spec in self._deployed()}
        for spec in specs.values():
            for route in spec.http_routes:
                routes.append(RouteTarget(route, spec.logical_id, spec.handler, spec.timeout))
        ws_function = None
        for resource in template.get("Resources", {}).values():
            if resource.get("Type") == "AWS::ApiGatewayV2::Integration":
                target = _function_of_integration(resource.get("Properties", {}).get("IntegrationUri"))
                if target in specs:
                    ws_function = target
        auth_function = authorizer_function(template)
        auth = specs.get(auth_function or "")
        ws = specs.get(ws_function or "")
        self.gateway = Gateway(
            routes=routes,
            authorizer=auth.handler if auth else None,
            websocket_handler=ws.handler if ws else None,
            static_dir=self.config.static_dir,
            invoker=self.pools,
            cors=http_api_cors(template, self.provisioned.resolver),
            management_secret_for=functions_secret_for(),
            authorizer_function=auth.logical_id if auth else "AuthorizerFunction",
            authorizer_timeout=auth.timeout if auth else 10,
            websocket_function=ws.logical_id if ws else "WebSocketFunction",
            websocket_timeout=ws.timeout if ws else 29,
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
        # On the runtime's loop (uvicorn installs signal handlers only on the main thread; ours are in __main__).
        self._serving = asyncio.run_coroutine_threadsafe(self.server.serve(), self.loop)
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or self._serving.done():
                raise RuntimeError(f"the gateway could not listen on port {self.config.port}")
            time.sleep(0.05)

    def _start_event_sources(self) -> None:
        assert self.provisioned and self.pools
        prov = self.provisioned
        pools = self.pools
        for spec in self._deployed():
            for source in spec.sqs_sources:
                concurrency = prov.resolver.resolve(source.maximum_concurrency) if source.maximum_concurrency else 5
                mapping = SqsMapping(
                    function_name=spec.logical_id,
                    handler=spec.handler,
                    timeout_seconds=spec.timeout,
                    queue_url=prov.queues[source.queue_logical_id],
                    queue_arn=prov.resolver.attrs[f"{source.queue_logical_id}.Arn"],
                    batch_size=source.batch_size,
                    concurrency=min(max(1, int(concurrency or 1)), pools.pools[spec.logical_id].config.concurrency),
                    report_batch_item_failures=source.report_batch_item_failures,
                )
                event_source = SqsEventSource(mapping, self.endpoint, self.config.region, invoke=_invoker(pools, spec))
                event_source.start()
                self.sources.append(event_source)
                log(
                    f"{spec.logical_id} polls {source.queue_logical_id} (batch {mapping.batch_size}, "
                    f"max concurrency {mapping.concurrency})"
                )

    def _start_schedules(self) -> None:
        """Each Schedule event invokes its function at its rate (one invocation at a time: a slow one delays the
        next instead of piling up) with the event EventBridge sends."""
        assert self.pools and self.loop
        for spec in self._deployed():
            for schedule in spec.schedules:
                period = self.config.schedule_seconds or schedule.rate_seconds
                if not schedule.enabled or period is None:
                    log(f"{spec.logical_id}: schedule {schedule.name} ({schedule.expression}) does not run locally")
                    continue
                runner = _run_schedule(self.pools, spec.logical_id, schedule.name, period, self.config.region)
                self.schedules.append(asyncio.run_coroutine_threadsafe(runner, self.loop))
                log(f"{spec.logical_id} runs every {period:g} s ({schedule.name}: {schedule.expression})")

    # --- stopping -----------------------------------------------------------------------------------------------

    async def _interrupt_functions(self, grace: float) -> None:
        """SIGTERM to every busy worker and ECS task; wait for them (at most `grace`)."""
        waits: list[Coroutine[Any, Any, None]] = [agent.stop(grace) for agent in self.ecs_agents]
        if self.pools is not None:
            waits.append(self.pools.interrupt(grace))
        await asyncio.gather(*waits, return_exceptions=True)

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        for source in self.sources:
            source.stopping.set()
        for schedule in self.schedules:
            schedule.cancel()
        grace = self.config.stop_grace_seconds
        loop_alive = self.loop is not None and self._loop_thread is not None and self._loop_thread.is_alive()
        if loop_alive:
            _log_failure("stopping the functions", lambda: self._call(self._interrupt_functions(grace), grace + 30))
        for source in self.sources:
            source.stop(timeout=15)
        if self.server and self._serving:
            self.server.should_exit = True
            try:
                self._serving.result(10)
            except concurrent.futures.TimeoutError:
                self.server.force_exit = True
                with contextlib.suppress(Exception):
                    self._serving.result(5)
            except Exception as exc:
                log(f"the gateway stopped with {exc!r}")
        if loop_alive and self.pools is not None:
            _log_failure("stopping the workers", lambda: self._call(self.pools.close(5.0), 30))  # type: ignore[union-attr]
        self.processes.kill_orphans()
        if self.state:
            self.state.stop_autosave()
            try:
                self.state.save()
                log(f"saved state to {self.state.path}")
            except Exception as exc:
                log(f"could not save state: {exc!r}")
        self.runtime_file.unlink(missing_ok=True)
        if self.moto:
            self.moto.stop()
            self.processes.discard(self.moto.process)
        self.processes.kill_orphans()
        self.processes.stop()
        if self.loop is not None and self._loop_thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._loop_thread.join(5)

    def wait(self) -> None:
        """Block until the gateway stops (it does on stop())."""
        assert self._serving
        while not self._serving.done():
            with contextlib.suppress(concurrent.futures.TimeoutError):
                self._serving.result(0.5)


def scheduled_event(rule_arn: str, region: str) -> dict[str, Any]:
    """What EventBridge sends a function on a schedule."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }


async def _run_schedule(pools: WorkerPools, function_name: str, name: str, period: float, region: str) -> None:
    rule_arn = f"arn:aws:events:{region}:123456789012:rule/{function_name}-{name}"
    while True:
        await asyncio.sleep(period)
        try:
            await pools.pools[function_name].invoke(scheduled_event(rule_arn, region))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # (EventBridge retries; the next period does the same here)
            log(f"{function_name} ({name}) failed: {exc!r}")


def _invoker(pools: WorkerPools, spec: FunctionSpec) -> Callable[[dict[str, Any], Any], Any]:
    name = spec.logical_id
    return lambda event, _context: pools.invoke_blocking(name, event)


def _log_failure(what: str, action: Callable[[], Any]) -> None:
    try:
        action()
    except Exception as exc:
        log(f"{what} failed: {exc!r}")


def _not_dumpable() -> None:
    """The runtime holds the run's credentials and the user's secrets: a CLI running as the same user may not read
    its memory or /proc/<pid>/environ (its workers do the same: worker_main)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def _refuse_weak_secrets(api_token: str) -> None:
    """Before anything starts: the API token (given or kept in the data folder) and the webhook secrets of the
    environment must be long enough to resist guessing (the functions' settings refuse them too, later)."""
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
