"""A task's folders: the agent's tree and skills, the repository clone, and the CLI's own HOME and config.

Layout under the work root (RUNNER_WORK_ROOT, /tmp/agent-machine on Lambda):

    tasks/<task_id>/{home,config,tmp}     one HOME / CLAUDE_CONFIG_DIR per task (sharing one corrupts it)
    s/<session_id>/w/<agent>/             the running agent's tree, and only that one: its .claude/CLAUDE.md
                                          and skills (brain, planning, executor or a custom agent's name)
    s/<session_id>/w/<agent>/repo/        the task's repository, when it has one

Only the running agent's own files are materialised, each agent in a folder of its own name: no agent's folder
is ever inside another's. (The CLI loads CLAUDE.md from the cwd and every ancestor folder, so a planning run
under the brain's folder would also get the brain's instructions and skills.) In the runner's source tree
(runner_container/agents) the brain is the root and the others are under agents/<name>; `agent_subdir` maps
an agent to its files there, and the brain's copy leaves the agents/ folder out.

The working folder is made fresh for every task but its PATH is stable per session: the CLI files a session's
transcript under a name derived from the cwd, so a `--resume` on another runner needs the same cwd path.
The agent's instructions and skills sit in `<agent dir>/.claude/` (loaded when that folder is the cwd); with a
repository the cwd is the clone, so they are also put in the task's config folder (the CLI's user level), and
the repository's own `.claude/` keeps working.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from agent_machine.models import AgentSpec, RepoContext, SkillSpec, Task
from agent_machine.settings import get_settings

from runner import config

# The built-in agents' folders in runner_container/agents (any other agent gets agents/<name>).
BUILTIN_DIRS = {"brain": ".", "planning": "agents/planning", "executor": "agents/executor"}
# In the source tree, the folder holding the non-brain agents (left out of the brain's copy).
NESTED_AGENTS_DIR = "agents"

_SAFE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/\-]{0,250}$")
_SHA = re.compile(r"^[0-9a-f]{7,40}$")
REAP_SECONDS = 5.0  # how long killed git helpers are waited for


class WorkspaceError(RuntimeError):
    """The workspace could not be prepared (e.g. the clone failed); the message is safe to show."""


def munge(path: Path | str) -> str:
    """The CLI's project folder name for a cwd: every non-alphanumeric character becomes '-'."""
    return re.sub(r"[^a-zA-Z0-9]", "-", str(path))


@dataclass(frozen=True)
class Workspace:
    task_dir: Path
    home: Path
    config_dir: Path
    tmp: Path
    work: Path
    agent_dir: Path
    cwd: Path
    repo_dir: Path | None = None

    def transcript_path(self, cli_session_id: str) -> Path:
        return self.config_dir / "projects" / munge(self.cwd) / f"{cli_session_id}.jsonl"

    def find_transcript(self, cli_session_id: str) -> Path | None:
        expected = self.transcript_path(cli_session_id)
        if expected.is_file():
            return expected
        found = sorted((self.config_dir / "projects").glob(f"*/{cli_session_id}.jsonl"))
        return found[0] if found else None

    def cleanup(self) -> None:
        shutil.rmtree(self.task_dir, ignore_errors=True)
        shutil.rmtree(self.work, ignore_errors=True)


def agent_subdir(agent: str) -> Path:
    """Where an agent's files are in the runner's source tree: brain at the root, others under agents/<name>."""
    return Path(BUILTIN_DIRS.get(agent, f"agents/{agent}"))


def run_subdir(agent: str) -> Path:
    """Where an agent works inside a run's folder `w/`: a folder of its own name, a sibling of every other
    agent's (never one inside another). Stable per session and agent: the cwd path names the transcripts."""
    return Path(agent)


def _copy_agent_tree(source: Path, agent: str, dest: Path) -> None:
    """The agent's own files from the source tree into dest (dest is created, even when there is nothing)."""
    sub = agent_subdir(agent)
    tree = source / sub
    if source.is_dir() and tree.is_dir():
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        if sub == Path("."):

            def ignore_nested(folder: str, names: list[str]) -> set[str]:
                skipped = set(ignore(folder, names))
                if Path(folder) == tree:
                    skipped.add(NESTED_AGENTS_DIR)  # the other agents' trees
                return skipped

            shutil.copytree(tree, dest, symlinks=False, ignore=ignore_nested)
        else:
            shutil.copytree(tree, dest, symlinks=False, ignore=ignore)
    else:
        dest.mkdir(parents=True)


def skill_markdown(skill: SkillSpec) -> str:
    """SKILL.md: front matter (name, description) and the body. A body with its own front matter is kept as is."""
    body = skill.content.lstrip("\ufeff")
    if body.startswith("---\n"):
        return body if body.endswith("\n") else body + "\n"
    description = " ".join(skill.description.split()) or skill.name
    # JSON strings are valid YAML double-quoted scalars: no escaping surprises in the front matter.
    return f"---\nname: {skill.name}\ndescription: {json.dumps(description)}\n---\n\n{body.rstrip()}\n"


def custom_agent_markdown(agent: AgentSpec) -> str:
    lines = [f"# The {agent.name} agent", ""]
    if agent.description:
        lines += [agent.description, ""]
    lines += [
        "You run headless on the agent machine: nobody answers questions while you work. Do the task with the",
        "tools you have, say plainly what you could not do and why, and end with a short, complete answer.",
    ]
    return "\n".join(lines) + "\n"


def _write_skills(target: Path, skills: list[SkillSpec]) -> None:
    for skill in skills:
        folder = target / skill.name  # names are validated (RegistryName): no path traversal
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "SKILL.md").write_text(skill_markdown(skill), encoding="utf-8")


def _fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o700)
    return path


def prepare(task: Task, agent: AgentSpec, skills: list[SkillSpec], *, root: Path | None = None) -> Workspace:
    """The agent tree, skills and private folders (the clone comes after, in `clone_repository`)."""
    root = (root or config.work_root()).resolve()  # the CLI names transcripts after the real cwd path
    task_dir = _fresh_dir(root / "tasks" / task.task_id)
    home, config_dir, tmp = (task_dir / name for name in ("home", "config", "tmp"))
    for folder in (home, config_dir, tmp):
        folder.mkdir(mode=0o700)
    work = root / "s" / task.session_id / "w"
    shutil.rmtree(work, ignore_errors=True)
    work.parent.mkdir(parents=True, exist_ok=True)
    work.mkdir(mode=0o700)
    agent_dir = work / run_subdir(agent.name)
    _copy_agent_tree(config.agents_dir(), agent.name, agent_dir)
    claude_dir = agent_dir / ".claude"
    claude_dir.mkdir(parents=True, exist_ok=True)
    if not (claude_dir / "CLAUDE.md").exists():
        (claude_dir / "CLAUDE.md").write_text(custom_agent_markdown(agent), encoding="utf-8")
    _write_skills(claude_dir / "skills", skills)
    cwd = agent_dir
    repo_dir = None
    if task.repo is not None and task.repo.clone_url:
        repo_dir = agent_dir / "repo"
        cwd = repo_dir
        # The clone is the cwd, so the agent's own files go to the CLI's user level as well.
        shutil.copy2(claude_dir / "CLAUDE.md", config_dir / "CLAUDE.md")
        if (claude_dir / "skills").is_dir():
            shutil.copytree(claude_dir / "skills", config_dir / "skills", dirs_exist_ok=True)
    return Workspace(
        task_dir=task_dir,
        home=home,
        config_dir=config_dir,
        tmp=tmp,
        work=work,
        agent_dir=agent_dir,
        cwd=cwd,
        repo_dir=repo_dir,
    )


# --------------------------------------------------------------------------------------------------- the clone


def token_origin(clone_url: str) -> str | None:
    """The origin (scheme://host[:port]) a GitHub token may be sent to for this clone URL, or None: github.com
    over https when GITHUB_API_URL is api.github.com, else exactly the origin of GITHUB_API_URL (GitHub
    Enterprise serves its API and its repositories from one host). Never a URL with credentials of its own."""
    parts = urlsplit(clone_url)
    if not parts.hostname or parts.username is not None or parts.password is not None:
        return None
    api = urlsplit(get_settings().github_api_url)
    if api.hostname == "api.github.com":
        ok = parts.scheme == "https" and parts.netloc.lower() == "github.com"
    else:
        ok = parts.scheme in ("https", "http") and (parts.scheme, parts.netloc.lower()) == (
            api.scheme,
            api.netloc.lower(),
        )
    return f"{parts.scheme}://{parts.netloc.lower()}" if ok else None


def git_auth_env(clone_url: str, token: str | None) -> dict[str, str]:
    """git configuration through the environment of the runner's own git (never the URL, argv, .git/config or
    the CLI): an Authorization header for the repository's origin only."""
    origin = token_origin(clone_url) if token else None
    if not origin or not token:
        return {}
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": f"http.{origin}/.extraheader",
        "GIT_CONFIG_VALUE_0": f"AUTHORIZATION: basic {basic}",
    }


def _git_env(ws: Workspace, auth: dict[str, str]) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(ws.home),
        "TMPDIR": str(ws.tmp),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "LANG": "C.UTF-8",
    }
    env.update(auth)
    return env


# --------------------------------------------------------------------------------------------------- reaping


def _group_members(pgid: int) -> dict[int, int]:
    """pid -> ppid of every process in process group `pgid` but its leader (zombies included), from /proc."""
    members: dict[int, int] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == pgid:
                continue
            try:
                raw = Path(f"/proc/{entry.name}/stat").read_bytes()
            except OSError:
                continue
            fields = raw[raw.rfind(b")") + 2 :].split()  # the command name may hold spaces and ')'
            with contextlib.suppress(IndexError, ValueError):
                if int(fields[2]) == pgid:
                    members[int(entry.name)] = int(fields[1])
    return members


def reap_group(pgid: int, *, timeout: float = REAP_SECONDS) -> None:
    """After the process group of a killed git (its leader already waited for): wait for its other members.

    git runs helpers (git-remote-https, index-pack, ...) in its group; killed with it, they outlive their parent
    by an instant and are re-parented to this runner, a child subreaper, which must wait for them or they stay
    zombies. Members re-parented elsewhere (init, when the runner is no subreaper) are not ours to reap."""
    me = os.getpid()
    end = time.monotonic() + timeout
    while True:
        members = _group_members(pgid)
        pending = {pid for pid, ppid in members.items() if ppid in (me, pgid) or ppid in members}
        for pid in pending:
            if members[pid] != me:
                continue
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if not pending or time.monotonic() >= end:
            return
        time.sleep(0.01)


def end_group(pgid: int) -> None:
    """Once a git (the leader of process group `pgid`, started with start_new_session) has exited and been
    waited for: kill what is left of its group and reap it. A git that dies of an error does not always wait
    for its remote helper, which then lingers or stays a zombie of this subreaper."""
    if _group_members(pgid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        reap_group(pgid)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """Kill git and its helpers (git-remote-https holds the pipes: asyncio's wait() waits for them to close),
    then reap the helpers that were re-parented to this runner."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), 5.0)
    await asyncio.to_thread(reap_group, proc.pid)


async def _git(args: list[str], *, cwd: Path, env: dict[str, str], secret: str | None, deadline: float) -> str:
    """Run git; its output when it succeeds. Killed (with everything it started, reaped) on timeout or cancel."""
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=str(cwd),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        left = deadline - asyncio.get_running_loop().time()
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=max(1.0, left))
    except TimeoutError:
        await asyncio.shield(_kill(proc))
        raise WorkspaceError(f"git {args[0]} timed out") from None
    except asyncio.CancelledError:  # the task was stopped while cloning
        await asyncio.shield(_kill(proc))
        raise
    await asyncio.to_thread(end_group, proc.pid)
    text = out.decode("utf-8", errors="replace")
    if proc.returncode != 0:
        if secret:
            text = text.replace(secret, "***")
        tail = "\n".join(text.strip().splitlines()[-8:])
        raise WorkspaceError(f"git {args[0]} failed (exit {proc.returncode}): {tail}")
    return text


async def clone_repository(ws: Workspace, repo: RepoContext, token: str | None) -> str | None:
    """A shallow clone of the task's repository at its ref into ws.repo_dir (the CLI's cwd); returns the commit
    checked out (what the agent's work starts from).

    The token is only in the environment of this git (an http.<origin>.extraheader): the URL saved in the clone's
    .git/config carries none, and the CLI's environment gets none (the runner pushes: runner/publish.py)."""
    assert ws.repo_dir is not None and repo.clone_url
    url = repo.clone_url
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise WorkspaceError("refusing a clone URL with credentials in it")
    ref = repo.ref
    if ref is not None and not _SAFE_REF.match(ref):
        raise WorkspaceError(f"refusing the unusual ref {ref!r}")
    if ref and ref.startswith("refs/heads/"):
        ref = ref.removeprefix("refs/heads/")
    env = _git_env(ws, git_auth_env(url, token))
    deadline = asyncio.get_running_loop().time() + config.CLONE_TIMEOUT_SECONDS
    dest = ws.repo_dir

    async def git(args: list[str], cwd: Path) -> str:
        return await _git(args, cwd=cwd, env=env, secret=token, deadline=deadline)

    if not ref or not (_SHA.match(ref) or ref.startswith("refs/")):
        branch = ["--branch", ref] if ref else []
        await git(["clone", "--depth", "1", "--no-tags", *branch, "--", url, str(dest)], ws.agent_dir)
    else:
        # A commit or a ref like refs/pull/12/head: fetch exactly that, shallow.
        dest.mkdir(parents=True, exist_ok=True)
        await git(["init", "--quiet"], dest)
        await git(["remote", "add", "origin", "--", url], dest)
        await git(["fetch", "--depth", "1", "--no-tags", "origin", ref], dest)
        await git(["checkout", "--quiet", "--detach", "FETCH_HEAD"], dest)
    head = (await git(["rev-parse", "--verify", "HEAD^{commit}"], dest)).strip()
    return head if _SHA.match(head) else None
