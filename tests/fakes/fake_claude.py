#!/usr/bin/env python3
"""A protocol-faithful fake of Anthropic's ``claude`` CLI (Claude Code 2.1.197), for tests.

Standard library only. It follows /work/shared/claude-cli-protocol.md: same flags (commander-style parsing),
same stream-json lines, exit codes, signal behaviour and files; the "model" is scripted by markers in the prompt.

Invocation::

    fake_claude.py -p "<prompt>" --output-format stream-json --verbose [options]      (stdin is never read
                                                                                      when a prompt is given)
    fake_claude.py --version        ->  "2.1.197 (Claude Code)"

Options (``--opt value`` or ``--opt=value``): ``-p/--print``, ``--output-format text|json|stream-json``,
``--input-format text``, ``--verbose``, ``-d/--debug``, ``--model M`` (aliases sonnet/opus/haiku resolve to full
ids; default ``$ANTHROPIC_MODEL`` or ``claude-sonnet-4-5``), ``--fallback-model M`` (must differ from the model),
``--max-turns N``, ``--max-budget-usd X``, ``--allowedTools/--allowed-tools R...``,
``--disallowedTools/--disallowed-tools R...``, ``--tools T...`` (``""`` = none, ``default`` = all),
``--permission-mode default|acceptEdits|plan|bypassPermissions|dontAsk|auto``,
``--dangerously-skip-permissions``, ``-r/--resume ID``, ``-c/--continue``, ``--fork-session``,
``--session-id UUID``, ``--no-session-persistence``, ``--append-system-prompt T``, ``--system-prompt T``,
``--mcp-config J...`` (JSON or file), ``--strict-mcp-config``, ``--settings J`` (JSON or file), ``--agents J``,
``--add-dir D...``, ``--include-partial-messages``, ``-h/--help``, ``-v/--version``.

Variadic options (``--allowedTools``, ``--disallowedTools``, ``--tools``, ``--mcp-config``, ``--add-dir``) take
every following argument up to the next one starting with ``-``, exactly like the real CLI: so
``--allowedTools Read "my prompt"`` swallows the prompt (then: no prompt, exit 1). Rules may also be given
comma-separated (``"Read,Edit"``); ``"Bash(git *)"`` stays one rule.

Refusals (stderr only, nothing on stdout, exit 1): unknown option (``error: unknown option '--x'``), missing
option argument, invalid choice, extra positional arguments, stream-json with ``-p`` but without ``--verbose``,
no prompt, invalid or already used ``--session-id``, ``--session-id`` with ``--resume`` but no
``--fork-session``, fallback model equal to the model, invalid JSON for ``--mcp-config``/``--settings``/
``--agents``, ``--dangerously-skip-permissions`` or ``--permission-mode bypassPermissions`` as root unless
``IS_SANDBOX=1``. Interactive mode (no ``-p``) is not faked: exit 2.

Cost model (deterministic): every model response costs ``COST_PER_RESPONSE_USD`` (0.00423) and uses
``INPUT_TOKENS_PER_RESPONSE`` (1200) input and ``OUTPUT_TOKENS_PER_RESPONSE`` (42) output tokens, no cache tokens.
Totals are rounded to 10 decimals after each response; compare costs with ``pytest.approx``. A response's cost
is counted as soon as its first line is printed. ``total_cost_usd`` and ``modelUsage`` (per model
``costUSD``/``inputTokens``/``outputTokens``) are cumulative over the session: ``--resume`` continues from the
totals saved in the transcript. ``usage``, ``num_turns``, ``duration_ms`` are per run. ``num_turns`` = number of
model responses in this run.

Scenarios, chosen by markers in the prompt (the first "main" marker wins; modifiers combine with any):

- default: response 1 = thinking + text ``Let me check.`` + tool_use Bash ``echo hello-from-tool`` (nothing is
  run; the tool_result is ``hello-from-tool``), response 2 = text ``All done: <first 80 chars of prompt>``.
  2 turns, 2 responses of cost.
- ``[[text]]`` / ``[[text:SOME TEXT]]``: one text response (``SOME TEXT``, else ``Echo: <prompt>``). 1 turn.
- ``[[lines:N]]`` / ``[[lines:N:DELAY_MS]]``: one response of N text lines ``line i of N`` (burst, or DELAY_MS
  between them); ``result`` is the last one (as the real CLI, ``result`` holds only the last text block).
- ``[[hang]]``: init, one assistant text line (1 response of cost), then blocks until signalled.
- ``[[crash]]``: init, one assistant line, ``fatal: simulated crash`` on stderr, exit 3, no result line.
- ``[[huge:BYTES]]``: one assistant text line whose text is BYTES characters long (a-z repeated); also the result.
- ``[[hugeresult:BYTES]]``: one short text response; the result line's ``result`` is BYTES digits long.
- ``[[orphan]]`` / ``[[orphan:exit]]``: starts ``sleep 300`` in a new session (as the real CLI runs each Bash
  command: outside the CLI's process group), says ``orphan pid <pid>``, then hangs until signalled (or, with
  ``exit``, succeeds at once, leaving the sleep behind).
- ``[[flood:MB]]``: MB (float ok) megabytes of assistant text lines (one response) as fast as possible, then
  a last text ``flood done: <n> lines`` and the result.
- ``[[nonewline:MB]]``: init, then MB megabytes of ``x`` without any newline, exit 0, no result line.
- ``[[turns:N]]``: N tool rounds (Bash ``echo step-k``) then a final text ``Finished N tool rounds.``: N+1
  responses. A turn is a model response, so with ``--max-turns M`` the run succeeds iff N+1 <= M; otherwise it
  stops after M responses (and their tool results) with ``error_max_turns``,
  ``errors:["Reached maximum number of turns (M)"]``, no ``result`` field, exit 1.
- ``[[error]]``: two ``system/api_retry`` lines, a synthetic assistant line, then a ``result`` with
  ``subtype:"success"``, ``is_error:true``, ``result:"API Error: 500 ..."``; exit 1; no cost.
- ``[[write:PATH:CONTENT]]``: a Write tool round that really creates PATH (relative to cwd) with CONTENT, then
  ``Wrote PATH.``. Denied (``system/permission_denied`` line, tool_result ``is_error:true``, entry in
  ``permission_denials``, file not written, final text ``I could not write PATH: permission denied.``, run still
  succeeds) when: a deny rule matches (``Write``/``Edit``/``Write(pattern)``, from --disallowedTools or
  settings), or mode is ``plan``, or the path is outside cwd/--add-dir (unless bypassPermissions), or mode is
  ``dontAsk`` without an allow rule. ``default``/``acceptEdits``/``auto``/``bypassPermissions`` allow it.
  The same rules apply to the Bash call of default/turns, except plan mode allows it (read-only command).
  A tool missing from ``--tools`` gets a ``No such tool available`` error tool_result (no denial).
- ``[[sh:CMD]]`` (repeatable): one Bash tool round per marker, in order, each REALLY running CMD with
  ``/bin/sh -c`` in the CLI's cwd and environment, in a session of its own (as the real CLI runs Bash), 120 s
  at most; the tool result is its stdout (then its stderr, if any). Then a final text ``All done: <first 80
  chars of prompt>`` followed by every tool result, so what the agent saw ends up in its output and result.
  Permission rules apply as for the default Bash call. CMD cannot contain ``]]``.
- ``[[mcp:TOOL]]`` / ``[[mcp:TOOL:JSON]]`` (repeatable, mixes with ``[[sh:CMD]]`` in prompt order): a tool round
  calling TOOL (with the JSON object as arguments) on the --mcp-config server that lists it, REALLY started
  (stdio, its configured env over the CLI's, JSON-RPC initialize / tools/list / tools/call); the tool is named
  ``mcp__<server>__<TOOL>``. Denied unless bypassPermissions or an allow rule ``mcp__<server>`` /
  ``mcp__<server>__<TOOL>`` matches (and no deny rule does), as the real CLI in -p mode. Its result text is
  the tool result (``isError`` kept); the final text is as for ``[[sh]]``. JSON cannot contain ``]]``.
- ``[[env]]``: final text = JSON list of the sorted environment variable NAMES the process sees.
- ``[[args]]``: final text = JSON list of argv[1:].
- modifiers: ``[[slow:S]]`` sleep S seconds (float) before the first assistant line; ``[[cost:X]]`` each response
  costs X USD (with ``--max-budget-usd B``: when the run's cost reaches B (>=) after a response that asked for a
  tool, the tool result is printed and the run ends with ``error_max_budget_usd``, exit 1; a final answer that
  crosses B still succeeds); ``[[stderr:TEXT]]`` TEXT on stderr, run succeeds; ``[[noise]]`` non-JSON lines
  (``npm WARN ...``, an empty line, ``{not json``) plus ``rate_limit_event``, ``tool_progress`` and
  ``system/status`` lines around the run, before the result; ``[[perrun]]`` the result's ``total_cost_usd`` and
  ``modelUsage`` cover this run only (what the real 2.1.197 reports after ``--resume``), not the session;
  ``[[helper]]`` / ``[[helper:INPUT_TOKENS]]`` one extra call on ``HELPER_MODEL`` per run (the real CLI's
  title generation), counted in ``modelUsage`` and the cost but not in ``usage`` or ``num_turns``;
  ``[[linger:S]]`` waits S seconds after the result line before exiting (a stop then changes nothing).

Signals: SIGINT at any time after start (also during hang/slow) -> a ``user`` line
``[Request interrupted by user]``, then ``result`` ``error_during_execution``, ``is_error:true``,
``terminal_reason:"aborted_streaming"``, ``errors:["Request interrupted by user"]`` with the cost of the responses
already printed; exit 0. SIGTERM: default action (killed, returncode -15 / shell 143), no result line.

Files: config dir = ``$CLAUDE_CONFIG_DIR`` or ``$HOME/.claude`` (neither set: nothing saved). Transcript
``<config>/projects/<cwd, each non-alphanumeric char -> '->/<session-id>.jsonl``: one JSON line per message
(prompt, one per assistant content block, tool results) and, after every response and at the end, a
``{"type":"fake-cumulative-totals",...}`` line (the last one wins on resume). Global state
``<config>/.claude.json`` (with CLAUDE_CONFIG_DIR) or ``$HOME/.claude.json`` (numStartups, projects[cwd] with
lastSessionId/lastCost/lastModelUsage; ``hasTrustDialogAccepted`` there makes ``<cwd>/.claude/settings.json``
``permissions.allow`` apply). Unwritable config dir: the run succeeds and nothing is saved. ``--resume`` of an
unknown id (looked up under the current cwd only) prints only one ``result`` line: ``error_during_execution``,
``num_turns:0``, ``errors:["No conversation found with session ID: <id>"]``, cost 0, exit 1; its
``session_id`` is the id asked for (as the real CLI's). ``--fork-session``
copies the messages into a new session whose totals start at 0.

Init lists ``skills`` (folders ``<cwd>/.claude/skills/*/SKILL.md`` and ``<config>/skills/*/SKILL.md``), ``agents``
(built-ins, ``<cwd>/.claude/agents/*.md``, ``--agents`` keys), ``mcp_servers`` (from --mcp-config: ``connected``
when the stdio command is found on PATH, else ``failed``; nothing is started). ``apiKeySource`` is
``ANTHROPIC_API_KEY`` when that variable is set, else ``none``. With ``FAKE_CLAUDE_REQUIRE_AUTH=1`` and no
``ANTHROPIC_API_KEY``/``ANTHROPIC_AUTH_TOKEN``/``CLAUDE_CODE_OAUTH_TOKEN``/``CLAUDE_CODE_USE_BEDROCK``, runs end
after init with ``result`` success/``is_error:true`` ``Invalid API key · Please run /login``, exit 1.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

JSON = dict[str, Any]

VERSION = "2.1.197"
VERSION_STRING = f"{VERSION} (Claude Code)"
COST_PER_RESPONSE_USD = 0.00423
INPUT_TOKENS_PER_RESPONSE = 1200
OUTPUT_TOKENS_PER_RESPONSE = 42
DEFAULT_MODEL = "claude-sonnet-4-5"
# [[helper]]: one helper call per run (as the real CLI's title generation) on this model, counted in modelUsage
# and total_cost_usd but not in the result's per-run `usage` or num_turns.
HELPER_MODEL = "claude-haiku-4-5"
HELPER_COST_USD = 0.0011
HELPER_INPUT_TOKENS = 3000
HELPER_OUTPUT_TOKENS = 12
MODEL_ALIASES = {"sonnet": "claude-sonnet-4-5", "opus": "claude-opus-4-1", "haiku": "claude-haiku-4-5"}
CONTEXT_WINDOW = 200_000
MAX_OUTPUT_TOKENS = 32_000
TOOL_OUTPUT = "hello-from-tool"
TOTALS_LINE_TYPE = "fake-cumulative-totals"
INTERRUPT_TEXT = "[Request interrupted by user]"
API_ERROR_TEXT = (
    'API Error: 500 {"type":"error","error":{"type":"api_error","message":"Internal server error"},'
    '"request_id":"req_fake_500"}'
)
AUTH_ERROR_TEXT = "Invalid API key · Please run /login"
PERMISSION_MODES = ("acceptEdits", "bypassPermissions", "default", "dontAsk", "plan", "auto")
OUTPUT_FORMATS = ("text", "json", "stream-json")
BUILTIN_TOOLS = (
    "Task", "Bash", "Glob", "Grep", "ExitPlanMode", "Read", "Edit", "Write", "NotebookEdit", "WebFetch",
    "TodoWrite", "WebSearch", "BashOutput", "KillShell", "Skill", "SlashCommand",
)  # fmt: skip
EDIT_TOOLS = frozenset({"Edit", "Write", "MultiEdit", "NotebookEdit"})
BUILTIN_AGENTS = ("general-purpose", "statusline-setup", "output-style-setup", "Explore", "Plan")
SLASH_COMMANDS = ("compact", "context", "cost", "init", "pr-comments", "release-notes", "review", "security-review")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
MARKER_RE = re.compile(r"\[\[([a-z]+)(?::(.*?))?\]\]", re.DOTALL)
RULE_RE = re.compile(r"^([A-Za-z0-9_]+)(?:\((.*)\))?$", re.DOTALL)
MAIN_SCENARIOS = (
    "text", "lines", "hang", "crash", "huge", "hugeresult", "flood", "nonewline", "turns", "error", "write", "env",
    "args", "orphan", "sh", "mcp",
)  # fmt: skip
SH_TIMEOUT_SECONDS = 120.0

FLAG, VALUE, VARIADIC = "flag", "value", "variadic"
# option spelling -> (destination, kind, commander-style argument name)
OPTIONS: dict[str, tuple[str, str, str]] = {
    "-p": ("print", FLAG, ""),
    "--print": ("print", FLAG, ""),
    "--output-format": ("output_format", VALUE, "<format>"),
    "--input-format": ("input_format", VALUE, "<format>"),
    "--verbose": ("verbose", FLAG, ""),
    "-d": ("debug", FLAG, ""),
    "--debug": ("debug", FLAG, ""),
    "--model": ("model", VALUE, "<model>"),
    "--fallback-model": ("fallback_model", VALUE, "<model>"),
    "--max-turns": ("max_turns", VALUE, "<turns>"),
    "--max-budget-usd": ("max_budget_usd", VALUE, "<amount>"),
    "--allowedTools": ("allowed_tools", VARIADIC, "<tools...>"),
    "--allowed-tools": ("allowed_tools", VARIADIC, "<tools...>"),
    "--disallowedTools": ("disallowed_tools", VARIADIC, "<tools...>"),
    "--disallowed-tools": ("disallowed_tools", VARIADIC, "<tools...>"),
    "--tools": ("tools", VARIADIC, "<tools...>"),
    "--permission-mode": ("permission_mode", VALUE, "<mode>"),
    "--dangerously-skip-permissions": ("skip_permissions", FLAG, ""),
    "-r": ("resume", VALUE, "[value]"),
    "--resume": ("resume", VALUE, "[value]"),
    "-c": ("continue_", FLAG, ""),
    "--continue": ("continue_", FLAG, ""),
    "--fork-session": ("fork_session", FLAG, ""),
    "--session-id": ("session_id", VALUE, "<uuid>"),
    "--no-session-persistence": ("no_persistence", FLAG, ""),
    "--append-system-prompt": ("append_system_prompt", VALUE, "<prompt>"),
    "--system-prompt": ("system_prompt", VALUE, "<prompt>"),
    "--mcp-config": ("mcp_config", VARIADIC, "<configs...>"),
    "--strict-mcp-config": ("strict_mcp_config", FLAG, ""),
    "--settings": ("settings", VALUE, "<file-or-json>"),
    "--agents": ("agents", VALUE, "<json>"),
    "--add-dir": ("add_dir", VARIADIC, "<directories...>"),
    "--include-partial-messages": ("include_partial", FLAG, ""),
    "-h": ("help", FLAG, ""),
    "--help": ("help", FLAG, ""),
    "-v": ("version", FLAG, ""),
    "--version": ("version", FLAG, ""),
}

HELP_TEXT = """Usage: claude [options] [command] [prompt]

Claude Code - starts an interactive session by default, use -p/--print for non-interactive output
(this is fake_claude.py, a test double; see its module docstring)

Arguments:
  prompt                                            Your prompt

Options:
  -p, --print                                       Print response and exit
  --output-format <format>                          "text", "json" or "stream-json"
  --verbose                                         Override verbose mode setting from config
  --model <model>                                   Model for the current session
  --allowedTools, --allowed-tools <tools...>        Tool rules to allow
  --disallowedTools, --disallowed-tools <tools...>  Tool rules to deny
  --permission-mode <mode>                          acceptEdits, bypassPermissions, default, dontAsk, plan
  -r, --resume [value]                              Resume a conversation by session ID
  --session-id <uuid>                               Use a specific session ID
  -v, --version                                     Output the version number
  -h, --help                                        Display help for command
"""


class UsageError(Exception):
    """A refusal before anything is printed on stdout: message on stderr, exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Interrupted(Exception):
    """SIGINT was received; raised at the next safe point."""


class StopRun(Exception):
    """A limit (max turns, max budget) ends the run with an error result."""

    def __init__(self, subtype: str, errors: list[str], terminal_reason: str) -> None:
        super().__init__(subtype)
        self.subtype = subtype
        self.errors = errors
        self.terminal_reason = terminal_reason


_SIGINT = threading.Event()


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _SIGINT.set()


def _check_interrupt() -> None:
    if _SIGINT.is_set():
        raise Interrupted


def _sleep(seconds: float) -> None:
    if seconds > 0 and _SIGINT.wait(seconds):
        raise Interrupted
    _check_interrupt()


def _now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _new_uuid() -> str:
    return str(uuid.uuid4())


def _msg_id() -> str:
    return "msg_01" + uuid.uuid4().hex[:22]


def _tool_id() -> str:
    return "toolu_01" + uuid.uuid4().hex[:22]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


# --------------------------------------------------------------------------------------------------- arguments


@dataclass
class Options:
    prompt: str | None = None
    print: bool = False
    output_format: str = "text"
    input_format: str = "text"
    verbose: bool = False
    debug: bool = False
    model: str | None = None
    fallback_model: str | None = None
    max_turns: int | None = None
    max_budget_usd: float | None = None
    allowed_tools: list[str] = field(default_factory=list)
    disallowed_tools: list[str] = field(default_factory=list)
    tools: list[str] | None = None
    permission_mode: str | None = None
    skip_permissions: bool = False
    resume: str | None = None
    continue_: bool = False
    fork_session: bool = False
    session_id: str | None = None
    no_persistence: bool = False
    append_system_prompt: str | None = None
    system_prompt: str | None = None
    mcp_config: list[str] = field(default_factory=list)
    strict_mcp_config: bool = False
    settings: str | None = None
    agents: str | None = None
    add_dir: list[str] = field(default_factory=list)
    include_partial: bool = False
    help: bool = False
    version: bool = False


def split_rules(values: list[str]) -> list[str]:
    """Split rule arguments on commas and whitespace outside parentheses: ``Read,Edit`` / ``Bash(git *)``."""
    rules: list[str] = []
    for value in values:
        buf: list[str] = []
        depth = 0
        for ch in value:
            if ch == "(":
                depth += 1
            elif ch == ")" and depth:
                depth -= 1
            if depth == 0 and (ch == "," or ch.isspace()):
                if buf:
                    rules.append("".join(buf))
                    buf = []
            else:
                buf.append(ch)
        if buf:
            rules.append("".join(buf))
    return rules


def parse_args(argv: list[str]) -> Options:
    """Commander-like parsing: unknown options are errors, variadic options eat args until the next ``-x``."""
    raw: dict[str, Any] = {}
    positionals: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positionals.extend(argv[i:])
            break
        if not arg.startswith("-") or arg == "-":
            positionals.append(arg)
            continue
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        spec = OPTIONS.get(name)
        if spec is None:
            raise UsageError(f"error: unknown option '{arg}'")
        dest, kind, argname = spec
        if kind == FLAG:
            raw[dest] = True
            continue
        values: list[str] = []
        if eq:
            values.append(inline)
        elif i < len(argv):
            values.append(argv[i])
            i += 1
        else:
            raise UsageError(f"error: option '{name} {argname}' argument missing")
        if kind == VALUE:
            raw[dest] = values[0]
            continue
        while i < len(argv) and not argv[i].startswith("-"):
            values.append(argv[i])
            i += 1
        raw.setdefault(dest, []).extend(values)
    if len(positionals) > 1:
        raise UsageError(f"error: too many arguments. Expected 1 argument but got {len(positionals)}.")

    opts = Options(prompt=positionals[0] if positionals else None)
    for key in ("print", "verbose", "debug", "skip_permissions", "continue_", "fork_session", "no_persistence",
                "strict_mcp_config", "include_partial", "help", "version"):  # fmt: skip
        setattr(opts, key, bool(raw.get(key, False)))
    for key in ("output_format", "input_format", "model", "fallback_model", "permission_mode", "resume",
                "session_id", "append_system_prompt", "system_prompt", "settings", "agents"):  # fmt: skip
        if key in raw:
            setattr(opts, key, raw[key])
    opts.allowed_tools = split_rules(raw.get("allowed_tools", []))
    opts.disallowed_tools = split_rules(raw.get("disallowed_tools", []))
    if "tools" in raw:
        opts.tools = split_rules(raw["tools"])
    opts.mcp_config = list(raw.get("mcp_config", []))
    opts.add_dir = list(raw.get("add_dir", []))

    if opts.output_format not in OUTPUT_FORMATS:
        raise UsageError(
            f"error: option '--output-format <format>' argument '{opts.output_format}' is invalid. "
            f"Allowed choices are {', '.join(OUTPUT_FORMATS)}."
        )
    if opts.permission_mode is not None and opts.permission_mode not in PERMISSION_MODES:
        raise UsageError(
            f"error: option '--permission-mode <mode>' argument '{opts.permission_mode}' is invalid. "
            f"Allowed choices are {', '.join(PERMISSION_MODES)}."
        )
    if "max_turns" in raw:
        try:
            opts.max_turns = int(raw["max_turns"])
        except ValueError:
            raise UsageError("Error: --max-turns must be a positive integer") from None
    if "max_budget_usd" in raw:
        try:
            opts.max_budget_usd = float(raw["max_budget_usd"])
        except ValueError:
            opts.max_budget_usd = -1.0
        if not opts.max_budget_usd > 0:
            raise UsageError("Error: --max-budget-usd must be a positive number greater than 0")
    return opts


# ------------------------------------------------------------------------------------------------------- files


def project_dir_name(cwd: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]", "-", cwd)


def config_paths() -> tuple[Path | None, Path | None]:
    """(config dir, global state file) or None where neither CLAUDE_CONFIG_DIR nor HOME is set."""
    env_dir = os.environ.get("CLAUDE_CONFIG_DIR")
    if env_dir:
        return Path(env_dir), Path(env_dir) / ".claude.json"
    home = os.environ.get("HOME")
    if home:
        return Path(home) / ".claude", Path(home) / ".claude.json"
    return None, None


def load_json_arg(value: str) -> Any:
    """A flag value that is inline JSON or a path to a JSON file; ValueError/OSError when it is neither."""
    text = value.strip()
    if not text.startswith(("{", "[")):
        text = Path(value).read_text(encoding="utf-8")
    return json.loads(text)


def read_json_file(path: Path) -> JSON | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json_atomic(path: Path, data: JSON) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        return False
    return True


@dataclass
class Totals:
    """Cumulative over a session (what the transcript's totals line carries)."""

    cost_usd: float = 0.0
    model_usage: dict[str, JSON] = field(default_factory=dict)
    num_turns: int = 0


class Transcript:
    """Append-only JSONL transcript; silently disabled when it cannot be written."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.last_uuid: str | None = None

    def append(self, entry: JSON) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(_dumps(entry) + "\n")
        except OSError:
            self.path = None


def read_transcript(path: Path) -> tuple[list[JSON], Totals]:
    entries: list[JSON] = []
    totals = Totals()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        if obj.get("type") == TOTALS_LINE_TYPE:
            totals = Totals(
                cost_usd=float(obj.get("totalCostUsd", 0.0)),
                model_usage={k: dict(v) for k, v in dict(obj.get("modelUsage", {})).items()},
                num_turns=int(obj.get("numTurns", 0)),
            )
        else:
            entries.append(obj)
    return entries, totals


# ------------------------------------------------------------------------------------------------- permissions


def rule_matches(rule: str, tool: str, arg: str, alt_arg: str = "") -> bool:
    """``Bash`` / ``Bash(echo *)`` / ``Bash(git:*)`` / ``Edit`` (covers all file-editing tools) / ``Write(src/**)``."""
    m = RULE_RE.match(rule.strip())
    if not m:
        return False
    name, pattern = m.group(1), m.group(2)
    names = {tool} | (set(EDIT_TOOLS) if tool in EDIT_TOOLS else set())
    if name not in names:
        return False
    if pattern is None or pattern in ("", "*", "**"):
        return True
    if pattern.endswith(":*"):
        return arg.startswith(pattern[:-2]) or (bool(alt_arg) and alt_arg.startswith(pattern[:-2]))
    return fnmatch.fnmatchcase(arg, pattern) or (bool(alt_arg) and fnmatch.fnmatchcase(alt_arg, pattern))


def settings_rules(settings: JSON | None, key: str) -> list[str]:
    if not settings:
        return []
    perms = settings.get("permissions")
    if not isinstance(perms, dict):
        return []
    rules = perms.get(key)
    return [r for r in rules if isinstance(r, str)] if isinstance(rules, list) else []


# ------------------------------------------------------------------------------------------------------- the run


@dataclass
class Scenario:
    main: str = "default"
    arg: str | None = None
    slow: float = 0.0
    cost: float = COST_PER_RESPONSE_USD
    stderr: str | None = None
    noise: bool = False
    per_run_totals: bool = False
    linger: float = 0.0
    helper_input_tokens: int | None = None


def parse_scenario(prompt: str) -> Scenario:
    sc = Scenario()
    for m in MARKER_RE.finditer(prompt):
        name, arg = m.group(1), m.group(2)
        if name == "slow" and arg:
            sc.slow = float(arg)
        elif name == "cost" and arg:
            sc.cost = float(arg)
        elif name == "stderr" and arg is not None:
            sc.stderr = arg
        elif name == "noise":
            sc.noise = True
        elif name == "linger" and arg:
            sc.linger = float(arg)
        elif name == "perrun":
            sc.per_run_totals = True
        elif name == "helper":
            sc.helper_input_tokens = int(arg) if arg else HELPER_INPUT_TOKENS
        elif name in MAIN_SCENARIOS and sc.main == "default":
            sc.main, sc.arg = name, arg
    return sc


ToolExec = Callable[[], tuple[str, JSON]]


class Run:
    def __init__(self, opts: Options, prompt: str, cwd: str, session_id: str, model: str) -> None:
        self.opts = opts
        self.prompt = prompt
        self.cwd = cwd
        self.session_id = session_id
        self.model = model
        self.stream = opts.output_format == "stream-json"
        self.out = sys.stdout.buffer
        self.started = time.monotonic()
        self.api_ms = 0
        self.totals = Totals()
        self.run_cost = 0.0
        self.run_input = 0
        self.run_output = 0
        self.num_turns = 0
        self.denials: list[JSON] = []
        self.last_text = ""
        self.last_tool_output = ""
        self.transcript = Transcript(None)
        self.permission_mode = "default"
        self.allow_rules: list[str] = []
        self.deny_rules: list[str] = []
        self.tools: list[str] = list(BUILTIN_TOOLS)
        self.work_dirs: list[str] = [cwd]
        self.cost_per_response = COST_PER_RESPONSE_USD
        self.noise = False
        self.per_run_totals = False
        self.run_model_usage: dict[str, JSON] = {}

    # ---- output
    def emit(self, obj: JSON, *, check: bool = True) -> None:
        if self.stream:
            self.out.write((_dumps(obj) + "\n").encode("utf-8"))
            self.out.flush()
        if check:
            _check_interrupt()

    def raw(self, text: str) -> None:
        if self.stream:
            self.out.write(text.encode("utf-8"))
            self.out.flush()

    def base(self, type_: str, **fields: Any) -> JSON:
        line: JSON = {"type": type_}
        line.update(fields)
        line["session_id"] = self.session_id
        line["uuid"] = _new_uuid()
        return line

    def record(self, type_: str, message: JSON, **extra: Any) -> None:
        entry_uuid = _new_uuid()
        entry: JSON = {
            "parentUuid": self.transcript.last_uuid, "isSidechain": False, "userType": "external",
            "cwd": self.cwd, "sessionId": self.session_id, "version": VERSION, "gitBranch": "",
            "type": type_, "message": message, "uuid": entry_uuid, "timestamp": _now_iso(),
        }  # fmt: skip
        entry.update(extra)
        self.transcript.append(entry)
        self.transcript.last_uuid = entry_uuid

    def save_totals(self) -> None:
        self.transcript.append({
            "type": TOTALS_LINE_TYPE, "sessionId": self.session_id, "totalCostUsd": self.totals.cost_usd,
            "modelUsage": self.totals.model_usage, "numTurns": self.totals.num_turns, "timestamp": _now_iso(),
        })  # fmt: skip

    def noise_lines(self, where: str) -> None:
        if not self.noise:
            return
        if where == "start":
            self.raw("npm WARN config production Use `--omit=dev` instead.\n")
            self.emit(self.base("system", subtype="status", status="ready"))
        else:
            self.raw("\n{not json\n")
            self.emit(self.base("rate_limit_event", rate_limit_info={
                "status": "allowed", "resetsAt": int(time.time()) + 3600, "rateLimitType": "five_hour",
            }))  # fmt: skip
            self.emit(self.base("tool_progress", tool_use_id=_tool_id(), tool_name="Bash", elapsed_time_seconds=0))
            self.raw("npm WARN deprecated fake-dependency@1.0.0: this is noise\n")
            self.emit(self.base("system", subtype="status", status=None))

    # ---- model responses
    def usage_line(self) -> JSON:
        return {
            "input_tokens": INPUT_TOKENS_PER_RESPONSE, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0, "output_tokens": OUTPUT_TOKENS_PER_RESPONSE, "service_tier": "standard",
        }  # fmt: skip

    def add_cost(self) -> None:
        cost = self.cost_per_response
        self.num_turns += 1
        self.totals.num_turns += 1
        self.run_cost = round(self.run_cost + cost, 10)
        self.run_input += INPUT_TOKENS_PER_RESPONSE
        self.run_output += OUTPUT_TOKENS_PER_RESPONSE
        self.totals.cost_usd = round(self.totals.cost_usd + cost, 10)
        self.add_model_usage(self.model, INPUT_TOKENS_PER_RESPONSE, OUTPUT_TOKENS_PER_RESPONSE, cost)
        self.api_ms += 7

    def add_model_usage(self, model: str, input_tokens: int, output_tokens: int, cost: float) -> None:
        for usage in (self.totals.model_usage, self.run_model_usage):
            mu = usage.setdefault(model, {
                "inputTokens": 0, "outputTokens": 0, "cacheReadInputTokens": 0, "cacheCreationInputTokens": 0,
                "webSearchRequests": 0, "costUSD": 0.0, "contextWindow": CONTEXT_WINDOW,
                "maxOutputTokens": MAX_OUTPUT_TOKENS,
            })  # fmt: skip
            mu["inputTokens"] = int(mu.get("inputTokens", 0)) + input_tokens
            mu["outputTokens"] = int(mu.get("outputTokens", 0)) + output_tokens
            mu["costUSD"] = round(float(mu.get("costUSD", 0.0)) + cost, 10)

    def helper_call(self, input_tokens: int) -> None:
        """A side call (the real CLI's title generation): in modelUsage and the cost, not in usage/num_turns."""
        self.run_cost = round(self.run_cost + HELPER_COST_USD, 10)
        self.totals.cost_usd = round(self.totals.cost_usd + HELPER_COST_USD, 10)
        self.add_model_usage(HELPER_MODEL, input_tokens, HELPER_OUTPUT_TOKENS, HELPER_COST_USD)
        self.save_totals()

    def stream_event(self, event: JSON) -> None:
        if self.opts.include_partial:
            self.emit(self.base("stream_event", event=event, parent_tool_use_id=None))

    def respond(self, blocks: list[JSON], *, delay_s: float = 0.0, stop_reason: str = "end_turn") -> None:
        """One model response: one assistant line per content block, all sharing message.id."""
        msg_id = _msg_id()
        self.add_cost()
        self.save_totals()
        self.stream_event({"type": "message_start", "message": {
            "id": msg_id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": self.usage_line(),
        }})  # fmt: skip
        for index, block in enumerate(blocks):
            if index and delay_s:
                _sleep(delay_s)
            self.partial_block(index, block)
            message: JSON = {
                "id": msg_id, "type": "message", "role": "assistant", "model": self.model, "content": [block],
                "stop_reason": None, "stop_sequence": None, "usage": self.usage_line(),
            }  # fmt: skip
            self.record("assistant", message, requestId="req_fake_" + msg_id[-12:])
            if block.get("type") == "text":
                self.last_text = str(block["text"])
            self.emit(self.base("assistant", message=message, parent_tool_use_id=None, timestamp=_now_iso()))
        self.stream_event({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                           "usage": {"output_tokens": OUTPUT_TOKENS_PER_RESPONSE}})  # fmt: skip
        self.stream_event({"type": "message_stop"})

    def partial_block(self, index: int, block: JSON) -> None:
        if not (self.opts.include_partial and self.stream):
            return
        kind = block.get("type")
        if kind == "text":
            start: JSON = {"type": "text", "text": ""}
            text = str(block["text"])
            deltas = [{"type": "text_delta", "text": text[i : i + 64]} for i in range(0, max(len(text), 1), 64)]
        elif kind == "thinking":
            start = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": str(block["thinking"])},
                      {"type": "signature_delta", "signature": str(block["signature"])}]  # fmt: skip
        else:
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": _dumps(block["input"])}]
        self.stream_event({"type": "content_block_start", "index": index, "content_block": start})
        for delta in deltas:
            self.stream_event({"type": "content_block_delta", "index": index, "delta": delta})
        self.stream_event({"type": "content_block_stop", "index": index})

    def tool_result(self, tool_use_id: str, content: str, is_error: bool, tool_use_result: Any) -> None:
        message: JSON = {"role": "user", "content": [
            {"tool_use_id": tool_use_id, "type": "tool_result", "content": content, "is_error": is_error},
        ]}  # fmt: skip
        self.record("user", message, toolUseResult=tool_use_result)
        self.emit(self.base("user", message=message, parent_tool_use_id=None, tool_use_result=tool_use_result))

    # ---- tools and limits
    def permission(self, tool: str, arg: str, alt_arg: str = "") -> tuple[str, str]:
        """('allow'|'deny'|'missing', message)."""
        if any(rule_matches(r, tool, arg, alt_arg) for r in self.deny_rules):
            return "deny", f"Permission to use {tool} has been denied."
        if tool not in self.tools:
            return "missing", f"<tool_use_error>Error: No such tool available: {tool}</tool_use_error>"
        if self.permission_mode == "plan" and tool in EDIT_TOOLS:
            return "deny", f"Claude requested permissions to use {tool}, but plan mode is active."
        if self.permission_mode == "bypassPermissions":
            return "allow", ""
        if tool in EDIT_TOOLS and not any(arg == d or arg.startswith(d.rstrip("/") + "/") for d in self.work_dirs):
            return "deny", f"Claude requested permissions to write to {arg}, but you haven't granted it yet."
        if any(rule_matches(r, tool, arg, alt_arg) for r in self.allow_rules):
            return "allow", ""
        if self.permission_mode == "dontAsk":
            return "deny", f"Claude requested permissions to use {tool}, but you haven't granted it yet."
        return "allow", ""

    def tool_round(self, pre: list[JSON], name: str, tool_input: JSON, perm_arg: tuple[str, str], run: ToolExec,
                   *, delay_s: float = 0.0) -> bool:  # fmt: skip
        """A response ending in a tool_use, then the tool result. True when the tool ran."""
        tool_use_id = _tool_id()
        block: JSON = {"type": "tool_use", "id": tool_use_id, "name": name, "input": tool_input}
        self.respond([*pre, block], delay_s=delay_s, stop_reason="tool_use")
        decision, message = self.permission(name, *perm_arg)
        if decision == "allow":
            content, tool_use_result = run()
            self.last_tool_output = content
            self.tool_result(tool_use_id, content, False, tool_use_result)
            return True
        if decision == "deny":
            denial: JSON = {"tool_name": name, "tool_use_id": tool_use_id, "tool_input": tool_input}
            self.denials.append(denial)
            self.emit(self.base("system", subtype="permission_denied", message=message, **denial))
        self.tool_result(tool_use_id, message, True, f"Error: {message}")
        return False

    def before_next_request(self) -> None:
        max_turns = self.opts.max_turns
        if max_turns is not None and self.num_turns >= max_turns:
            raise StopRun("error_max_turns", [f"Reached maximum number of turns ({max_turns})"], "max_turns")
        budget = self.opts.max_budget_usd
        if budget is not None and self.run_cost >= budget:
            raise StopRun("error_max_budget_usd", [f"Reached maximum budget (${budget})"], "max_budget_usd")

    def bash_round(self, pre: list[JSON], command: str, output: str, description: str) -> None:
        def run() -> tuple[str, JSON]:
            return output, {"stdout": output, "stderr": "", "interrupted": False, "isImage": False}

        self.tool_round(pre, "Bash", {"command": command, "description": description}, (command, ""), run)
        self.before_next_request()

    # ---- results
    def result_line(self, subtype: str, is_error: bool, *, result: str | None, errors: list[str] | None,
                    terminal_reason: str, stop_reason: str | None) -> JSON:  # fmt: skip
        line: JSON = {
            "type": "result", "subtype": subtype, "is_error": is_error,
            "duration_ms": int((time.monotonic() - self.started) * 1000), "duration_api_ms": self.api_ms,
            "num_turns": self.num_turns,
        }  # fmt: skip
        if result is not None:
            line["result"] = result
        line.update({
            "stop_reason": stop_reason, "session_id": self.session_id,
            "total_cost_usd": self.run_cost if self.per_run_totals else self.totals.cost_usd,
            "usage": {
                "input_tokens": self.run_input, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                "output_tokens": self.run_output, "server_tool_use": {"web_search_requests": 0,
                                                                      "web_fetch_requests": 0},
                "service_tier": "standard",
                "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0},
            },
            "modelUsage": self.run_model_usage if self.per_run_totals else self.totals.model_usage,
            "permission_denials": self.denials,
        })  # fmt: skip
        if errors is not None:
            line["errors"] = errors
        line["terminal_reason"] = terminal_reason
        line["uuid"] = _new_uuid()
        return line

    def finish(self, line: JSON, code: int) -> int:
        self.save_totals()
        if self.stream:
            self.emit(line, check=False)
        elif self.opts.output_format == "json":
            self.out.write((_dumps(line) + "\n").encode("utf-8"))
            self.out.flush()
        elif "result" in line and not line["is_error"]:
            self.out.write((str(line["result"]) + "\n").encode("utf-8"))
            self.out.flush()
        else:
            sys.stderr.write("Error: " + "; ".join(line.get("errors") or [str(line.get("result", ""))]) + "\n")
            sys.stderr.flush()
        return code

    def success(self, text: str | None = None) -> int:
        self.noise_lines("end")
        final = self.last_text if text is None else text
        line = self.result_line("success", False, result=final, errors=None, terminal_reason="completed",
                                stop_reason="end_turn")  # fmt: skip
        return self.finish(line, 0)


# ---------------------------------------------------------------------------------------------------- scenarios


def scenario_body(run: Run, sc: Scenario) -> int:
    prompt = run.prompt
    main = sc.main
    arg = sc.arg
    _sleep(sc.slow)
    if main == "text" or main in ("env", "args"):
        if main == "env":
            text = json.dumps(sorted(os.environ))
        elif main == "args":
            text = json.dumps(sys.argv[1:])
        else:
            text = arg if arg else f"Echo: {prompt}"
        run.respond([{"type": "text", "text": text}])
        return run.success()
    if main == "lines":
        parts = (arg or "1").split(":")
        count = int(parts[0])
        delay = float(parts[1]) / 1000 if len(parts) > 1 and parts[1] else 0.0
        run.respond([{"type": "text", "text": f"line {i} of {count}"} for i in range(1, count + 1)], delay_s=delay)
        return run.success()
    if main == "hang":
        run.respond([{"type": "text", "text": "Working on it..."}])
        while not _SIGINT.wait(3600):
            pass
        raise Interrupted
    if main == "crash":
        run.respond([{"type": "text", "text": "About to crash."}])
        sys.stderr.write("fatal: simulated crash\n")
        sys.stderr.flush()
        return 3
    if main == "huge":
        size = int(float(arg or "1048576"))
        alphabet = "abcdefghijklmnopqrstuvwxyz"
        text = (alphabet * (size // len(alphabet) + 1))[:size]
        run.respond([{"type": "text", "text": text}])
        return run.success()
    if main == "hugeresult":
        size = int(float(arg or "1100000"))
        run.respond([{"type": "text", "text": "A short answer."}])
        return run.success(("0123456789" * (size // 10 + 1))[:size])
    if main == "orphan":
        # As the real CLI runs a Bash command: in a session of its own, outside the CLI's process group.
        child = subprocess.Popen(["sleep", "300"], start_new_session=True, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        run.respond([{"type": "text", "text": f"orphan pid {child.pid}"}])
        if arg == "exit":
            return run.success()
        while not _SIGINT.wait(3600):
            pass
        raise Interrupted
    if main == "flood":
        return flood(run, float(arg or "1"))
    if main == "nonewline":
        total = int(float(arg or "1") * 1024 * 1024)
        chunk = "x" * 65536
        while total > 0:
            run.raw(chunk[: min(total, len(chunk))])
            total -= len(chunk)
            if _SIGINT.is_set():
                run.raw("\n")
                raise Interrupted
        return 0
    if main == "turns":
        rounds = int(arg or "1")
        for k in range(1, rounds + 1):
            run.bash_round([{"type": "text", "text": f"Step {k} of {rounds}."}], f"echo step-{k}", f"step-{k}",
                           f"Step {k}")  # fmt: skip
        run.respond([{"type": "text", "text": f"Finished {rounds} tool rounds."}])
        return run.success()
    if main == "error":
        for attempt in (1, 2):
            run.emit(run.base("system", subtype="api_retry", attempt=attempt, max_retries=2, retry_delay_ms=0,
                              error_status=500, error="api_error"))  # fmt: skip
        return api_error(run, API_ERROR_TEXT)
    if main == "write":
        return write_scenario(run, arg or "")
    if main in ("sh", "mcp") and "[[mcp:" in prompt:
        steps = [(m.group(1), m.group(2) or "") for m in MARKER_RE.finditer(prompt) if m.group(1) in ("sh", "mcp")]
        return steps_scenario(run, steps)
    if main == "sh":
        return shell_scenario(run, [m.group(2) or "" for m in MARKER_RE.finditer(prompt) if m.group(1) == "sh"])
    # default: one tool round, then the answer
    run.bash_round(
        [
            {"type": "thinking", "thinking": "The user wants me to check something; I'll run a command.",
             "signature": "fake-signature-" + uuid.uuid4().hex[:16]},
            {"type": "text", "text": "Let me check."},
        ],
        f"echo {TOOL_OUTPUT}", TOOL_OUTPUT, "Print a greeting",
    )  # fmt: skip
    run.respond([{"type": "text", "text": f"All done: {prompt[:80]}"}])
    return run.success()


def flood(run: Run, megabytes: float) -> int:
    target = int(megabytes * 1024 * 1024)
    msg_id = _msg_id()
    run.add_cost()
    run.save_totals()
    filler = "f" * 1000
    written = 0
    count = 0
    while written < target:
        count += 1
        message: JSON = {
            "id": msg_id, "type": "message", "role": "assistant", "model": run.model,
            "content": [{"type": "text", "text": f"flood {count:08d} {filler}"}],
            "stop_reason": None, "stop_sequence": None, "usage": run.usage_line(),
        }  # fmt: skip
        data = (_dumps(run.base("assistant", message=message, parent_tool_use_id=None)) + "\n").encode("utf-8")
        run.out.write(data)
        run.out.flush()
        written += len(data)
        _check_interrupt()
    text = f"flood done: {count} lines"
    message = {
        "id": msg_id, "type": "message", "role": "assistant", "model": run.model,
        "content": [{"type": "text", "text": text}], "stop_reason": None, "stop_sequence": None,
        "usage": run.usage_line(),
    }  # fmt: skip
    run.record("assistant", message)
    run.last_text = text
    run.emit(run.base("assistant", message=message, parent_tool_use_id=None, timestamp=_now_iso()))
    return run.success()


def api_error(run: Run, text: str) -> int:
    zero = {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    message: JSON = {
        "id": str(uuid.uuid4()), "model": "<synthetic>", "role": "assistant", "stop_reason": "stop_sequence",
        "stop_sequence": "", "type": "message", "usage": zero, "content": [{"type": "text", "text": text}],
    }  # fmt: skip
    run.record("assistant", message, isApiErrorMessage=True)
    run.emit(run.base("assistant", message=message, parent_tool_use_id=None, error="unknown"))
    run.num_turns += 1
    run.noise_lines("end")
    line = run.result_line("success", True, result=text, errors=None, terminal_reason="completed",
                           stop_reason="stop_sequence")  # fmt: skip
    return run.finish(line, 1)


def write_scenario(run: Run, arg: str) -> int:
    rel, _, content = arg.partition(":")
    target = os.path.normpath(os.path.join(run.cwd, rel))

    def do_write() -> tuple[str, JSON]:
        path = Path(target)
        existed = path.exists()
        original = path.read_text(encoding="utf-8", errors="replace") if existed else None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        message = f"The file {target} has been updated." if existed else f"File created successfully at: {target}"
        return message, {
            "type": "update" if existed else "create", "filePath": target, "content": content,
            "structuredPatch": [], "originalFile": original,
        }  # fmt: skip

    ok = run.tool_round([{"type": "text", "text": f"I'll create {rel}."}], "Write",
                        {"file_path": target, "content": content}, (target, rel), do_write)  # fmt: skip
    run.before_next_request()
    text = f"Wrote {rel}." if ok else f"I could not write {rel}: permission denied."
    run.respond([{"type": "text", "text": text}])
    return run.success()


def shell_scenario(run: Run, commands: list[str]) -> int:
    """``[[sh:CMD]]``: really run each command as the Bash tool would, then report everything it printed."""
    seen: list[str] = []
    for k, command in enumerate(commands, 1):

        def do_run(command: str = command) -> tuple[str, JSON]:
            try:
                done = subprocess.run(["/bin/sh", "-c", command], cwd=run.cwd, capture_output=True, text=True,
                                      errors="replace", timeout=SH_TIMEOUT_SECONDS, start_new_session=True,
                                      stdin=subprocess.DEVNULL)  # fmt: skip
                stdout, stderr, interrupted = done.stdout, done.stderr, False
            except subprocess.TimeoutExpired as exc:
                stdout, stderr, interrupted = str(exc.stdout or ""), "Command timed out", True
            content = stdout.rstrip("\n") + (("\n" + stderr.rstrip("\n")) if stderr.strip() else "")
            return content, {"stdout": stdout, "stderr": stderr, "interrupted": interrupted, "isImage": False}

        ran = run.tool_round([{"type": "text", "text": f"Step {k} of {len(commands)}."}], "Bash",
                             {"command": command, "description": f"Step {k}"}, (command, ""), do_run)  # fmt: skip
        seen.append(run.last_tool_output if ran else "(denied)")
        run.before_next_request()
    report = "\n\n".join(f"[{i}] {text}" for i, text in enumerate(seen, 1))
    run.respond([{"type": "text", "text": f"All done: {run.prompt[:80]}\n\n{report}"}])
    return run.success()


def _mcp_request(proc: subprocess.Popen[str], msg_id: int, method: str, params: JSON) -> JSON:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}) + "\n")
    proc.stdin.flush()
    for line in proc.stdout:
        try:
            reply = json.loads(line)
        except ValueError:
            continue
        if isinstance(reply, dict) and reply.get("id") == msg_id:
            return reply
    raise OSError("the MCP server closed its output")


def mcp_call(opts: Options, tool: str, arguments: JSON) -> tuple[str | None, str, bool]:
    """(server, result text, is_error): TOOL called on the first --mcp-config stdio server listing it."""
    for value in opts.mcp_config:
        conf = load_json_arg(value).get("mcpServers") or {}
        for server, spec in conf.items():
            if not isinstance(spec, dict) or not isinstance(spec.get("command"), str):
                continue
            env = {**os.environ, **{k: str(v) for k, v in (spec.get("env") or {}).items()}}
            proc = subprocess.Popen([spec["command"], *spec.get("args", [])], env=env, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                    start_new_session=True)  # fmt: skip
            try:
                client = {"name": "claude-code", "version": VERSION}
                _mcp_request(proc, 1, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                                     "clientInfo": client})  # fmt: skip
                assert proc.stdin is not None
                proc.stdin.write(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}) + "\n")
                proc.stdin.flush()
                listed = _mcp_request(proc, 2, "tools/list", {}).get("result", {}).get("tools", [])
                if tool not in {t.get("name") for t in listed if isinstance(t, dict)}:
                    continue
                reply = _mcp_request(proc, 3, "tools/call", {"name": tool, "arguments": arguments})
                result = reply.get("result") or {}
                text = "\n".join(c.get("text", "") for c in result.get("content", []) if isinstance(c, dict))
                if "error" in reply:
                    return server, str(reply["error"].get("message", "")), True
                return server, text, bool(result.get("isError"))
            finally:
                if proc.stdin is not None:
                    proc.stdin.close()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return None, f"<tool_use_error>Error: No such tool available: {tool}</tool_use_error>", True


def steps_scenario(run: Run, steps: list[tuple[str, str]]) -> int:
    """``[[sh:CMD]]`` and ``[[mcp:TOOL:JSON]]`` steps in prompt order, then a report of every tool result."""
    seen: list[str] = []
    for k, (kind, arg) in enumerate(steps, 1):
        pre: list[JSON] = [{"type": "text", "text": f"Step {k} of {len(steps)}."}]
        if kind == "sh":

            def do_sh(command: str = arg) -> tuple[str, JSON]:
                try:
                    done = subprocess.run(["/bin/sh", "-c", command], cwd=run.cwd, capture_output=True, text=True,
                                          errors="replace", timeout=SH_TIMEOUT_SECONDS, start_new_session=True,
                                          stdin=subprocess.DEVNULL)  # fmt: skip
                    stdout, stderr = done.stdout, done.stderr
                except subprocess.TimeoutExpired as exc:
                    stdout, stderr = str(exc.stdout or ""), "Command timed out"
                content = stdout.rstrip("\n") + (("\n" + stderr.rstrip("\n")) if stderr.strip() else "")
                return content, {"stdout": stdout, "stderr": stderr, "interrupted": False, "isImage": False}

            ran = run.tool_round(pre, "Bash", {"command": arg, "description": f"Step {k}"}, (arg, ""), do_sh)
            seen.append(run.last_tool_output if ran else "(denied)")
        else:
            tool, _, raw_args = arg.partition(":")
            arguments = json.loads(raw_args) if raw_args.strip() else {}
            server, text, is_error = mcp_call(run.opts, tool, arguments)
            name = f"mcp__{server or 'unknown'}__{tool}"
            tool_use_id = _tool_id()
            run.respond([*pre, {"type": "tool_use", "id": tool_use_id, "name": name, "input": arguments}],
                        stop_reason="tool_use")  # fmt: skip
            allowed = run.permission_mode == "bypassPermissions" or any(
                r in (f"mcp__{server}", name) for r in run.allow_rules)  # fmt: skip
            if server is not None and (any(rule_matches(r, name, "") for r in run.deny_rules) or not allowed):
                message = f"Claude requested permissions to use {name}, but you haven't granted it yet."
                denial: JSON = {"tool_name": name, "tool_use_id": tool_use_id, "tool_input": arguments}
                run.denials.append(denial)
                run.emit(run.base("system", subtype="permission_denied", message=message, **denial))
                text, is_error = message, True
            run.tool_result(tool_use_id, text, is_error, text if is_error else [{"type": "text", "text": text}])
            seen.append(text)
        run.before_next_request()
    report = "\n\n".join(f"[{i}] {text}" for i, text in enumerate(seen, 1))
    run.respond([{"type": "text", "text": f"All done: {run.prompt[:80]}\n\n{report}"}])
    return run.success()


# --------------------------------------------------------------------------------------------------------- main


def fail(message: str, code: int = 1) -> NoReturn:
    raise UsageError(message, code)


def resolve_model(name: str | None) -> str:
    model = name or os.environ.get("ANTHROPIC_MODEL") or DEFAULT_MODEL
    return MODEL_ALIASES.get(model, model)


def mcp_servers(opts: Options) -> list[JSON]:
    servers: list[JSON] = []
    for value in opts.mcp_config:
        try:
            data = load_json_arg(value)
        except (OSError, ValueError) as exc:
            fail(f"Error: Invalid MCP configuration: {exc}")
        conf = data.get("mcpServers") if isinstance(data, dict) else None
        if not isinstance(conf, dict):
            fail("Error: Invalid MCP configuration: mcpServers: Does not adhere to MCP server configuration schema")
        for name, spec in conf.items():
            status = "failed"
            if isinstance(spec, dict) and isinstance(spec.get("command"), str):
                cmd = spec["command"]
                status = "connected" if (shutil.which(cmd) or Path(cmd).is_file()) else "failed"
            servers.append({"name": name, "status": status})
    return servers


def list_skills(cwd: str, config_dir: Path | None) -> list[str]:
    names: set[str] = set()
    roots = [Path(cwd) / ".claude" / "skills"] + ([config_dir / "skills"] if config_dir else [])
    for root in roots:
        try:
            names.update(p.parent.name for p in root.glob("*/SKILL.md"))
        except OSError:
            continue
    return sorted(names)


def list_agents(cwd: str, inline: JSON) -> list[str]:
    agents = list(BUILTIN_AGENTS)
    try:
        custom = sorted(p.stem for p in (Path(cwd) / ".claude" / "agents").glob("*.md"))
    except OSError:
        custom = []
    for name in [*custom, *inline]:
        if name not in agents:
            agents.append(name)
    return agents


def session_error(run: Run, message: str) -> int:
    """``--resume``/``--continue`` found nothing: a lone error result, exit 1. As the real CLI, the result keeps
    the session id that was asked for."""
    if run.opts.resume is not None:
        run.session_id = run.opts.resume
    line = run.result_line("error_during_execution", True, result=None, errors=[message],
                           terminal_reason="error", stop_reason=None)  # fmt: skip
    run.transcript = Transcript(None)
    return run.finish(line, 1)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, _on_sigint)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        return _main(argv)
    except UsageError as exc:
        sys.stderr.write(exc.message + "\n")
        sys.stderr.flush()
        return exc.code
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _main(argv: list[str]) -> int:
    opts = parse_args(argv)
    if opts.version:
        sys.stdout.write(VERSION_STRING + "\n")
        return 0
    if opts.help:
        sys.stdout.write(HELP_TEXT)
        return 0
    if not opts.print:
        fail("fake_claude: interactive mode is not faked; use -p/--print", 2)
    if opts.output_format == "stream-json" and not opts.verbose:
        fail("Error: When using --print, --output-format=stream-json requires --verbose")
    if opts.input_format != "text":
        fail(f"fake_claude: --input-format {opts.input_format} is not faked", 2)
    model = resolve_model(opts.model)
    if opts.fallback_model and resolve_model(opts.fallback_model) == model:
        fail("Error: Fallback model cannot be the same as the main model. "
             "Please specify a different model with --fallback-model.")  # fmt: skip
    if opts.session_id is not None and not UUID_RE.match(opts.session_id):
        fail("Error: Invalid session ID. Must be a valid UUID.")
    if opts.session_id and (opts.resume or opts.continue_) and not opts.fork_session:
        fail("Error: --session-id can only be used with --continue or --resume if --fork-session is also specified.")
    mode = "bypassPermissions" if opts.skip_permissions else (opts.permission_mode or "")
    if mode == "bypassPermissions" and os.geteuid() == 0 and os.environ.get("IS_SANDBOX") != "1":
        fail("--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons")
    flag_settings: JSON | None = None
    if opts.settings is not None:
        try:
            loaded = load_json_arg(opts.settings)
        except (OSError, ValueError) as exc:
            fail(f"Error: Invalid settings: {exc}")
        if not isinstance(loaded, dict):
            fail("Error: Invalid settings: expected a JSON object")
        flag_settings = loaded
    inline_agents: JSON = {}
    if opts.agents is not None:
        try:
            agents_val = json.loads(opts.agents)
        except ValueError as exc:
            fail(f"Error: Invalid agents JSON: {exc}")
        if not isinstance(agents_val, dict):
            fail("Error: Invalid agents JSON: expected an object")
        inline_agents = agents_val
    servers = mcp_servers(opts)

    prompt = opts.prompt
    if prompt is None:
        prompt = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    if not prompt.strip():
        fail("Error: Input must be provided either through stdin or as a prompt argument when using --print")

    cwd = os.getcwd()
    config_dir, state_file = config_paths()
    project_dir = config_dir / "projects" / project_dir_name(cwd) if config_dir else None
    state: JSON = (read_json_file(state_file) if state_file else None) or {}
    projects = state.get("projects") if isinstance(state.get("projects"), dict) else {}
    project_state = projects.get(cwd) if isinstance(projects, dict) else None
    trusted = isinstance(project_state, dict) and project_state.get("hasTrustDialogAccepted") is True

    # session: new, --session-id, --resume, --continue, --fork-session
    session_id = opts.session_id or _new_uuid()
    source: Path | None = None
    lookup_error: str | None = None
    if opts.resume is not None or opts.continue_:
        candidates = sorted(project_dir.glob("*.jsonl"), key=lambda p: p.stat().st_mtime) if (
            project_dir and opts.continue_ and project_dir.is_dir()) else []  # fmt: skip
        if opts.resume is not None:
            path = project_dir / f"{opts.resume}.jsonl" if project_dir else None
            source = path if path is not None and path.is_file() else None
            lookup_error = f"No conversation found with session ID: {opts.resume}"
        elif candidates:
            source = candidates[-1]
        else:
            lookup_error = "No conversation found to continue"
        if source is not None and not opts.fork_session:
            session_id = source.stem
    elif opts.session_id and project_dir and (project_dir / f"{opts.session_id}.jsonl").exists():
        fail(f"Error: Session ID {opts.session_id} is already in use.")

    run = Run(opts, prompt, cwd, session_id, model)
    if (opts.resume is not None or opts.continue_) and source is None:
        return session_error(run, lookup_error or "No conversation found")

    # permissions and tools
    user_settings = read_json_file(config_dir / "settings.json") if config_dir else None
    project_settings = [read_json_file(Path(cwd) / ".claude" / n) for n in ("settings.json", "settings.local.json")]
    run.allow_rules = [*opts.allowed_tools, *settings_rules(user_settings, "allow"),
                       *settings_rules(flag_settings, "allow")]  # fmt: skip
    run.deny_rules = [*opts.disallowed_tools, *settings_rules(user_settings, "deny"),
                      *settings_rules(flag_settings, "deny")]  # fmt: skip
    for ps in project_settings:
        run.deny_rules += settings_rules(ps, "deny")
        if trusted:
            run.allow_rules += settings_rules(ps, "allow")
    default_mode = None
    if flag_settings and isinstance(flag_settings.get("permissions"), dict):
        default_mode = flag_settings["permissions"].get("defaultMode")
    run.permission_mode = mode or (default_mode if default_mode in PERMISSION_MODES else "default")
    tools = list(BUILTIN_TOOLS)
    if opts.tools is not None and opts.tools != ["default"]:
        tools = [t for t in BUILTIN_TOOLS if t in opts.tools]
    bare_denied = {r for r in run.deny_rules if RULE_RE.match(r) and "(" not in r}
    run.tools = [t for t in tools if t not in bare_denied]
    run.work_dirs = [cwd, *(os.path.normpath(os.path.join(cwd, d)) for d in opts.add_dir)]

    sc = parse_scenario(prompt)
    run.cost_per_response = sc.cost
    run.noise = sc.noise
    run.per_run_totals = sc.per_run_totals

    # files: global state, transcript (a read-only or missing config dir saves nothing)
    if state_file is not None:
        now = _now_iso()
        state.setdefault("firstStartTime", now)
        state["numStartups"] = int(state.get("numStartups", 0)) + 1
        state.setdefault("installMethod", "native")
        state.setdefault("autoUpdates", False)
        state.setdefault("userID", uuid.uuid4().hex + uuid.uuid4().hex)
        projects = state.setdefault("projects", {})
        proj = projects.setdefault(cwd, {})
        for key, default in (("allowedTools", []), ("mcpContextUris", []), ("mcpServers", {}),
                             ("enabledMcpjsonServers", []), ("disabledMcpjsonServers", []),
                             ("hasTrustDialogAccepted", False), ("projectOnboardingSeenCount", 0)):  # fmt: skip
            proj.setdefault(key, default)
        if not write_json_atomic(state_file, state):
            state_file = None
    if project_dir is not None and not opts.no_persistence:
        transcript_path = project_dir / f"{session_id}.jsonl"
        if source is not None:
            entries, saved = read_transcript(source)
            if opts.fork_session:
                run.transcript = Transcript(transcript_path)
                for entry in entries:
                    run.transcript.append({**entry, "sessionId": session_id})
            else:
                run.totals = saved
                run.transcript = Transcript(transcript_path)
            run.transcript.last_uuid = next((str(e["uuid"]) for e in reversed(entries) if "uuid" in e), None)
        else:
            run.transcript = Transcript(transcript_path)
    elif source is not None and not opts.fork_session:
        run.totals = read_transcript(source)[1]

    if sc.stderr is not None:
        sys.stderr.write(sc.stderr + "\n")
        sys.stderr.flush()

    api_key_source = "ANTHROPIC_API_KEY" if os.environ.get("ANTHROPIC_API_KEY") else "none"
    skills = list_skills(cwd, config_dir)
    init = run.base(
        "system", subtype="init", cwd=cwd, tools=run.tools, mcp_servers=servers, model=model,
        permissionMode=run.permission_mode, slash_commands=[*SLASH_COMMANDS, *skills], apiKeySource=api_key_source,
        claude_code_version=VERSION, output_style="default", agents=list_agents(cwd, inline_agents), skills=skills,
        plugins=[],
    )  # fmt: skip
    code = 1
    try:
        run.record("user", {"role": "user", "content": prompt})
        run.emit(init)
        run.noise_lines("start")
        authed = any(os.environ.get(k) for k in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN",
                                                  "CLAUDE_CODE_OAUTH_TOKEN", "CLAUDE_CODE_USE_BEDROCK"))  # fmt: skip
        if os.environ.get("FAKE_CLAUDE_REQUIRE_AUTH") == "1" and not authed:
            code = api_error(run, AUTH_ERROR_TEXT)
        else:
            if sc.helper_input_tokens is not None:
                run.helper_call(sc.helper_input_tokens)
            code = scenario_body(run, sc)
    except Interrupted:
        message: JSON = {"role": "user", "content": [{"type": "text", "text": INTERRUPT_TEXT}]}
        run.record("user", message)
        run.emit(run.base("user", message=message, parent_tool_use_id=None), check=False)
        line = run.result_line("error_during_execution", True, result=None, errors=["Request interrupted by user"],
                               terminal_reason="aborted_streaming", stop_reason=None)  # fmt: skip
        code = run.finish(line, 0)
    except StopRun as stop:
        line = run.result_line(stop.subtype, True, result=None, errors=stop.errors,
                               terminal_reason=stop.terminal_reason, stop_reason=None)  # fmt: skip
        code = run.finish(line, 1)

    if sc.linger:
        time.sleep(sc.linger)  # after the result line; a SIGINT now only sets the flag (the run is over)
    if state_file is not None:
        latest = read_json_file(state_file) or state
        proj = latest.setdefault("projects", {}).setdefault(cwd, {})
        proj.update({
            "lastSessionId": session_id, "lastCost": run.totals.cost_usd,
            "lastAPIDuration": run.api_ms, "lastDuration": int((time.monotonic() - run.started) * 1000),
            "lastTotalInputTokens": run.run_input, "lastTotalOutputTokens": run.run_output,
            "lastModelUsage": run.totals.model_usage,
        })  # fmt: skip
        write_json_atomic(state_file, latest)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
