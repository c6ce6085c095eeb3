"""The socket bridge between one run's `machine` MCP server (runner/machine_mcp.py, started by the CLI) and its
Delegation service (runner/delegation.py).

The runner listens on a Unix socket in a private temporary folder (0700, then given to the CLI's user only); the
MCP server forwards each tool call there as one JSON line with a per-run token, and gets one JSON line back
(`{"result": ...}` or `{"error": "..."}`). Calls run in threads (the service blocks), so the run's event loop
keeps streaming output meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets as pysecrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

from agent_machine.observability import get_logger

from runner import config, sandbox
from runner.cli import MCP_SERVER_NAME
from runner.delegation import Delegation, Refused


class Bridge:
    """The Unix-socket server one run's MCP server talks to."""

    def __init__(self, delegation: Delegation) -> None:
        self.delegation = delegation
        self.token = pysecrets.token_urlsafe(32)
        self.folder = Path(tempfile.mkdtemp(prefix="amb-", dir="/tmp" if Path("/tmp").is_dir() else None))  # noqa: S108 - short path for the socket (108-byte limit); mkdtemp makes it 0700
        self.path = self.folder / "bridge.sock"
        self._server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._accept, path=str(self.path), limit=1024 * 1024)
        self.path.chmod(0o600)
        # Reachable by the CLI's user only (a root runner runs the CLI as another user: runner/sandbox.py).
        sandbox.give(self.folder)
        sandbox.give(self.path)

    def mcp_config(self) -> dict[str, Any]:
        return {
            "mcpServers": {
                MCP_SERVER_NAME: {
                    "type": "stdio",
                    "command": sandbox.python_executable(),  # one the CLI's user can run
                    "args": ["-m", "runner.machine_mcp"],
                    "env": {
                        "PYTHONPATH": str(config.code_root()),
                        "MACHINE_BRIDGE": str(self.path),
                        "MACHINE_BRIDGE_TOKEN": self.token,
                        "PYTHONDONTWRITEBYTECODE": "1",
                        # The publishing tools are listed only where the runner will carry them out.
                        "MACHINE_PUBLISH": "1" if self.delegation.publisher is not None else "0",
                    },
                }
            }
        }

    def write_mcp_config(self, folder: Path) -> Path:
        path = folder / "mcp.json"
        path.write_text(json.dumps(self.mcp_config()), encoding="utf-8")
        path.chmod(0o600)
        return path

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        current = asyncio.current_task()
        if current is not None:
            self._handlers.add(current)
        try:
            while line := await reader.readline():
                reply = await self._answer(line)
                writer.write(json.dumps(reply, default=str).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            if current is not None:
                self._handlers.discard(current)
            writer.close()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError:
            return {"error": "bad request"}
        if not isinstance(request, dict) or not hmac.compare_digest(str(request.get("token", "")), self.token):
            return {"error": "not authorised"}
        method = str(request.get("method", ""))
        raw_params = request.get("params")
        params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
        try:
            result = await asyncio.to_thread(self.delegation.call, method, params)
        except Refused as exc:
            return {"error": str(exc)}
        except Exception as exc:
            get_logger().exception("machine tool failed", extra={"tool": method})
            return {"error": f"{method} failed on the machine: {type(exc).__name__}"}
        return {"result": result}

    async def close(self) -> None:
        self.delegation.closed.set()
        if self._server is not None:
            self._server.close()
            for handler in list(self._handlers):
                handler.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        shutil.rmtree(self.folder, ignore_errors=True)
