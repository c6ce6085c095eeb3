"""The agents a task can run as: three built-ins (brain, planning, executor) and any defined at run time.

A built-in's definition here is its default; the registry may hold an edited copy (reset = delete the copy).
Each built-in's instructions live in the runner image as Claude Code files (`.claude/CLAUDE.md`); `instructions`
in the registry are appended to them. Permission rules are enforced by CLI flags, not by words.
"""

from __future__ import annotations

from agent_machine.models import AgentSpec, PermissionMode, SkillSpec
from agent_machine.store import registry

BRAIN = "brain"
PLANNING = "planning"
EXECUTOR = "executor"

# Tools that change files or run arbitrary commands: planning may never use them.
WRITE_TOOLS = ["Edit", "Write", "MultiEdit", "NotebookEdit", "Bash"]

BUILTIN_AGENTS: dict[str, AgentSpec] = {
    BRAIN: AgentSpec(
        name=BRAIN,
        description="Routes work: answers simple questions itself, delegates issues and code changes.",
        allowed_tools=["Read", "Glob", "Grep", "WebFetch", "mcp__machine"],
        disallowed_tools=["Edit", "Write", "MultiEdit", "NotebookEdit"],
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
            "mcp__machine",
        ],
        disallowed_tools=WRITE_TOOLS,
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


def get_agent(name: str) -> AgentSpec:
    """The agent as it runs now: the registry's copy if any, else the built-in default."""
    stored = registry.get("agent", name, AgentSpec)
    if stored is not None:
        return stored.model_copy(update={"builtin": name in BUILTIN_AGENTS})
    if name in BUILTIN_AGENTS:
        return BUILTIN_AGENTS[name]
    raise UnknownAgent(name)


def list_agents() -> list[AgentSpec]:
    stored = {a.name: a for a in registry.list_kind("agent", AgentSpec)}
    merged = {**BUILTIN_AGENTS, **stored}
    return [merged[n].model_copy(update={"builtin": n in BUILTIN_AGENTS}) for n in sorted(merged)]


def skills_for(agent: str) -> list[SkillSpec]:
    return [s for s in registry.list_kind("skill", SkillSpec) if agent in s.agents or "*" in s.agents]
