"""Publishing an agent's work: the runner, not the agent, pushes its branch and opens the pull request.

The CLI never holds a GitHub token (not in its environment, its git configuration, or a file it can read): it
reads text written by strangers, and a prompt injection must find no credential to use or to send away. The
executor commits on a `claude/...` branch of its clone; the runner pushes that branch with its own token and
opens the pull request through the REST API (GITHUB_API_URL):

- during the run, through the `machine` MCP tools `push_branch` and `open_pull_request` (runner/delegation.py
  forwards them here), so the agent sees the pull request's URL and can put it in its answer;
- after the run (`Publisher.finish`), whatever the agent committed on a `claude/...` branch and did not push is
  pushed (the workspace is deleted next: work is never lost with it), and when the run completed and no pull
  request was opened, one is opened (title: the last commit's subject; body: the agent's result).

Scope: the task's repository only (its clone URL, on the configured GitHub: workspace.token_origin), branches
named `claude/...` only, never the default branch, never a force push. A clone whose `origin` the agent
re-pointed (or gave a push URL) is not pushed: that is what an injected "push to my fork" looks like.

The clone is the agent's: its .git/config, hooks and refs are whatever the agent made them (core.fsmonitor,
core.sshCommand, hooks, url.*.insteadOf, credential.helper, http.proxy with http.sslVerify=false, include.path,
...), so the runner's git never runs in it. For each push:
- the branch's commit is read from the clone's ref files (a 40-hex id), not through git;
- the clone's object files (loose objects, packs and their indexes; never objects/info, so no alternates or
  commit-graph) are hard-linked (or copied) into a bare repository of the runner's own in a private folder
  (0700), with the clone's `shallow` list; symbolic links are refused;
- `git push <the task's clone URL> <commit>:refs/heads/<branch>` runs there: no system or global config, no
  hooks, no credential helper, only the clone URL's protocol, no redirects, and the token in that git's
  environment only (workspace.git_auth_env).
The clone's origin is read with `git config --file <clone>/.git/config --no-includes` (a file read as data).
As no git runs inside the clone, its owner does not matter (no safe.directory is needed when the CLI runs as
another user).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from agent_machine import secrets
from agent_machine.domain.reporting.http import HttpFailure, JsonClient, Redactor, Retrier
from agent_machine.models import AgentSpec, Task
from agent_machine.observability import get_logger
from agent_machine.settings import get_settings
from pydantic import BaseModel, ConfigDict, ValidationError

from runner import workspace
from runner.cli import MCP_SERVER_NAME

BRANCH_PREFIX = "claude/"
MAX_REF_CHARS = 200
MAX_TITLE_CHARS = 256
MAX_BODY_CHARS = 65_536  # GitHub refuses longer pull request bodies
MAX_ERROR_CHARS = 500
GIT_TIMEOUT_SECONDS = 300.0  # one push (a large first push of a shallow clone's tree takes a while)
API_TIMEOUT_SECONDS = 15.0
API_ATTEMPTS = 3
API_DEADLINE_SECONDS = 60.0
MAX_SMALL_FILE_BYTES = 64 * 1024 * 1024  # HEAD, a ref, packed-refs, shallow: never read more than this
USER_AGENT = "agent-machine-runner/1.0"
# The tools an agent that may push is allowed (the CLI denies MCP tools without an allow rule).
TOOLS = ("push_branch", "open_pull_request")
TOOL_RULES = tuple(f"mcp__{MCP_SERVER_NAME}__{name}" for name in TOOLS)

_SHA = re.compile(r"^[0-9a-f]{40}$")
_REPO = re.compile(r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$")
_COMPONENT = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
_REF_NAME = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_LOOSE_DIR = re.compile(r"^[0-9a-f]{2}$")
_LOOSE_FILE = re.compile(r"^[0-9a-f]{38}$")
_PACK_FILE = re.compile(r"^pack-[0-9a-f]{40}\.(?:pack|idx)$")


class PublishError(Exception):
    """A push or pull request that is refused or failed; the message is redacted and meant for the agent."""


def valid_ref_name(name: str) -> bool:
    """A plain branch name git accepts and that cannot be mistaken for an option or a pattern."""
    return (
        len(name) <= MAX_REF_CHARS
        and bool(_REF_NAME.fullmatch(name))
        and ".." not in name
        and not any(part.endswith((".lock", ".")) for part in name.split("/"))
    )


def is_agent_branch(name: str) -> bool:
    return name.startswith(BRANCH_PREFIX) and len(name) > len(BRANCH_PREFIX) and valid_ref_name(name)


def with_tools(agent: AgentSpec) -> AgentSpec:
    """The agent's spec with the publishing tools allowed (only for runs that have a Publisher)."""
    missing = [rule for rule in TOOL_RULES if rule not in agent.allowed_tools]
    return agent.model_copy(update={"allowed_tools": [*agent.allowed_tools, *missing]}) if missing else agent


def _clip(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class PullRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    number: int
    html_url: str
    draft: bool = False


@dataclass(frozen=True)
class Published:
    branch: str
    commit: str


# --------------------------------------------------------------------------------------------------- the clone


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def _plain_path(root: Path, path: Path, *, file: bool) -> bool:
    """`path` is below `root` and no component from root down is a symbolic link; the last is a regular file
    (file=True) or a folder."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        return False
    current = root
    for part in ("", *rel.parts):
        current = current / part if part else current
        st = _lstat(current)
        if st is None:
            return False
        last = current == path
        if last and file:
            return stat.S_ISREG(st.st_mode)
        if not stat.S_ISDIR(st.st_mode):
            return False
    return True


def _read_small(path: Path) -> str | None:
    """A small regular file's text, opened without following a symbolic link; None if it is not one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SMALL_FILE_BYTES:
            return None
        return handle.read(MAX_SMALL_FILE_BYTES).decode("utf-8", errors="replace")


class Clone:
    """The agent's clone, read as data: HEAD, branch refs, its origin, its object files."""

    def __init__(self, repo_dir: Path) -> None:
        self.repo_dir = repo_dir
        self.git_dir = repo_dir / ".git"

    def check(self) -> None:
        # From the agent's folder down: the clone and its .git are plain folders, not links somewhere else.
        if not _plain_path(self.repo_dir.parent, self.git_dir, file=False):
            raise PublishError("the clone or its .git is no longer a plain folder (a link or a gitfile): not pushed")

    def _head(self) -> str:
        path = self.git_dir / "HEAD"
        return (_read_small(path) or "").strip() if _plain_path(self.git_dir, path, file=True) else ""

    def current_branch(self) -> str | None:
        head = self._head()
        if head.startswith("ref: refs/heads/"):
            name = head.removeprefix("ref: refs/heads/")
            return name if valid_ref_name(name) else None
        return None

    def head_commit(self) -> str | None:
        """The commit HEAD is at (a detached HEAD's id, or its branch's)."""
        branch = self.current_branch()
        if branch is not None:
            return self.ref(branch)
        head = self._head()
        return head if _SHA.fullmatch(head) else None

    def ref(self, branch: str) -> str | None:
        """The branch's commit: its loose ref file, else its line in packed-refs."""
        if not valid_ref_name(branch):
            return None
        loose = self.git_dir.joinpath("refs", "heads", *branch.split("/"))
        if _plain_path(self.git_dir, loose, file=True):
            text = (_read_small(loose) or "").strip()
            if _SHA.fullmatch(text):
                return text
        packed = self.git_dir / "packed-refs"
        if _plain_path(self.git_dir, packed, file=True):
            wanted = f"refs/heads/{branch}"
            for line in (_read_small(packed) or "").splitlines():
                sha, _, name = line.partition(" ")
                if name.strip() == wanted and _SHA.fullmatch(sha):
                    return sha
        return None

    def config_file(self) -> Path:
        path = self.git_dir / "config"
        if not _plain_path(self.git_dir, path, file=True):
            raise PublishError("the clone's .git/config is not a plain file: not pushed")
        return path

    def shallow(self) -> list[str] | None:
        path = self.git_dir / "shallow"
        if _lstat(path) is None:
            return None
        if not _plain_path(self.git_dir, path, file=True):
            raise PublishError("the clone's .git/shallow is not a plain file: not pushed")
        lines = [line.strip() for line in (_read_small(path) or "").splitlines() if line.strip()]
        if not all(_SHA.fullmatch(line) for line in lines):
            raise PublishError("the clone's .git/shallow is not a list of commits: not pushed")
        return lines

    def link_objects(self, dest: Path) -> None:
        """Hard-link (or copy) the clone's object files into `dest` (another repository's objects folder)."""
        source = self.git_dir / "objects"
        if not _plain_path(self.git_dir, source, file=False):
            raise PublishError("the clone's .git/objects is not a plain folder: not pushed")
        with os.scandir(source) as entries:
            for entry in entries:
                if _LOOSE_DIR.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                    pattern = _LOOSE_FILE
                elif entry.name == "pack" and entry.is_dir(follow_symlinks=False):
                    pattern = _PACK_FILE
                else:
                    continue  # info/ (alternates, commit-graph, packs) and anything else is left out
                target = dest / entry.name
                target.mkdir(mode=0o700, exist_ok=True)
                with os.scandir(entry.path) as files:
                    for item in files:
                        if pattern.fullmatch(item.name) and item.is_file(follow_symlinks=False):
                            _link(Path(item.path), target / item.name)


def _link(source: Path, dest: Path) -> None:
    if _lstat(dest) is not None:
        return  # object files are named by their content
    try:
        os.link(source, dest, follow_symlinks=False)
    except OSError:  # another file system, or a link not allowed: copy, without following a symbolic link
        try:
            fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return
        with os.fdopen(fd, "rb") as src:
            if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
                return
            partial = dest.with_name(dest.name + ".tmp")
            with open(partial, "wb") as out:
                shutil.copyfileobj(src, out, 1024 * 1024)
            os.replace(partial, dest)
    st = _lstat(dest)
    if st is None or not stat.S_ISREG(st.st_mode):  # replaced by a link while we looked: refuse it
        with contextlib.suppress(OSError):
            dest.unlink()
        raise PublishError("the clone's objects changed into links while they were read: not pushed")


# --------------------------------------------------------------------------------------------------- publisher


class Publisher:
    """Pushes one run's branches and opens its pull request, for the task's repository only. Thread-safe: the
    MCP tools call it from the bridge's threads, the run's end from another."""

    def __init__(self, task: Task, repo_dir: Path, *, base_commit: str | None) -> None:
        self.task = task
        self.clone = Clone(repo_dir)
        self.base_commit = base_commit  # what the clone was at before the agent started
        self.pushed: dict[str, str] = {}  # branch -> commit pushed by this run
        self.pull_request: PullRequest | None = None
        self.pr_branch: str | None = None
        self._lock = threading.Lock()
        self._private: Path | None = None
        self._default_branch: str | None = None
        self._token: str | None = None
        self._redact = Redactor([])
        repo = task.repo
        self.problem: str | None = None  # why nothing can be published here (told to the agent)
        self.full_name = (repo.full_name or "") if repo else ""
        self.clone_url = (repo.clone_url or "") if repo else ""
        url_path = urlsplit(self.clone_url).path.strip("/").removesuffix(".git")
        if not self.clone_url or not _REPO.fullmatch(self.full_name) or ".." in self.full_name:
            self.problem = "the task's repository has no valid owner/name and clone URL"
        elif url_path.lower() != self.full_name.lower():
            self.problem = f"the task's clone URL is not the repository {self.full_name}"
        elif workspace.token_origin(self.clone_url) is None:
            self.problem = "the task's repository is not on the GitHub this machine is configured for"
        self.owner, _, self.name = self.full_name.partition("/")

    # ---------------------------------------------------------------------------------------------- the tools

    def push_branch(self, branch: str | None = None) -> dict[str, Any]:
        with self._lock:
            done = self._push(branch)
        return {
            "branch": done.branch,
            "commit": done.commit,
            "repository": self.full_name,
            "note": "pushed by the machine; open_pull_request opens (or finds) its pull request",
        }

    def open_pull_request(
        self, *, title: str, body: str, branch: str | None = None, base: str | None = None, draft: bool = False
    ) -> dict[str, Any]:
        with self._lock:
            done = self._push(branch)
            pr, created = self._open(done.branch, title=title, body=body, base=base, draft=draft)
        return {
            "url": pr.html_url,
            "number": pr.number,
            "created": created,
            "branch": done.branch,
            "commit": done.commit,
            "repository": self.full_name,
        }

    # ---------------------------------------------------------------------------------------------- the end

    def finish(self, *, completed: bool, result: str | None) -> dict[str, str]:
        """After the CLI has exited: push what was committed and not pushed, open the pull request if the run
        completed without one. Returns the task's report fields: pr_url, branch, publish_error."""
        errors: list[str] = []
        with self._lock:
            try:
                self._push_leftovers(errors)
                if self.pull_request is None and completed and self.pushed:
                    current = self.clone.current_branch()
                    head = current if current in self.pushed else list(self.pushed)[-1]
                    title = self._subject(self.pushed[head]) or f"Changes by the agent machine ({head})"
                    self._open(head, title=title, body=self._auto_body(result), base=None, draft=False)
            except PublishError as exc:
                errors.append(str(exc))
            except Exception as exc:  # publishing never fails the task: it is reported on it
                get_logger().exception("publishing the agent's branch failed")
                errors.append(f"publishing failed on the machine: {type(exc).__name__}")
            fields: dict[str, str] = {}
            if self.pull_request is not None:
                fields["pr_url"] = self.pull_request.html_url
            shown = self.pr_branch or (list(self.pushed)[-1] if self.pushed else None)
            if shown:
                fields["branch"] = shown
            if errors:
                fields["publish_error"] = _clip(self._redact("; ".join(errors)))
            return fields

    def close(self) -> None:
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)
            self._private = None

    def _push_leftovers(self, errors: list[str]) -> None:
        current = self.clone.current_branch()
        names = list(dict.fromkeys([*self.pushed, *([current] if current else [])]))
        for name in names:
            commit = self.clone.ref(name)
            if commit is None or commit == self.pushed.get(name):
                continue
            if name not in self.pushed and commit == self.base_commit:
                continue  # nothing committed on it
            if not is_agent_branch(name):
                errors.append(f"the commits on {name!r} were not pushed: only branches named {BRANCH_PREFIX}… are")
                continue
            try:
                self._push(name)
            except PublishError as exc:
                errors.append(str(exc))
        if current is None:
            head = self.clone.head_commit()
            if head is not None and self.base_commit is not None and head != self.base_commit:
                errors.append(f"commits on a detached HEAD were not pushed: commit on a {BRANCH_PREFIX}… branch")

    def _auto_body(self, result: str | None) -> str:
        repo = self.task.repo
        lines: list[str] = []
        if repo is not None and repo.issue_number:
            lines += [f"Refs #{repo.issue_number}", ""]
        lines.append((result or "").strip() or "(the agent gave no summary)")
        lines += ["", "---", f"Opened by the agent machine after task `{self.task.task_id}` (the agent did not)."]
        return "\n".join(lines)

    # ---------------------------------------------------------------------------------------------- pushing

    def _push(self, branch: str | None) -> Published:
        if self.problem:
            raise PublishError(f"nothing can be pushed: {self.problem}")
        self.clone.check()
        self._check_origin()
        name = branch or self.clone.current_branch()
        if not name:
            raise PublishError(f"HEAD is not on a branch: create one with `git checkout -b {BRANCH_PREFIX}<slug>`")
        if not is_agent_branch(name):
            raise PublishError(
                f"only branches named {BRANCH_PREFIX}<issue>-<slug> are pushed, not {_clip(name, 100)!r}: "
                f"`git checkout -b {BRANCH_PREFIX}<issue>-<slug>` and commit there"
            )
        if name == self._default():
            raise PublishError(f"{name} is the repository's default branch: it is never pushed to")
        commit = self.clone.ref(name)
        if commit is None:
            raise PublishError(f"the clone has no branch {name}: commit on it first")
        if commit == self.base_commit:
            raise PublishError(f"{name} has no commits of its own yet: commit the change first")
        if self.pushed.get(name) == commit:
            return Published(name, commit)
        bare = self._stage()
        started = time.monotonic()
        self._git(["push", "--porcelain", "--no-verify", "--", self.clone_url, f"{commit}:refs/heads/{name}"], bare)
        self.pushed[name] = commit
        get_logger().info(
            "pushed the agent's branch",
            extra={
                "task_id": self.task.task_id,
                "repository": self.full_name,
                "branch": name,
                "commit": commit,
                "push_ms": int((time.monotonic() - started) * 1000),
            },
        )
        return Published(name, commit)

    def _check_origin(self) -> None:
        """The clone's origin is still the task's repository (and has no push URL of its own)."""
        config_file = str(self.clone.config_file())
        found: dict[str, list[str]] = {}
        for key in ("remote.origin.url", "remote.origin.pushurl"):
            code, out = self._git_raw(["config", "--file", config_file, "--no-includes", "--get-all", key], None)
            if code not in (0, 1):  # 1: not set
                raise PublishError("the clone's .git/config cannot be read: not pushed")
            found[key] = [line.strip() for line in out.splitlines() if line.strip()]
        urls, push_urls = found["remote.origin.url"], found["remote.origin.pushurl"]
        if urls != [self.clone_url] or push_urls not in ([], [self.clone_url]):
            shown = _clip(", ".join(urls + push_urls) or "nothing", 200)
            raise PublishError(
                f"the clone's origin was changed (it points at {shown}, not {self.clone_url}): not pushed; "
                "only the task's repository is pushed to"
            )

    def _stage(self) -> Path:
        """The runner's own bare repository with the clone's objects (see the module's docstring)."""
        private = self._private_dir()
        bare = private / "r.git"
        if not bare.is_dir():
            self._git(["init", "--bare", "--quiet", str(bare)], None)
        self.clone.link_objects(bare / "objects")
        shallow = self.clone.shallow()
        if shallow:
            (bare / "shallow").write_text("".join(f"{sha}\n" for sha in shallow), encoding="ascii")
        else:
            (bare / "shallow").unlink(missing_ok=True)
        return bare

    def _subject(self, commit: str) -> str | None:
        try:
            out = self._git(["log", "-1", "--format=%s", commit], self._stage())
        except PublishError:
            return None
        subject = _clip(out.strip(), MAX_TITLE_CHARS)
        return subject or None

    def _private_dir(self) -> Path:
        if self._private is None:
            # mkdtemp: 0700, the runner's own user; outside every folder the CLI can write to.
            folder = Path(tempfile.mkdtemp(prefix="amp-", dir="/tmp" if Path("/tmp").is_dir() else None))  # noqa: S108 - private (0700)
            (folder / "home").mkdir(mode=0o700)
            self._private = folder
        return self._private

    def _git_env(self, bare: Path | None, *, auth: bool) -> dict[str, str]:
        private = self._private_dir()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(private / "home"),
            "LANG": "C.UTF-8",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "",
            "SSH_ASKPASS": "",
            "GIT_PROTOCOL_FROM_USER": "0",
            # No repository discovery above the private folder (/tmp is writable by everyone).
            "GIT_CEILING_DIRECTORIES": str(private.parent),
        }
        if bare is not None:
            env["GIT_DIR"] = str(bare)
        if auth:
            env.update(workspace.git_auth_env(self.clone_url, self._github_token()))
        return env

    def _git_raw(self, args: list[str], bare: Path | None, *, auth: bool = False) -> tuple[int, str]:
        scheme = urlsplit(self.clone_url).scheme or "https"
        hardening = [
            "-c", "core.hooksPath=/dev/null",
            "-c", "core.fsmonitor=false",
            "-c", "credential.helper=",
            "-c", "core.askPass=",
            "-c", "protocol.allow=never",
            "-c", f"protocol.{scheme}.allow=always",
            "-c", "http.followRedirects=false",
        ]  # fmt: skip
        proc = subprocess.Popen(
            ["git", *hardening, *args],
            cwd=str(self._private_dir()),
            env=self._git_env(bare, auth=auth),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=GIT_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            workspace.reap_group(proc.pid)
            raise PublishError(f"git {args[0]} timed out") from None
        workspace.end_group(proc.pid)
        return proc.returncode, self._redact(out.decode("utf-8", errors="replace"))

    def _git(self, args: list[str], bare: Path | None) -> str:
        code, out = self._git_raw(args, bare, auth=args[0] == "push")
        if code != 0:
            tail = " / ".join(out.strip().splitlines()[-6:])
            raise PublishError(f"git {args[0]} failed (exit {code}): {_clip(tail, 400)}")
        return out

    # ---------------------------------------------------------------------------------------------- the API

    def _github_token(self) -> str:
        if self._token is None:
            token = (secrets.get_secret("github_token") or "").strip()
            if not token:
                raise PublishError("the machine has no GitHub token (GITHUB_TOKEN): nothing can be pushed")
            self._token = token
            # The token, and the Basic form git sends (base64 of x-access-token:<token>), never in a message.
            self._redact = Redactor([token, f"x-access-token:{token}"])
        return self._token

    def _client(self) -> JsonClient:
        token = self._github_token()
        return JsonClient(
            get_settings().github_api_url.rstrip("/"),
            {
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": USER_AGENT,
            },
            timeout=API_TIMEOUT_SECONDS,
            redact=self._redact,
        )

    def _retrier(self) -> Retrier:
        return Retrier(
            max_attempts=API_ATTEMPTS,
            base_delay=0.5,
            max_delay=5.0,
            deadline=time.monotonic() + API_DEADLINE_SECONDS,
        )

    @property
    def _repo_path(self) -> str:
        return f"/repos/{quote(self.owner, safe='')}/{quote(self.name, safe='')}"

    def _default(self) -> str:
        """The repository's default branch, from the API (fails closed: unknown means nothing is pushed)."""
        if self._default_branch is None:
            client = self._client()
            try:
                resp = self._retrier().run(lambda _attempt: client.request("GET", self._repo_path))
            except HttpFailure as exc:
                raise PublishError(f"the repository could not be looked up on GitHub: {exc.message}") from None
            body = resp.body if isinstance(resp.body, dict) else {}
            default = body.get("default_branch")
            if not isinstance(default, str) or not default:
                raise PublishError("GitHub did not say which branch is the default: nothing is pushed")
            self._default_branch = default
        return self._default_branch

    def _find(self, client: JsonClient, branch: str) -> PullRequest | None:
        resp = client.request(
            "GET", f"{self._repo_path}/pulls", query={"head": f"{self.owner}:{branch}", "state": "open"}
        )
        for raw in resp.body if isinstance(resp.body, list) else []:
            head = raw.get("head") if isinstance(raw, dict) else None
            if isinstance(head, dict) and head.get("ref") == branch:
                with contextlib.suppress(ValidationError):
                    return PullRequest.model_validate(raw)
        return None

    def _open(self, branch: str, *, title: str, body: str, base: str | None, draft: bool) -> tuple[PullRequest, bool]:
        base = base or self._default()
        if not valid_ref_name(base):
            raise PublishError(f"{_clip(base, 100)!r} is not a branch name")
        if base == branch:
            raise PublishError("the pull request's base and head are the same branch")
        title = _clip(title, MAX_TITLE_CHARS)
        if not title:
            raise PublishError("a pull request needs a title")
        if len(body) > MAX_BODY_CHARS:
            body = body[: MAX_BODY_CHARS - 40] + "\n\n[… cut: the body was too long]"
        client = self._client()
        payload = {"title": title, "head": branch, "base": base, "body": body, "draft": draft}

        def create(attempt: int) -> tuple[PullRequest, bool]:
            if attempt > 1:  # a create whose answer was lost may have happened
                found = self._find(client, branch)
                if found is not None:
                    return found, False
            try:
                resp = client.request("POST", f"{self._repo_path}/pulls", body=payload)
            except HttpFailure as exc:
                if exc.status == 422:  # most often: it exists already
                    found = self._find(client, branch)
                    if found is not None:
                        return found, False
                    raise PublishError(f"GitHub refused the pull request: {exc.message}") from None
                raise
            try:
                return PullRequest.model_validate(resp.body), True
            except ValidationError:
                raise PublishError("GitHub's answer to the pull request was not understood") from None

        try:
            pr, created = self._retrier().run(create)
        except HttpFailure as exc:
            raise PublishError(f"the pull request could not be opened: {exc.message}") from None
        if not pr.html_url.startswith(("https://", "http://")):
            raise PublishError("GitHub's answer held no pull request URL")
        self.pull_request, self.pr_branch = pr, branch
        get_logger().info(
            "pull request opened" if created else "pull request found",
            extra={"task_id": self.task.task_id, "repository": self.full_name, "branch": branch, "pr": pr.number},
        )
        return pr, created


def for_task(task: Task, repo_dir: Path | None, *, base_commit: str | None) -> Publisher | None:
    """The run's publisher: for a task with a repository to clone (an agent that may push; see run.can_push)."""
    if repo_dir is None or task.repo is None or not task.repo.clone_url:
        return None
    return Publisher(task, repo_dir, base_commit=base_commit)
