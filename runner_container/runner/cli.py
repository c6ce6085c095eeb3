"""Spawning the `claude` CLI: its arguments, its environment (an allow-list), its process group.

Arguments are a list (no shell); the prompt comes last after `--`, so neither a variadic option
(`--allowedTools a b c`) nor a prompt starting with '-' can be misread. stdin is /dev/null (with a pipe the CLI
waits, then concatenates). The CLI gets its own session (process group) so a stop reaches it and everything
it started (tools, MCP servers), and its own HOME / CLAUDE_CONFIG_DIR / TMPDIR.

The environment is built from scratch: PATH, locale, the Anthropic (or Bedrock) settings, the CLI's own
tunables and what the agent needs. Nothing else of the runner's environment reaches the CLI — not its AWS
credentials or endpoint, not the API token, webhook secrets or other tokens — because everything the CLI can
read, a prompt injection can make it print.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agent_machine.models import AgentSpec

from runner import config
from runner.workspace import Workspace

# Names passed through exactly as set in the runner's environment.
PASS_NAMES = frozenset(
    {
        "PATH",
        "LANG",
        "LANGUAGE",
        "LC_ALL",
        "LC_CTYPE",
        "TZ",
        "DISABLE_AUTOUPDATER",
        "DISABLE_TELEMETRY",
        "DISABLE_ERROR_REPORTING",
        "DISABLE_BUG_COMMAND",
        "DISABLE_COST_WARNINGS",
        "DISABLE_NON_ESSENTIAL_MODEL_CALLS",
        "IS_SANDBOX",
        "API_TIMEOUT_MS",
        "BASH_DEFAULT_TIMEOUT_MS",
        "BASH_MAX_TIMEOUT_MS",
        "BASH_MAX_OUTPUT_LENGTH",
        "MCP_TIMEOUT",
        "MCP_TOOL_TIMEOUT",
        "MAX_THINKING_TOKENS",
        "MAX_MCP_OUTPUT_TOKENS",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "NODE_EXTRA_CA_CERTS",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
    }
)
# Prefixes passed through: the CLI's own settings (keys, base URL, models, Bedrock/Vertex switches, tunables).
PASS_PREFIXES = ("ANTHROPIC_", "CLAUDE_CODE_")
# Never, whatever the lists above say (defence in depth against a too-broad prefix).
NEVER = frozenset(
    {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_PROFILE",
        "API_TOKEN",
        "GITHUB_TOKEN",
        "GH_TOKEN",
        "JIRA_API_TOKEN",
        "GITHUB_WEBHOOK_SECRET",
        "JIRA_WEBHOOK_SECRET",
        "SENTRY_WEBHOOK_SECRET",
        "SECRETS_NAME",
        "TASK_ID",
    }
)
DEFAULT_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Agent Machine",
    "GIT_AUTHOR_EMAIL": "agent-machine@users.noreply.github.com",
    "GIT_COMMITTER_NAME": "Agent Machine",
    "GIT_COMMITTER_EMAIL": "agent-machine@users.noreply.github.com",
}
CREDENTIAL_NAMES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")
MCP_SERVER_NAME = "machine"
MAX_ARG_BYTES = 120 * 1024


class CliNotFound(RuntimeError):
    def __init__(self, path: str) -> None:
        super().__init__(f"claude CLI not found at {path}; {config.CLI_INSTALL_HINT}")
        self.path = path


def _forbidden(name: str) -> bool:
    return name in NEVER or name.endswith("_WEBHOOK_SECRET")


def is_true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def build_env(
    ws: Workspace,
    *,
    source: Mapping[str, str] | None = None,
    anthropic_api_key: str | None = None,
    bedrock_credentials: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The CLI's environment: the allow-list over `source` (the runner's environment) plus the task's folders."""
    src = os.environ if source is None else source
    env: dict[str, str] = {}
    for name, value in src.items():
        if _forbidden(name):
            continue
        if name in PASS_NAMES or name.startswith(PASS_PREFIXES):
            env[name] = value
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.setdefault("LANG", "C.UTF-8")
    env.setdefault("DISABLE_AUTOUPDATER", "1")
    env.setdefault("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
    for name, value in DEFAULT_GIT_IDENTITY.items():
        env.setdefault(name, value)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["HOME"] = str(ws.home)
    env["CLAUDE_CONFIG_DIR"] = str(ws.config_dir)
    env["TMPDIR"] = str(ws.tmp)
    if is_true(env.get("CLAUDE_CODE_USE_BEDROCK")):
        # Bedrock: the region, and credentials of a narrower role when one is configured — never the runner's.
        for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
            if src.get(name):
                env[name] = src[name]
        env.update(bedrock_credentials or {})
    elif anthropic_api_key and not any(env.get(k) for k in CREDENTIAL_NAMES):
        env["ANTHROPIC_API_KEY"] = anthropic_api_key
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class Invocation:
    executable: str
    args: list[str]
    env: dict[str, str]
    cwd: Path
    resume: str | None = None

    @property
    def argv(self) -> list[str]:
        return [self.executable, *self.args]

    def describe(self) -> list[str]:
        """The arguments for logs: flags only (the prompt and appended instructions are left out)."""
        shown: list[str] = []
        for arg in self.args:
            if arg == "--":
                shown.append("-- <prompt>")
                break
            shown.append(arg.split("=", 1)[0] + "=<text>" if arg.startswith("--append-system-prompt=") else arg)
        return shown


def clip_arg(text: str) -> str:
    """Linux refuses to exec with one argument over 128 KB (MAX_ARG_STRLEN): cut longer text, and say so."""
    data = text.encode()
    if len(data) <= MAX_ARG_BYTES:
        return text
    marker = f"\n\n[... cut: the text was {len(data)} bytes, more than one command-line argument can hold]"
    return data[: MAX_ARG_BYTES - len(marker.encode())].decode("utf-8", errors="ignore") + marker


def format_usd(value: float) -> str:
    """A dollar amount as the CLI parses it: plain decimals, no exponent, no trailing zeros."""
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"


def build_args(
    prompt: str,
    agent: AgentSpec,
    *,
    max_budget_usd: float,
    resume: str | None,
    append_system_prompt: str | None,
    mcp_config: Path | None,
) -> list[str]:
    args = [
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        agent.permission_mode.value,
        "--max-turns",
        str(agent.max_turns),
        "--max-budget-usd",
        format_usd(max_budget_usd),
    ]
    if agent.model:
        args += ["--model", agent.model]
    if agent.allowed_tools:
        args += ["--allowedTools", *agent.allowed_tools]
    if agent.disallowed_tools:
        args += ["--disallowedTools", *agent.disallowed_tools]
    if mcp_config is not None:
        args += ["--mcp-config", str(mcp_config), "--strict-mcp-config"]
    if resume:
        args += ["--resume", resume]
    if append_system_prompt:
        args.append(clip_arg(f"--append-system-prompt={append_system_prompt}"))
    args += ["--", clip_arg(prompt)]
    return args


def resolve_executable(path: str) -> str:
    """The CLI's absolute path (CLAUDE_CLI_PATH may be a bare name on PATH); CliNotFound when it is not there."""
    if os.sep in path:
        candidate = Path(path)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
        raise CliNotFound(path)
    found = shutil.which(path)
    if not found:
        raise CliNotFound(path)
    return found


async def spawn(inv: Invocation) -> asyncio.subprocess.Process:
    try:
        return await asyncio.create_subprocess_exec(
            inv.executable,
            *inv.args,
            cwd=str(inv.cwd),
            env=inv.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
        raise CliNotFound(inv.executable) from exc
