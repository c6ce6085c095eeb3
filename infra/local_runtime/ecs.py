"""The local "Fargate": ECS tasks that moto's ECS says are RUNNING, run as processes of this computer.

The runner starts a long run as it does on AWS, `ecs.run_task` on the template's task definition and cluster
(moto has no event stream, so `EcsAgent` polls `ListTasks(desiredStatus=RUNNING)` every POLL_SECONDS). For each
new task it starts the container's command (`python -m runner.fargate_main`: `python` is this interpreter) in a
session of its own, with the registered container's environment, the run_task container overrides (TASK_ID) and
the runtime's local layers (function_env.task_environment), and serves the task metadata endpoint v4
(ECS_CONTAINER_METADATA_URI_V4) the runner reads its task ARN from. `ecs.stop_task` sets the task's desired
status to STOPPED: the process gets SIGTERM, then SIGKILL after the container's stopTimeout. When the process
exits, the task is stopped in moto ("Essential container in task exited") so DescribeTasks shows it STOPPED.
Output lines go to the runtime's stdout as `[ecs:<task id 8>:<pid>] ...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3

from local_runtime.function_env import LocalEnvironment, task_environment
from local_runtime.logs import log
from local_runtime.workers import LogSink, Processes, kill_group, spawn, stdout_sink, wait_exit

POLL_SECONDS = 0.5  # each poll is an AWS call in a thread that competes for the GIL with the gateway
EXITED_REASON = "Essential container in task exited"
RESTARTED_REASON = "the local runtime restarted: the task's process was gone"
PYTHON_NAMES = ("python", "python3", "python3.11")


def keep_tasks_running(endpoint: str, access_key_id: str) -> None:
    """moto moves a task's lastStatus one step towards STOPPED each time it is described; on ECS a task stays
    RUNNING until it stops. Tell moto's state manager to leave ECS tasks alone (StopTask still stops them)."""
    body = json.dumps({"model_name": "ecs::task", "transition": {"progression": "manual", "times": 10**9}}).encode()
    request = urllib.request.Request(  # noqa: S310 - the runtime's own loopback emulator
        f"{endpoint}/moto-api/state-manager/set-transition",
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            # moto_main answers only the runtime's access key (it compares the key id, not the signature).
            "Authorization": f"AWS4-HMAC-SHA256 Credential={access_key_id}/19700101/us-east-1/moto/aws4_request",
        },
    )
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310
        pass


@dataclass
class LocalTask:
    arn: str
    task_id: str
    cluster_arn: str
    task_definition: dict[str, Any]
    container: str
    proc: subprocess.Popen[bytes]
    stop_timeout: float
    started_at: float
    kill_at: float | None = None  # set once a stop was asked for

    def metadata(self) -> dict[str, Any]:
        definition = self.task_definition
        return {
            "Cluster": self.cluster_arn,
            "TaskARN": self.arn,
            "Family": definition.get("family"),
            "Revision": str(definition.get("revision", "")),
            "DesiredStatus": "STOPPED" if self.kill_at else "RUNNING",
            "KnownStatus": "RUNNING" if self.proc.poll() is None else "STOPPED",
            "LaunchType": "FARGATE",
            "AvailabilityZone": "us-east-1a",
            "Containers": [self.container_metadata()],
        }

    def container_metadata(self) -> dict[str, Any]:
        return {
            "DockerId": self.task_id,
            "Name": self.container,
            "DockerName": self.container,
            "Image": "local",
            "DesiredStatus": "STOPPED" if self.kill_at else "RUNNING",
            "KnownStatus": "RUNNING" if self.proc.poll() is None else "STOPPED",
            "Labels": {"com.amazonaws.ecs.task-arn": self.arn, "com.amazonaws.ecs.container-name": self.container},
        }


class _Metadata(ThreadingHTTPServer):
    daemon_threads = True
    tasks: dict[str, LocalTask]


class _MetadataHandler(BaseHTTPRequestHandler):
    server: _Metadata

    def do_GET(self) -> None:
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        task = self.server.tasks.get(parts[1]) if len(parts) >= 2 and parts[0] == "v4" else None
        if task is None or len(parts) > 3 or (len(parts) == 3 and parts[2] != "task"):
            self.send_error(404)
            return
        body = json.dumps(task.metadata() if len(parts) == 3 else task.container_metadata()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class EcsAgent:
    """Runs the RUNNING tasks of one cluster as local processes (see the module docstring)."""

    def __init__(
        self,
        *,
        cluster: str,
        endpoint: str | None,
        region: str,
        local: LocalEnvironment,
        template_names: Mapping[str, Iterable[str]],
        code_dirs: Iterable[str],
        processes: Processes,
        sink: LogSink = stdout_sink,
        cwd: str | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.cluster = cluster
        self.ecs: Any = boto3.client("ecs", endpoint_url=endpoint, region_name=region)
        self.local = local
        self.template_names = {name: set(names) for name, names in template_names.items()}
        self.code_dirs = list(code_dirs)
        self.processes = processes
        self.sink = sink
        self.cwd = cwd
        self.poll_seconds = poll_seconds
        self.tasks: dict[str, LocalTask] = {}  # by task id
        self.launched = 0
        self._seen: set[str] = set()
        self._definitions: dict[str, dict[str, Any]] = {}
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._metadata = _Metadata(("127.0.0.1", 0), _MetadataHandler)
        self._metadata.tasks = self.tasks
        self._metadata_thread = threading.Thread(
            target=self._metadata.serve_forever, name="ecs-metadata", kwargs={"poll_interval": 0.5}, daemon=True
        )

    @property
    def metadata_url(self) -> str:
        return f"http://127.0.0.1:{self._metadata.server_address[1]}"

    async def start(self) -> None:
        self._metadata_thread.start()
        loop = asyncio.get_running_loop()
        # Tasks RUNNING before this runtime started (a kept emulator) have no process any more: stop them.
        left, _ = await loop.run_in_executor(None, self._poll)
        for arn in left:
            self._seen.add(arn)
            await loop.run_in_executor(None, self._stop_in_ecs, arn, RESTARTED_REASON)
        self._loop_task = loop.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                running, new = await loop.run_in_executor(None, self._poll)
                for task, definition in new:
                    if not self._stopping:
                        await self._launch(task, definition)
                await self._follow(running)
            except Exception as exc:  # the emulator going away at shutdown, or a blip
                if self._stopping:
                    return
                log(f"ecs: {exc!r}")
            await asyncio.sleep(self.poll_seconds)

    def _poll(self) -> tuple[set[str], list[tuple[dict[str, Any], dict[str, Any]]]]:
        """(ARNs whose desired status is RUNNING, [(task, its definition)] of those not seen before)."""
        running: set[str] = set()
        for page in self.ecs.get_paginator("list_tasks").paginate(cluster=self.cluster, desiredStatus="RUNNING"):
            running.update(page.get("taskArns", []))
        new = sorted(running - self._seen)
        found: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for start in range(0, len(new), 100):
            described = self.ecs.describe_tasks(cluster=self.cluster, tasks=new[start : start + 100])
            for task in described.get("tasks", []):
                arn = task["taskDefinitionArn"]
                if arn not in self._definitions:
                    self._definitions[arn] = self.ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
                found.append((task, self._definitions[arn]))
        return running, found

    async def _launch(self, task: dict[str, Any], definition: dict[str, Any]) -> None:
        arn = str(task["taskArn"])
        self._seen.add(arn)
        task_id = arn.rsplit("/", 1)[-1]
        containers = definition.get("containerDefinitions") or []
        container = next((c for c in containers if c.get("essential", True)), containers[0] if containers else None)
        if container is None:
            return
        name = str(container.get("name", ""))
        override: dict[str, Any] = next(
            (o for o in (task.get("overrides") or {}).get("containerOverrides", []) if o.get("name") == name), {}
        )
        command = [*(container.get("entryPoint") or []), *(override.get("command") or container.get("command") or [])]
        argv = [sys.executable if part in PYTHON_NAMES else str(part) for part in command]
        if not argv:
            log(f"ecs: task {task_id} has no command: not started")
            return
        env = task_environment(
            {e["name"]: e["value"] for e in container.get("environment", [])},
            {e["name"]: e["value"] for e in override.get("environment", [])},
            self.local,
            template_names=self.template_names.get(name, ()),
            code_dirs=self.code_dirs,
            extra={
                "ECS_CONTAINER_METADATA_URI_V4": f"{self.metadata_url}/v4/{task_id}",
                "AWS_EXECUTION_ENV": "AWS_ECS_FARGATE",
            },
        )
        proc = await spawn(
            [sys.executable, "-m", "local_runtime.worker_main", "--exec", str(self.processes.pid), "--", *argv],
            env=env,
            label=f"ecs:{task_id[:8]}",
            processes=self.processes,
            sink=self.sink,
            cwd=self.cwd,
        )
        self.tasks[task_id] = LocalTask(
            arn,
            task_id,
            str(task.get("clusterArn", "")),
            definition,
            name,
            proc,
            float(container.get("stopTimeout") or 30),
            time.monotonic(),
        )
        self.launched += 1
        log(f"ecs: task {task_id} started ({' '.join(command)}), pid {proc.pid}")

    async def _follow(self, running: set[str]) -> None:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        for task_id, task in list(self.tasks.items()):
            code = task.proc.poll()
            if code is not None:
                del self.tasks[task_id]
                self.processes.discard(task.proc)
                self.processes.kill_orphans()
                log(f"ecs: task {task_id} exited ({code})")
                if task.arn in running:
                    await loop.run_in_executor(None, self._stop_in_ecs, task.arn, EXITED_REASON)
            elif task.kill_at is None and task.arn not in running:
                log(f"ecs: task {task_id} was stopped: SIGTERM, SIGKILL in {task.stop_timeout:.0f} s")
                task.kill_at = now + task.stop_timeout
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    task.proc.send_signal(signal.SIGTERM)
            elif task.kill_at is not None and now >= task.kill_at:
                kill_group(task.proc)

    def _stop_in_ecs(self, arn: str, reason: str) -> None:
        try:
            self.ecs.stop_task(cluster=self.cluster, task=arn, reason=reason)
        except Exception as exc:
            log(f"ecs: could not record the end of {arn}: {exc!r}")

    async def stop(self, grace: float) -> None:
        """No new tasks; SIGTERM the running ones (each books its run as stopped), SIGKILL after `grace`."""
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop_task
        live = list(self.tasks.values())
        for task in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                task.proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + grace
        loop = asyncio.get_running_loop()
        for task in live:
            if await wait_exit(task.proc, max(0.0, end - time.monotonic())) is None:
                log(f"ecs: task {task.task_id} did not stop in time: SIGKILL")
                kill_group(task.proc)
                await wait_exit(task.proc, 5.0)
            self.processes.discard(task.proc)
            self.tasks.pop(task.task_id, None)
            await loop.run_in_executor(None, self._stop_in_ecs, task.arn, EXITED_REASON)
        self._metadata.shutdown()
        self._metadata.server_close()
