"""The fake ``claude`` CLI (tests/fakes/fake_claude.py), run as a real subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

FAKE = Path(__file__).resolve().parents[1] / "fakes" / "fake_claude.py"
COST = 0.00423  # fake_claude.COST_PER_RESPONSE_USD
STREAM = ["--output-format", "stream-json", "--verbose"]
TIMEOUT = 10.0

pytestmark = pytest.mark.timeout(30)


@dataclass
class Workspace:
    cwd: Path
    config: Path
    home: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home)}
        env["CLAUDE_CONFIG_DIR"] = str(self.config)
        env.update(extra)
        return env

    def project_dir(self) -> Path:
        return self.config / "projects" / re.sub(r"[^a-zA-Z0-9]", "-", str(self.cwd))


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    @property
    def result(self) -> dict[str, Any]:
        last = self.lines[-1]
        assert last["type"] == "result"
        return last


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    w = Workspace(cwd=tmp_path / "repo", config=tmp_path / "config", home=tmp_path / "home")
    for p in (w.cwd, w.home):
        p.mkdir()
    return w


def run(ws: Workspace, prompt: str | None, *args: str, env: dict[str, str] | None = None) -> Outcome:
    argv = [sys.executable, str(FAKE)]
    if prompt is not None:
        argv += ["-p", prompt]
    proc = subprocess.run(
        [*argv, *args],
        cwd=ws.cwd,
        env=env if env is not None else ws.env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def start(ws: Workspace, prompt: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(FAKE), "-p", prompt, *STREAM, *args],
        cwd=ws.cwd,
        env=ws.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_until(stream: IO[str], type_: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    while True:
        line = stream.readline()
        assert line, f"EOF before a {type_} line; got {seen}"
        seen.append(json.loads(line))
        if seen[-1]["type"] == type_:
            return seen


def test_executable_with_shebang() -> None:
    assert os.access(FAKE, os.X_OK)
    assert FAKE.read_text().startswith("#!/usr/bin/env python3\n")


def test_version(ws: Workspace) -> None:
    out = run(ws, None, "--version")
    assert (out.code, out.stdout) == (0, "2.1.197 (Claude Code)\n")


def test_default_run_shapes(ws: Workspace) -> None:
    out = run(ws, "Please check the thing", *STREAM, "--model", "claude-sonnet-4-5")
    assert out.code == 0, out.stderr
    lines = out.lines
    for line in lines:
        assert {"type", "session_id", "uuid"} <= line.keys()
    init = lines[0]
    assert (init["type"], init["subtype"]) == ("system", "init")
    assert init["cwd"] == str(ws.cwd)
    assert init["claude_code_version"] == "2.1.197"
    assert init["model"] == "claude-sonnet-4-5"
    assert init["permissionMode"] == "default"
    for key in ("tools", "mcp_servers", "slash_commands", "apiKeySource", "output_style", "agents", "skills"):
        assert key in init
    uuid.UUID(init["session_id"])
    assert {line["session_id"] for line in lines} == {init["session_id"]}

    assistants = [line for line in lines if line["type"] == "assistant"]
    first_id = assistants[0]["message"]["id"]
    blocks = [a["message"]["content"] for a in assistants if a["message"]["id"] == first_id]
    assert [b[0]["type"] for b in blocks] == ["thinking", "text", "tool_use"]
    assert all(len(a["message"]["content"]) == 1 and a["message"]["stop_reason"] is None for a in assistants)
    tool_use = blocks[2][0]
    assert tool_use["name"] == "Bash" and tool_use["input"]["command"] == "echo hello-from-tool"

    user = next(line for line in lines if line["type"] == "user")
    tr = user["message"]["content"][0]
    assert (tr["type"], tr["tool_use_id"], tr["content"], tr["is_error"]) == (
        "tool_result",
        tool_use["id"],
        "hello-from-tool",
        False,
    )
    assert user["tool_use_result"]["stdout"] == "hello-from-tool"

    res = out.result
    assert [line["type"] for line in lines].count("result") == 1
    assert (res["subtype"], res["is_error"], res["num_turns"]) == ("success", False, 2)
    assert res["result"] == "All done: Please check the thing"
    assert assistants[-1]["message"]["content"][0]["text"] == res["result"]
    assert res["total_cost_usd"] == pytest.approx(2 * COST)
    assert (res["usage"]["input_tokens"], res["usage"]["output_tokens"]) == (2400, 84)
    mu = res["modelUsage"]["claude-sonnet-4-5"]
    assert (mu["inputTokens"], mu["outputTokens"]) == (2400, 84)
    assert mu["costUSD"] == pytest.approx(2 * COST)
    assert res["stop_reason"] == "end_turn" and res["terminal_reason"] == "completed"
    assert res["permission_denials"] == []
    for key in ("duration_ms", "duration_api_ms", "uuid"):
        assert key in res

    transcript = ws.project_dir() / f"{init['session_id']}.jsonl"
    assert transcript.is_file()
    assert (ws.config / ".claude.json").is_file()
    assert not (ws.home / ".claude.json").exists()


def test_home_config_when_no_config_dir(ws: Workspace) -> None:
    env = ws.env()
    del env["CLAUDE_CONFIG_DIR"]
    out = run(ws, "[[text]]", *STREAM, env=env)
    assert out.code == 0
    sid = out.result["session_id"]
    name = re.sub(r"[^a-zA-Z0-9]", "-", str(ws.cwd))
    assert (ws.home / ".claude" / "projects" / name / f"{sid}.jsonl").is_file()
    assert (ws.home / ".claude.json").is_file()


def test_resume_continues_cumulative_cost(ws: Workspace) -> None:
    first = run(ws, "[[text:one]]", *STREAM)
    assert first.code == 0
    sid = first.result["session_id"]
    assert first.result["total_cost_usd"] == pytest.approx(COST)

    second = run(ws, "go on", *STREAM, "--resume", sid)
    assert second.code == 0, second.stderr
    res = second.result
    assert second.lines[0]["session_id"] == sid and res["session_id"] == sid
    assert res["total_cost_usd"] == pytest.approx(3 * COST)
    mu = res["modelUsage"]["claude-sonnet-4-5"]
    assert mu["costUSD"] == pytest.approx(3 * COST)
    assert (mu["inputTokens"], mu["outputTokens"]) == (3600, 126)
    # per run: usage and turns
    assert (res["usage"]["input_tokens"], res["num_turns"]) == (2400, 2)

    third = run(ws, "[[text]]", *STREAM, "--resume", sid, "--model", "opus")
    res3 = third.result
    assert res3["total_cost_usd"] == pytest.approx(4 * COST)
    assert set(res3["modelUsage"]) == {"claude-sonnet-4-5", "claude-opus-4-1"}


def test_unknown_resume_id(ws: Workspace) -> None:
    out = run(ws, "hello", *STREAM, "--resume", "0000-nope")
    assert out.code == 1
    assert len(out.lines) == 1
    res = out.result
    assert (res["subtype"], res["is_error"], res["num_turns"], res["total_cost_usd"]) == (
        "error_during_execution",
        True,
        0,
        0,
    )
    assert res["errors"] == ["No conversation found with session ID: 0000-nope"]
    assert "result" not in res


def test_session_id_flag_invalid_and_in_use(ws: Workspace) -> None:
    sid = str(uuid.uuid4())
    out = run(ws, "[[text]]", *STREAM, "--session-id", sid)
    assert out.code == 0 and out.result["session_id"] == sid
    again = run(ws, "[[text]]", *STREAM, "--session-id", sid)
    assert (again.code, again.stdout) == (1, "")
    assert "already in use" in again.stderr
    bad = run(ws, "[[text]]", *STREAM, "--session-id", "not-a-uuid")
    assert (bad.code, bad.stdout) == (1, "")


def test_unwritable_config_dir_still_succeeds(ws: Workspace) -> None:
    blocker = ws.cwd.parent / "a-file"
    blocker.write_text("x")
    env = ws.env(CLAUDE_CONFIG_DIR=str(blocker / "config"))
    out = run(ws, "[[text]]", *STREAM, env=env)
    assert out.code == 0 and out.result["subtype"] == "success"
    again = run(ws, "[[text]]", *STREAM, "--resume", out.result["session_id"], env=env)
    assert again.code == 1 and again.result["subtype"] == "error_during_execution"


def test_sigint_during_hang_reports_cost_and_exits_0(ws: Workspace) -> None:
    proc = start(ws, "[[hang]]")
    try:
        assert proc.stdout is not None
        seen = read_until(proc.stdout, "assistant")
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    lines = seen + [json.loads(line) for line in rest.splitlines() if line.strip()]
    assert proc.returncode == 0
    user, res = lines[-2], lines[-1]
    assert user["type"] == "user"
    assert user["message"]["content"][0]["text"] == "[Request interrupted by user]"
    assert (res["type"], res["subtype"], res["is_error"]) == ("result", "error_during_execution", True)
    assert res["terminal_reason"] == "aborted_streaming"
    assert res["errors"] == ["Request interrupted by user"]
    assert res["total_cost_usd"] == pytest.approx(COST)

    # the interrupted run was saved: resuming continues its cost
    after = run(ws, "[[text]]", *STREAM, "--resume", res["session_id"])
    assert after.result["total_cost_usd"] == pytest.approx(2 * COST)


def test_sigint_during_slow_start(ws: Workspace) -> None:
    proc = start(ws, "[[slow:30]] [[text]]")
    try:
        assert proc.stdout is not None
        read_until(proc.stdout, "system")
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode == 0
    res = json.loads(rest.splitlines()[-1])
    assert res["terminal_reason"] == "aborted_streaming"
    assert res["total_cost_usd"] == 0 and res["num_turns"] == 0


def test_sigterm_gives_no_result(ws: Workspace) -> None:
    proc = start(ws, "[[hang]]")
    try:
        assert proc.stdout is not None
        read_until(proc.stdout, "assistant")
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGTERM
    assert '"result"' not in rest


def test_slow_delays_first_assistant_line(ws: Workspace) -> None:
    t0 = time.monotonic()
    out = run(ws, "[[slow:0.3]] [[text:late]]", *STREAM)
    assert time.monotonic() - t0 >= 0.3
    assert out.result["result"] == "late"


def test_max_turns(ws: Workspace) -> None:
    out = run(ws, "[[turns:3]]", *STREAM, "--max-turns", "2")
    assert out.code == 1
    res = out.result
    assert (res["subtype"], res["is_error"], res["num_turns"]) == ("error_max_turns", True, 2)
    assert "result" not in res and res["errors"]
    assert res["total_cost_usd"] == pytest.approx(2 * COST)

    ok = run(ws, "[[turns:3]]", *STREAM, "--max-turns", "4")
    assert ok.code == 0
    assert (ok.result["num_turns"], ok.result["result"]) == (4, "Finished 3 tool rounds.")


def test_max_budget(ws: Workspace) -> None:
    out = run(ws, "[[cost:0.5]] do it", *STREAM, "--max-budget-usd", "0.4")
    assert out.code == 1
    res = out.result
    assert (res["subtype"], res["is_error"]) == ("error_max_budget_usd", True)
    assert res["total_cost_usd"] == pytest.approx(0.5)
    assert "result" not in res and res["errors"]


def test_unknown_flag(ws: Workspace) -> None:
    out = run(ws, "hi", *STREAM, "--x")
    assert (out.code, out.stdout) == (1, "")
    assert "error: unknown option '--x'" in out.stderr


def test_stream_json_requires_verbose(ws: Workspace) -> None:
    out = run(ws, "hi", "--output-format", "stream-json")
    assert (out.code, out.stdout) == (1, "")
    assert "--verbose" in out.stderr


def test_crash(ws: Workspace) -> None:
    out = run(ws, "[[crash]]", *STREAM)
    assert out.code == 3
    assert "fatal: simulated crash" in out.stderr
    types = [line["type"] for line in out.lines]
    assert types == ["system", "assistant"]


def test_write_creates_file(ws: Workspace) -> None:
    out = run(ws, "[[write:sub/out.txt:hello world]]", *STREAM, "--permission-mode", "acceptEdits")
    assert out.code == 0
    assert (ws.cwd / "sub" / "out.txt").read_text() == "hello world"
    assert out.result["permission_denials"] == []
    assert out.result["result"] == "Wrote sub/out.txt."


@pytest.mark.parametrize(
    "args",
    [("--permission-mode", "plan"), ("--disallowedTools", "Read,Write"), ("--disallowedTools", "Read", "Edit")],
)
def test_write_blocked(ws: Workspace, args: tuple[str, ...]) -> None:
    out = run(ws, "[[write:out.txt:nope]]", *STREAM, *args)
    assert out.code == 0
    assert not (ws.cwd / "out.txt").exists()
    lines = out.lines
    assert any(line["type"] == "system" and line.get("subtype") == "permission_denied" for line in lines)
    result_block = next(line for line in lines if line["type"] == "user")["message"]["content"][0]
    assert result_block["is_error"] is True
    assert [d["tool_name"] for d in out.result["permission_denials"]] == ["Write"]


def test_dont_ask_needs_allow_rule(ws: Workspace) -> None:
    denied = run(ws, "[[write:a.txt:x]]", *STREAM, "--permission-mode", "dontAsk")
    assert not (ws.cwd / "a.txt").exists() and denied.result["permission_denials"]
    allowed = run(ws, "[[write:a.txt:x]]", *STREAM, "--permission-mode", "dontAsk", "--allowedTools", "Write")
    assert (ws.cwd / "a.txt").read_text() == "x" and allowed.result["permission_denials"] == []
    bash = run(ws, "hi", *STREAM, "--permission-mode", "dontAsk", "--allowedTools", "Bash(echo *)")
    assert bash.result["permission_denials"] == []


def test_allowed_tools_forms_and_prompt_swallowing(ws: Workspace) -> None:
    out = run(ws, "[[args]]", "--allowedTools", "Read", "Edit", *STREAM)
    assert json.loads(out.result["result"])[-6:-3] == ["--allowedTools", "Read", "Edit"]
    # a variadic option eats the following positional prompt, as the real CLI does
    swallowed = run(ws, None, "--allowedTools", "Read", "[[text]]", "-p", *STREAM)
    assert (swallowed.code, swallowed.stdout) == (1, "")


def test_noise_and_unknown_types(ws: Workspace) -> None:
    out = run(ws, "[[noise]] [[text:ok]]", *STREAM)
    assert out.code == 0
    raw = out.stdout.splitlines()
    assert any(line.startswith("npm WARN") for line in raw)
    parsed = []
    for line in raw:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            continue
    types = {p["type"] for p in parsed}
    assert {"rate_limit_event", "result"} <= types
    assert any(p["type"] == "system" and p.get("subtype") == "status" for p in parsed)
    assert parsed[-1]["type"] == "result" and parsed[-1]["result"] == "ok"


def test_lines_huge_flood_nonewline(ws: Workspace) -> None:
    lines = run(ws, "[[lines:50]]", *STREAM)
    texts = [line["message"]["content"][0]["text"] for line in lines.lines if line["type"] == "assistant"]
    assert texts == [f"line {i} of 50" for i in range(1, 51)] and lines.result["num_turns"] == 1

    huge = run(ws, "[[huge:300000]]", *STREAM)
    big = [line for line in huge.lines if line["type"] == "assistant"]
    assert len(big) == 1 and len(big[0]["message"]["content"][0]["text"]) == 300000

    flood = run(ws, "[[flood:0.5]]", *STREAM)
    assert flood.code == 0 and len(flood.stdout) >= 512 * 1024
    assert flood.result["result"].startswith("flood done:")

    nonl = run(ws, "[[nonewline:0.25]]", *STREAM)
    assert nonl.code == 0
    tail = nonl.stdout.split("\n")[-1]
    assert len(tail) == 256 * 1024 and set(tail) == {"x"}


def test_error_and_stderr_notice(ws: Workspace) -> None:
    err = run(ws, "[[error]]", *STREAM)
    assert err.code == 1
    res = err.result
    assert (res["subtype"], res["is_error"]) == ("success", True)
    assert res["result"].startswith("API Error: 500")

    notice = run(ws, "[[stderr:Model retiring soon]] [[text]]", *STREAM)
    assert notice.code == 0 and "Model retiring soon" in notice.stderr
    assert notice.result["is_error"] is False


def test_env_and_args(ws: Workspace) -> None:
    out = run(ws, "[[env]]", *STREAM, env=ws.env(ONLY_THIS="1"))
    names = json.loads(out.result["result"])
    assert names == sorted(names) and "ONLY_THIS" in names and "CLAUDE_CONFIG_DIR" in names
    args = run(ws, "[[args]]", *STREAM, "--max-turns", "5")
    assert json.loads(args.result["result"]) == ["-p", "[[args]]", *STREAM, "--max-turns", "5"]


def test_skills_in_init(ws: Workspace) -> None:
    skill = ws.cwd / ".claude" / "skills" / "repo-skill"
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_text("---\nname: repo-skill\ndescription: x\n---\n")
    out = run(ws, "[[text]]", *STREAM)
    assert out.lines[0]["skills"] == ["repo-skill"]


def test_does_not_read_stdin_when_prompt_given(ws: Workspace) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(FAKE), "-p", "[[text]]", *STREAM],
        cwd=ws.cwd,
        env=ws.env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.wait(timeout=TIMEOUT) == 0  # stdin never closed
    finally:
        proc.kill()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_partial_messages(ws: Workspace) -> None:
    out = run(ws, "[[text:streamed text]]", *STREAM, "--include-partial-messages")
    events = [line for line in out.lines if line["type"] == "stream_event"]
    deltas = "".join(e["event"]["delta"]["text"] for e in events if e["event"]["type"] == "content_block_delta")
    assert deltas == "streamed text"
    assert out.result["result"] == "streamed text"


@pytest.mark.skipif(os.geteuid() != 0, reason="root-only refusal")
def test_bypass_refused_as_root_unless_sandbox(ws: Workspace) -> None:
    out = run(ws, "[[text]]", *STREAM, "--dangerously-skip-permissions")
    assert (out.code, out.stdout) == (1, "")
    ok = run(ws, "[[text]]", *STREAM, "--dangerously-skip-permissions", env=ws.env(IS_SANDBOX="1"))
    assert ok.code == 0 and ok.lines[0]["permissionMode"] == "bypassPermissions"
