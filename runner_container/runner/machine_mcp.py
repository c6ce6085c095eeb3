"""`python -m runner.machine_mcp`: the machine's tools for an agent, as an MCP server over stdio.

The CLI starts it from `--mcp-config` (server name "machine": tools `mcp__machine__<tool>`). It holds no AWS
credentials and imports nothing but the standard library: every tool call is forwarded over a Unix socket to
the runner that started the CLI (MACHINE_BRIDGE, authenticated by MACHINE_BRIDGE_TOKEN), which applies the
caps (depth, fan-out, budgets) and talks to the machine with its own role. See runner/delegation.py.

With MACHINE_PUBLISH=1 (an agent that may push, on a task with a repository) it also lists `push_branch` and
`open_pull_request`: the runner pushes the agent's `claude/...` branch and opens the pull request with its own
GitHub token (runner/publish.py); the agent never holds one.

MCP over stdio is JSON-RPC 2.0, one message per line: `initialize`, `notifications/initialized`, `ping`,
`tools/list`, `tools/call`. Tool calls run in threads (waiting for a child task must not block other calls).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from typing import Any

SERVER_INFO = {"name": "machine", "version": "1.0.0"}
PROTOCOL_VERSIONS = ("2025-06-18", "2025-03-26", "2024-11-05")
INSTRUCTIONS = (
    "Tools of the agent machine you run on. Delegate work as tracked tasks (create_task), then look them up "
    "(get_task) or wait for them (wait_for_task). Each task runs on its own runner with its own cost and output, "
    "linked to yours as a child."
)

_AGENT = {
    "type": "string",
    "description": "Agent to run: planning (analyse and write a plan), executor "
    "(implement an approved plan and open a pull request), or another "
    "agent from list_agents.",
}
TOOLS: list[dict[str, Any]] = [
    {
        "name": "create_task",
        "description": "Start a sub-task on the machine, run by another agent, as a child of the current task. "
        "Returns its task_id at once; use wait_for_task or get_task for the result.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "agent": _AGENT,
                "prompt": {
                    "type": "string",
                    "description": "Everything the agent needs: it sees nothing else of this conversation.",
                },
                "title": {"type": "string", "description": "Short title shown on the dashboard."},
                "with_repository": {
                    "type": "boolean",
                    "default": True,
                    "description": "Give the child this task's repository (clone, issue, PR).",
                },
                "max_budget_usd": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "description": "Spending cap of the child. It comes out of this task's cap: at most what "
                    "is left of it after the other children (running ones count for their whole cap). Without "
                    "it the child may use all that is left, so set it when starting several children.",
                },
                "plan_task_id": {
                    "type": "string",
                    "description": "For agent executor (required in practice): the id of the completed planning "
                    "task whose approved plan the executor carries out; without it, the newest completed plan "
                    "among this task's children is used, and with none the call is refused.",
                },
            },
            "required": ["agent", "prompt"],
            "additionalProperties": False,
        },
    },
    {
        "name": "get_task",
        "description": "Look up a task: status, result or plan, error, cost, and its children. Tasks of this "
        "task's own tree (the brain: any task, by its exact id).",
        "inputSchema": {
            "type": "object",
            "properties": {"task_id": {"type": "string"}},
            "required": ["task_id"],
            "additionalProperties": False,
        },
    },
    {
        "name": "wait_for_task",
        "description": "Wait until a task has finished (or the timeout passes) and return it as get_task does.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "task_id": {"type": "string"},
                "timeout_seconds": {"type": "number", "minimum": 1, "maximum": 840, "default": 600},
            },
            "required": ["task_id"],
            "additionalProperties": False,
        },
    },
    {
        "name": "list_agents",
        "description": "The agents this machine can run, with what each is for.",
        "inputSchema": {"type": "object", "properties": {}, "additionalProperties": False},
    },
    {
        "name": "machine_status",
        "description": "This task (id, depth, budget, children) and today's spending against the daily cap.",
        "inputSchema": {"type": "object", "properties": {}, "additionalProperties": False},
    },
    {
        "name": "list_tasks",
        "description": "Recent tasks on the machine, newest first: id, agent, status, title, source, cost.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "status": {
                    "type": "string",
                    "enum": ["queued", "running", "completed", "failed", "stopped", "timed_out"],
                    "description": "Only tasks with this status.",
                },
                "agent": {"type": "string", "description": "Only tasks run by this agent."},
                "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
            },
            "additionalProperties": False,
        },
    },
    {
        "name": "costs",
        "description": "Spending today and this month (UTC), in all and by agent, with the daily cap.",
        "inputSchema": {"type": "object", "properties": {}, "additionalProperties": False},
    },
]
_BRANCH = {
    "type": "string",
    "description": "The branch to push, named claude/<issue>-<slug>. Default: the branch checked out in the "
    "repository (your current branch).",
}
PUBLISH_TOOLS: list[dict[str, Any]] = [
    {
        "name": "push_branch",
        "description": "Push your committed branch of this task's repository to GitHub. The machine pushes it "
        "for you (you have no GitHub credentials; `git push` does not work): only branches named claude/..., "
        "never the default branch, never forced, only to the repository you were given (origin must not be "
        "changed). Commit first. Pushing again after new commits updates the branch (and its pull request).",
        "inputSchema": {
            "type": "object",
            "properties": {"branch": _BRANCH},
            "additionalProperties": False,
        },
    },
    {
        "name": "open_pull_request",
        "description": "Push your committed claude/... branch and open a pull request for it on this task's "
        "repository (or return the one already open for that branch). Returns its url: put it in your answer.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "title": {"type": "string", "maxLength": 256, "description": "Title: the commit's summary line."},
                "body": {
                    "type": "string",
                    "maxLength": 65536,
                    "description": "Markdown body: what changed, how it was tested, `Fixes #<issue>`.",
                },
                "branch": _BRANCH,
                "base": {
                    "type": "string",
                    "description": "The branch to merge into. Default: the repository's default branch.",
                },
                "draft": {
                    "type": "boolean",
                    "default": False,
                    "description": "Open it as a draft (e.g. when tests still fail).",
                },
            },
            "required": ["title", "body"],
            "additionalProperties": False,
        },
    },
]
TOOL_NAMES = frozenset(t["name"] for t in TOOLS)
PUBLISH_TOOL_NAMES = frozenset(t["name"] for t in PUBLISH_TOOLS)


class BridgeError(RuntimeError):
    pass


def call_bridge(method: str, params: dict[str, Any], *, path: str, token: str, timeout: float = 900.0) -> Any:
    """One request to the runner's bridge: a JSON line out, a JSON line back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as exc:
            raise BridgeError(f"the runner is not reachable ({exc})") from exc
        sock.sendall(json.dumps({"token": token, "method": method, "params": params}).encode() + b"\n")
        buf = bytearray()
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    if not buf:
        raise BridgeError("the runner closed the connection")
    reply = json.loads(buf)
    if not isinstance(reply, dict):
        raise BridgeError("bad reply from the runner")
    if reply.get("error"):
        raise BridgeError(str(reply["error"]))
    return reply.get("result")


class Server:
    def __init__(self, out: Any, bridge_path: str, token: str, *, publish: bool = False) -> None:
        self.out = out
        self.bridge_path = bridge_path
        self.token = token
        self.tools = TOOLS + (PUBLISH_TOOLS if publish else [])
        self.tool_names = TOOL_NAMES | (PUBLISH_TOOL_NAMES if publish else frozenset())
        self._write_lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")) + "\n"
        with self._write_lock:
            self.out.write(data)
            self.out.flush()

    def reply(self, msg_id: Any, result: Any) -> None:
        self.send({"jsonrpc": "2.0", "id": msg_id, "result": result})

    def error(self, msg_id: Any, code: int, message: str) -> None:
        self.send({"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}})

    def handle(self, message: Any) -> threading.Thread | None:
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return None
        method = message.get("method")
        msg_id = message.get("id")
        if method is None or msg_id is None:  # a response or a notification: nothing to answer
            return None
        params = message.get("params") or {}
        if method == "initialize":
            asked = params.get("protocolVersion") if isinstance(params, dict) else None
            version = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0]
            self.reply(
                msg_id,
                {
                    "protocolVersion": version,
                    "capabilities": {"tools": {"listChanged": False}},
                    "serverInfo": SERVER_INFO,
                    "instructions": INSTRUCTIONS,
                },
            )
        elif method == "ping":
            self.reply(msg_id, {})
        elif method == "tools/list":
            self.reply(msg_id, {"tools": self.tools})
        elif method == "tools/call":
            thread = threading.Thread(target=self.call_tool, args=(msg_id, params), daemon=True)
            thread.start()
            return thread
        else:
            self.error(msg_id, -32601, f"method not found: {method}")
        return None

    def call_tool(self, msg_id: Any, params: Any) -> None:
        name = params.get("name") if isinstance(params, dict) else None
        arguments = (params.get("arguments") or {}) if isinstance(params, dict) else {}
        if name not in self.tool_names:
            self.error(msg_id, -32602, f"unknown tool: {name}")
            return
        try:
            result = call_bridge(
                str(name), arguments if isinstance(arguments, dict) else {}, path=self.bridge_path, token=self.token
            )
            text, is_error = json.dumps(result, indent=2, ensure_ascii=False), False
        except (BridgeError, OSError, ValueError) as exc:
            text, is_error = f"{name} failed: {exc}", True
        self.reply(msg_id, {"content": [{"type": "text", "text": text}], "isError": is_error})

    def serve(self, stdin: Any) -> None:
        threads: list[threading.Thread] = []
        for line in stdin:
            line = line.strip()
            if not line:
                continue
            try:
                message = json.loads(line)
            except ValueError:
                self.error(None, -32700, "parse error")
                continue
            thread = self.handle(message)
            if thread is not None:
                threads.append(thread)
        for thread in threads:
            thread.join(timeout=5)


def main() -> int:
    path = os.environ.get("MACHINE_BRIDGE", "")
    token = os.environ.get("MACHINE_BRIDGE_TOKEN", "")
    if not path or not token:
        sys.stderr.write("machine_mcp: MACHINE_BRIDGE and MACHINE_BRIDGE_TOKEN must be set\n")
        return 2
    try:
        Server(sys.stdout, path, token, publish=os.environ.get("MACHINE_PUBLISH") == "1").serve(sys.stdin)
    except KeyboardInterrupt:  # the CLI's process group got SIGINT (a stop): just end
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
