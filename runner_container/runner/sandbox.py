"""The CLI's own unprivileged user, when the runner runs as root (a container, CI, a developer's machine).

Root reads any process's /proc/<pid>/environ (being non-dumpable does not stop it) and every file of the
machine, so a CLI running as root could reach every secret the runner or any other process holds. When the
runner's effective uid is 0, the CLI therefore runs as another user: CLI_RUN_AS_USER (a user name, a uid or
`uid:gid`), by default `nobody` (65534:65534); the runner image creates a dedicated `agent` user and names it.
The runner hands the task's folders to that user (`hand_over`) once it has laid them out (clone, restored
transcript, mcp.json), and `spawn_options` drops the CLI's privileges at exec (uid, gid, no supplementary
groups). A runner that is not root (Lambda; Fargate with a `User`) cannot switch users: the CLI then runs as the
runner's own user, as before, and the setting is not used.

What the runner reads back from the CLI's folders afterwards (its transcript, PLAN.md) is read with
`open_owned`: never through a symbolic link, only a regular file owned by the CLI's user. Otherwise a CLI could
point PLAN.md at /proc/<runner>/environ or a root-only file and have the runner read it for it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from runner.workspace import Workspace

SETTING = "CLI_RUN_AS_USER"
NOBODY = 65534  # `nobody` / `nogroup` on Debian, Ubuntu, Amazon Linux and Alpine alike
SEARCH = 0o001  # the "others may enter" bit
_PYTHON_DIRS = ("/usr/local/bin", "/usr/bin", "/bin")


class SandboxError(RuntimeError):
    """The CLI cannot be run as its own user (a bad setting, or a folder the user cannot reach)."""


class Unreachable(SandboxError):
    """A path the CLI's user needs but cannot use; the message says which folder or file stands in the way."""


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    name: str


def identity() -> Identity | None:
    """The user the CLI runs as, or None when the runner is not root (the CLI then runs as the runner's user)."""
    if os.geteuid() != 0:
        return None
    return resolve(os.environ.get(SETTING, ""))


def resolve(value: str) -> Identity:
    """CLI_RUN_AS_USER: empty for nobody, a user name, a uid, or `uid:gid`. Never root."""
    value = value.strip()
    if not value:
        return Identity(NOBODY, NOBODY, "nobody")
    user, _, group = value.partition(":")
    try:
        if user.isdigit():
            uid = int(user)
            try:
                entry = pwd.getpwuid(uid)
                gid, name = entry.pw_gid, entry.pw_name
            except KeyError:
                gid, name = uid, str(uid)
        else:
            entry = pwd.getpwnam(user)
            uid, gid, name = entry.pw_uid, entry.pw_gid, entry.pw_name
    except KeyError:
        raise SandboxError(f"{SETTING}={value!r}: there is no such user") from None
    if group:
        if not group.isdigit():
            raise SandboxError(f"{SETTING}={value!r}: the group must be a number (uid:gid)")
        gid = int(group)
    if uid == 0 or gid == 0:
        raise SandboxError(f"{SETTING}={value!r}: the CLI must run as an unprivileged user, not root")
    return Identity(uid, gid, name)


# --------------------------------------------------------------------------------------------------- permissions


def _may(st: os.stat_result, who: Identity, bits: int) -> bool:
    """Whether the mode bits give `who` these permissions (as the kernel checks them for a process with that uid
    and gid and no supplementary groups; ACLs are not consulted)."""
    shift = 6 if st.st_uid == who.uid else 3 if st.st_gid == who.gid else 0
    return (st.st_mode >> shift) & bits == bits


def _blocking_folder(path: Path, who: Identity) -> Path | None:
    """The first folder on the way to `path` that `who` may not enter (as written, and with links resolved)."""
    for candidate in dict.fromkeys((Path(os.path.abspath(path)), Path(os.path.realpath(path)))):
        for folder in reversed(candidate.parents):
            try:
                if not _may(folder.stat(), who, SEARCH):
                    return folder
            except OSError:
                return folder
    return None


def check_executable(path: str, who: Identity) -> None:
    """Unreachable unless `who` can run the program at `path` (a script must also be readable)."""
    blocked = _blocking_folder(Path(path), who)
    if blocked is not None:
        raise Unreachable(f"the folder {blocked} is closed to the CLI's user {who.name} (uid {who.uid})")
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            script = f.read(2) == b"#!"
    except OSError as exc:
        raise Unreachable(f"{path}: {exc.strerror}") from None
    if not _may(st, who, 0o1) or (script and not _may(st, who, 0o4)):
        raise Unreachable(f"{path} may not be run by the CLI's user {who.name} (uid {who.uid})")


def spawn_options(executable: str) -> dict[str, Any]:
    """Keyword arguments for `asyncio.create_subprocess_exec` that run the CLI as its own user ({} when the
    runner is not root). Unreachable when that user cannot run the executable."""
    who = identity()
    if who is None:
        return {}
    check_executable(executable, who)
    return {"user": who.uid, "group": who.gid, "extra_groups": []}


def python_executable() -> str:
    """A Python the CLI's user can run, for the machine MCP server (standard library only). The runner's own
    interpreter when it can (always, when not root); under uv or pyenv in root's home it cannot, so a system
    Python."""
    who = identity()
    if who is None:
        return sys.executable
    candidates = [sys.executable, getattr(sys, "_base_executable", "")]
    candidates += [f"{folder}/python3" for folder in _PYTHON_DIRS]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate):
            try:
                check_executable(candidate, who)
            except Unreachable:
                continue
            return candidate
    return sys.executable  # none reachable: the MCP server fails to start, and the CLI says so


# --------------------------------------------------------------------------------------------------- the folders


def _allow_search(folder: Path, ours: Path, temp: Path) -> None:
    """Let other users enter `folder` (search, not list): folders of the work root, and folders below the system's
    temporary folder on the way to it (such as pytest's 0700 folders); anywhere else it is an error."""
    st = folder.stat()
    if st.st_mode & SEARCH:
        return
    inside = folder == ours or ours in folder.parents or temp in folder.parents
    if not inside or st.st_uid != os.geteuid():
        raise Unreachable(
            f"the folder {folder} is closed to other users, so the CLI's user cannot reach the runner's work "
            f"root; open it (chmod o+x) or set RUNNER_WORK_ROOT to a folder below {temp}"
        )
    os.chmod(folder, stat.S_IMODE(st.st_mode) | SEARCH)


def _chown_tree(top: Path, who: Identity) -> None:
    """Give `top` and everything below it to `who`, never following a link. A file with more than one name (a
    local clone hard-links its objects) is left alone: the other names may be anywhere."""
    os.lchown(top, who.uid, who.gid)
    for folder, dirs, files in os.walk(top, followlinks=False):
        for name in (*dirs, *files):
            path = os.path.join(folder, name)
            st = os.lstat(path)
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                continue
            os.lchown(path, who.uid, who.gid)


def hand_over(ws: Workspace) -> Identity | None:
    """Give the task's folders (HOME, config, TMPDIR, mcp.json; the agent's folder and its clone) to the CLI's user,
    and make the way to them passable for it. Called once they are laid out, before the CLI starts; nothing
    is written into them by the runner afterwards. None (and nothing done) when the runner is not root."""
    who = identity()
    if who is None:
        return None
    temp = Path(os.path.realpath(tempfile.gettempdir()))
    root = Path(os.path.realpath(ws.task_dir)).parent.parent  # <work root>/tasks/<task_id>
    for top in (ws.task_dir, ws.work):
        real = Path(os.path.realpath(top))
        for folder in reversed(real.parents):
            _allow_search(folder, root, temp)
    # The work root's listing folders: enterable, not listable (other tasks' folders are not named to the CLI).
    for folder in (root / "tasks", root / "s"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(folder, 0o711)  # noqa: S103 - search only: the CLI must pass through, not list
    for top in (ws.task_dir, ws.work):
        _chown_tree(top, who)
    return who


def give(path: Path) -> None:
    """Hand one file or folder the runner made for the CLI (the bridge's socket) to the CLI's user."""
    who = identity()
    if who is not None:
        os.lchown(path, who.uid, who.gid)


# --------------------------------------------------------------------------------------------------- reading back


def owner() -> int:
    """The uid whose files the runner reads back from the CLI's folders."""
    who = identity()
    return who.uid if who is not None else os.geteuid()


def open_owned(path: Path) -> IO[bytes]:
    """Open a file the CLI wrote, for reading: not through a link, a regular file, owned by the CLI's user.
    OSError otherwise (PermissionError when it is someone else's)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is not a regular file")
        if st.st_uid != owner():
            raise PermissionError(f"{path} is not the CLI's own file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_owned_text(path: Path, max_bytes: int) -> str:
    """At most max_bytes (+1, so a cut shows) of a file the CLI wrote, as text (see open_owned)."""
    with open_owned(path) as f:
        return f.read(max_bytes + 1).decode("utf-8", errors="replace")


def subprocess_options() -> dict[str, Any]:
    """Keyword arguments for subprocess.run that run a helper (git in the CLI's clone) as the CLI's user: git
    refuses a repository owned by another user, and must not run the clone's hooks or config as root."""
    who = identity()
    return {} if who is None else {"user": who.uid, "group": who.gid, "extra_groups": []}
