"""A local stand-in for the GitHub REST API's issue comments (and Jira's and Sentry's comment endpoints).

A ThreadingHTTPServer on a free port. It records every request (method, path, query, headers, JSON body), keeps
the comments it was given and answers with realistic JSON (ids, html_url, self). Tests can make the next N
requests fail (502 by default), optionally after applying them: the "the comment was created but the answer was
lost" case. When given credentials it checks them and answers 401 as the real APIs do.

    with FakeApi(github_token="t") as api:
        ...  # point GITHUB_API_URL / JIRA_BASE_URL / SENTRY_API_URL at api.url
        assert api.requests[0].method == "POST"

With `git_root` it is also the git server of the same host, as GitHub Enterprise serves both: repositories made
with `create_repository("owner/name")` are served over smart HTTP (`git http-backend`, clone and push) at
`<url>/owner/name.git`, and only to a request with the token as Basic credentials (any user name, as GitHub);
`git_requests` records them. `GET /repos/{owner}/{repo}` answers with the repository (its default branch), and
pull requests can be opened (`POST /repos/{owner}/{repo}/pulls`: the head branch must exist on the git server,
one open pull request per head, else 422 as GitHub) and listed (`GET .../pulls?head=owner:branch&state=open`).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

JsonObj = dict[str, Any]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: Any  # parsed JSON, or None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class GitRequest:
    method: str
    path: str
    service: str  # git-upload-pack (clone, fetch) or git-receive-pack (push)
    authorized: bool


@dataclass
class _Failure:
    status: int
    apply: bool
    message: str
    retry_after: int | None


@dataclass
class _Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeApi


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        return

    def _handle(self) -> None:
        fake = cast(_Server, self.server).fake
        parts = urlsplit(self.path)
        git = _GIT_PATH.match(parts.path)
        if git is not None and fake.git_root is not None:
            self._serve_git(fake, git, parts.query)
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        parts = urlsplit(self.path)
        request = RecordedRequest(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        reply = fake.handle(request)
        data = b"" if reply.body is None else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if data:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():  # git posts big packs chunked
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply_raw(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _serve_git(self, fake: FakeApi, match: re.Match[str], query: str) -> None:
        """Smart HTTP through `git http-backend` (CGI), for a request with the token as Basic credentials."""
        body = self._read_body()
        service = match["service"] if match["service"] != "info/refs" else (parse_qs(query).get("service") or [""])[0]
        auth = self.headers.get("Authorization") or ""
        scheme, _, encoded = auth.partition(" ")
        try:
            password = base64.b64decode(encoded.strip()).decode().partition(":")[2]
        except ValueError:
            password = ""
        authorized = scheme.lower() == "basic" and fake.github_token is not None and password == fake.github_token
        with fake._lock:
            fake._git_requests.append(GitRequest(self.command, match.group(0), service, authorized))
        if not authorized:
            self._reply_raw(401, {"WWW-Authenticate": 'Basic realm="GitHub"'}, b"Unauthorized\n")
            return
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(fake.git_root),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_PROJECT_ROOT": str(fake.git_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.receivepack",
            "GIT_CONFIG_VALUE_0": "true",
            "PATH_INFO": f"/{match['owner']}/{match['repo']}.git/{match['service']}",
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type") or "",
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "x-access-token",
            "REMOTE_ADDR": "127.0.0.1",
            "GATEWAY_INTERFACE": "CGI/1.1",
        }
        for header, name in (("Content-Encoding", "HTTP_CONTENT_ENCODING"), ("Git-Protocol", "HTTP_GIT_PROTOCOL")):
            if self.headers.get(header):
                env[name] = self.headers[header]
        done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=120)
        separator = b"\r\n\r\n" if b"\r\n\r\n" in done.stdout else b"\n\n"
        head, _, data = done.stdout.partition(separator)
        status, headers = 200, {}
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers[name.strip()] = value.strip()
        self._reply_raw(status, headers, data)


Route = tuple[str, re.Pattern[str], Callable[[RecordedRequest, re.Match[str]], _Reply]]
_GIT_PATH = re.compile(
    r"^/(?P<owner>[A-Za-z0-9_.-]+)/(?P<repo>[A-Za-z0-9_.-]+?)\.git/(?P<service>info/refs|git-upload-pack|git-receive-pack)$"
)


def _git(*args: str, cwd: Path | None = None) -> str:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "Octo Cat",
        "GIT_AUTHOR_EMAIL": "octo@example.com",
        "GIT_COMMITTER_NAME": "Octo Cat",
        "GIT_COMMITTER_EMAIL": "octo@example.com",
    }
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True, timeout=60)
    return done.stdout


class FakeApi:
    """GitHub issue comments, Jira v2 issue comments and Sentry issue notes, in memory."""

    def __init__(
        self,
        *,
        github_token: str | None = None,
        jira_auth: tuple[str, str] | None = None,
        sentry_token: str | None = None,
        bot_login: str = "agent-machine[bot]",
        git_root: Path | None = None,
    ) -> None:
        self.github_token = github_token
        self.git_root = git_root
        self.repositories: dict[str, str] = {}  # full name -> default branch
        self.pull_requests: list[JsonObj] = []
        self._git_requests: list[GitRequest] = []
        self.jira_auth = jira_auth
        self.sentry_token = sentry_token
        self.bot_login = bot_login
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._failures: list[_Failure] = []
        self._ids = itertools.count(1_000_001)
        self.github_comments: dict[int, JsonObj] = {}
        self.jira_comments: dict[str, JsonObj] = {}
        self.sentry_notes: dict[str, JsonObj] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._routes: list[Route] = [
            (
                "POST",
                re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/issues/(?P<number>\d+)/comments$"),
                self._gh_create,
            ),
            (
                "GET",
                re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/issues/(?P<number>\d+)/comments$"),
                self._gh_list,
            ),
            (
                "PATCH",
                re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/issues/comments/(?P<id>\d+)$"),
                self._gh_update,
            ),
            (
                "DELETE",
                re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/issues/comments/(?P<id>\d+)$"),
                self._gh_delete,
            ),
            ("GET", re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)$"), self._gh_repo),
            ("POST", re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/pulls$"), self._gh_create_pull),
            ("GET", re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/pulls$"), self._gh_list_pulls),
            ("POST", re.compile(r"^/rest/api/2/issue/(?P<key>[^/]+)/comment$"), self._jira_create),
            ("GET", re.compile(r"^/rest/api/2/issue/(?P<key>[^/]+)/comment$"), self._jira_list),
            ("PUT", re.compile(r"^/rest/api/2/issue/(?P<key>[^/]+)/comment/(?P<id>\d+)$"), self._jira_update),
            ("POST", re.compile(r"^/api/0/issues/(?P<issue>[^/]+)/comments/$"), self._sentry_create),
            ("GET", re.compile(r"^/api/0/issues/(?P<issue>[^/]+)/comments/$"), self._sentry_list),
            ("PUT", re.compile(r"^/api/0/issues/(?P<issue>[^/]+)/comments/(?P<id>\d+)/$"), self._sentry_update),
        ]

    # --- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> FakeApi:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-github-api", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeApi:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # --- what tests use -----------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def calls(self, method: str | None = None) -> list[RecordedRequest]:
        return [r for r in self.requests if method is None or r.method == method]

    def writes(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method in ("POST", "PATCH", "PUT", "DELETE")]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def fail_next(
        self,
        count: int,
        status: int = 502,
        *,
        apply: bool = False,
        message: str = "Server Error",
        retry_after: int | None = None,
    ) -> None:
        """The next `count` requests answer `status`. With apply=True the request takes effect first (a lost
        answer). `message` may contain "{authorization}", replaced by the request's Authorization header (a
        proxy that echoes too much)."""
        with self._lock:
            self._failures.extend(_Failure(status, apply, message, retry_after) for _ in range(count))

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    @property
    def git_requests(self) -> list[GitRequest]:
        with self._lock:
            return list(self._git_requests)

    def create_repository(
        self, full_name: str, files: dict[str, str] | None = None, *, default_branch: str = "main"
    ) -> str:
        """A bare repository on the git server with one commit of `files` on `default_branch`; its clone URL."""
        assert self.git_root is not None, "FakeApi(git_root=...) serves repositories"
        bare = self.git_root / f"{full_name}.git"
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            _git("init", "-q", "-b", default_branch, str(work))
            for name, text in (files or {"README.md": f"# {full_name}\n"}).items():
                (work / name).parent.mkdir(parents=True, exist_ok=True)
                (work / name).write_text(text, encoding="utf-8")
            _git("add", "-A", cwd=work)
            _git("commit", "-q", "-m", "Initial commit", cwd=work)
            bare.parent.mkdir(parents=True, exist_ok=True)
            _git("clone", "-q", "--bare", str(work), str(bare))
        with self._lock:
            self.repositories[full_name] = default_branch
        return f"{self.url}/{full_name}.git"

    def branches(self, full_name: str) -> dict[str, str]:
        """Branch name -> commit on the git server."""
        assert self.git_root is not None
        bare = str(self.git_root / f"{full_name}.git")
        out = _git("--git-dir", bare, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/")
        return {ref.removeprefix("refs/heads/"): sha for ref, sha in (line.split() for line in out.splitlines())}

    def commit_subject(self, full_name: str, rev: str) -> str:
        assert self.git_root is not None
        return _git("--git-dir", str(self.git_root / f"{full_name}.git"), "log", "-1", "--format=%s", rev).strip()

    def delete_github_comment(self, comment_id: int) -> None:
        with self._lock:
            self.github_comments.pop(comment_id, None)

    # --- dispatch -----------------------------------------------------------------------------------------------

    def handle(self, request: RecordedRequest) -> _Reply:
        with self._lock:
            self._requests.append(request)
            failure = self._failures.pop(0) if self._failures else None
        denied = self._check_auth(request)
        if denied is not None:
            return denied
        if failure is not None and not failure.apply:
            return self._failure_reply(failure, request)
        reply = self._route(request)
        if failure is not None:
            return self._failure_reply(failure, request)
        return reply

    def _failure_reply(self, failure: _Failure, request: RecordedRequest) -> _Reply:
        message = failure.message.replace("{authorization}", request.header("authorization") or "")
        headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
        return _Reply(failure.status, {"message": message}, headers)

    def _route(self, request: RecordedRequest) -> _Reply:
        for method, pattern, handler in self._routes:
            match = pattern.match(request.path)
            if match and method == request.method:
                with self._lock:
                    return handler(request, match)
        return _Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})

    def _check_auth(self, request: RecordedRequest) -> _Reply | None:
        auth = request.header("authorization") or ""
        if (
            request.path.startswith("/repos/")
            and self.github_token is not None
            and auth != f"Bearer {self.github_token}"
        ):
            return _Reply(
                401,
                {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"},
            )
        if request.path.startswith("/rest/api/") and self.jira_auth is not None:
            expected = base64.b64encode(f"{self.jira_auth[0]}:{self.jira_auth[1]}".encode()).decode()
            if auth != f"Basic {expected}":
                return _Reply(401, {"errorMessages": ["You are not authenticated."], "errors": {}})
        if (
            request.path.startswith("/api/0/")
            and self.sentry_token is not None
            and auth != f"Bearer {self.sentry_token}"
        ):
            return _Reply(401, {"detail": "Invalid token"})
        return None

    def _body_text(self, request: RecordedRequest, key: str) -> str | None:
        return (
            request.body.get(key) if isinstance(request.body, dict) and isinstance(request.body.get(key), str) else None
        )

    # --- GitHub -------------------------------------------------------------------------------------------------

    def _gh_comment(self, owner: str, repo: str, number: int, comment_id: int, body: str) -> JsonObj:
        now = _now()
        return {
            "id": comment_id,
            "node_id": f"IC_kwDO{comment_id}",
            "url": f"{self.url}/repos/{owner}/{repo}/issues/comments/{comment_id}",
            "html_url": f"https://github.com/{owner}/{repo}/issues/{number}#issuecomment-{comment_id}",
            "issue_url": f"{self.url}/repos/{owner}/{repo}/issues/{number}",
            "body": body,
            "user": {"login": self.bot_login, "id": 41898282, "type": "Bot"},
            "created_at": now,
            "updated_at": now,
            "author_association": "NONE",
            "number": number,
            "repo": f"{owner}/{repo}",
        }

    def _gh_create(self, request: RecordedRequest, m: re.Match[str]) -> _Reply:
        body = self._body_text(request, "body")
        if body is None:
            return _Reply(422, {"message": "Validation Failed", "errors": [{"field": "body", "code": "missing"}]})
        if len(body) > 65_536:
            return _Reply(422, {"message": "Validation Failed: body is too long (maximum is 65536 characters)"})
        comment_id = next(self._ids)
        comment = self._gh_comment(m["owner"], m["repo"], int(m["number"]), comment_id, body)
        self.github_comments[comment_id] = comment
        return _Reply(201, comment, {"Location": comment["url"]})

    def _gh_list(self, request: RecordedRequest, m: re.Match[str]) -> _Reply:
        repo, number = f"{m['owner']}/{m['repo']}", int(m["number"])
        since = (request.query.get("since") or [""])[0]
        found = [
            c
            for c in self.github_comments.values()
            if c["repo"] == repo and c["number"] == number and c["updated_at"] >= since
        ]
        return _Reply(200, sorted(found, key=lambda c: c["id"]))

    def _gh_update(self, request: RecordedRequest, m: re.Match[str]) -> _Reply:
        comment = self.github_comments.get(int(m["id"]))
        if comment is None:
            return _Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
        body = self._body_text(request, "body")
        if body is None:
            return _Reply(422, {"message": "Validation Failed"})
        if len(body) > 65_536:
            return _Reply(422, {"message": "Validation Failed: body is too long (maximum is 65536 characters)"})
        comment.update(body=body, updated_at=_now())
        return _Reply(200, comment)

    def _gh_delete(self, request: RecordedRequest, m: re.Match[str]) -> _Reply:
        if self.github_comments.pop(int(m["id"]), None) is None:
            return _Reply(404, {"message": "Not Found"})
        return _Reply(204)

    def _gh_repo(self, request: RecordedRequest, m: re.Match[str]) -> _Reply:
        full_name = f"{m['owner']}/{m['repo']}"
        default = self.repositories.get(full_name)
        if default is None:
            return _Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
        return _Reply(
            200,
            {
                "id": 1296269,
                "name": m["repo"],
                "full_name": full_name,
                "private": True,
                "default_branch": default,
                "html_url": f"https://github.com/{full_name}",
                "clone_url": f"{self.url}/{full_name}.git",
            },
        )

    def _gh_create_pull(self, request: RecordedRequest, m: re.Match[str]) -> _Reply:
        full_name = f"{m['owner']}/{m['repo']}"
        if full_name not in self.repositories:
            return _Reply(404, {"message": "Not Found"})
        fields = {key: self._body_text(request, key) for key in ("title", "head", "base")}
        missing = [key for key, value in fields.items() if not value]
        if missing:
            errors = [{"resource": "PullRequest", "field": key, "code": "missing_field"} for key in missing]
            return _Reply(422, {"message": "Validation Failed", "errors": errors})
        head, base = str(fields["head"]), str(fields["base"])
        branches = self.branches(full_name) if self.git_root is not None else {head: "", base: ""}
        for key, name in (("head", head), ("base", base)):
            if name not in branches:
                return _Reply(
                    422,
                    {
                        "message": "Validation Failed",
                        "errors": [{"resource": "PullRequest", "field": key, "code": "invalid"}],
                    },
                )
        if any(
            p["repo"] == full_name and p["head"]["ref"] == head and p["state"] == "open" for p in self.pull_requests
        ):
            message = f"A pull request already exists for {m['owner']}:{head}."
            return _Reply(
                422,
                {
                    "message": "Validation Failed",
                    "errors": [{"resource": "PullRequest", "code": "custom", "message": message}],
                },
            )
        number = 100 + len(self.pull_requests) + 1
        now = _now()
        pull = {
            "id": next(self._ids),
            "number": number,
            "state": "open",
            "title": fields["title"],
            "body": self._body_text(request, "body") or "",
            "draft": bool(request.body.get("draft")) if isinstance(request.body, dict) else False,
            "html_url": f"https://github.com/{full_name}/pull/{number}",
            "url": f"{self.url}/repos/{full_name}/pulls/{number}",
            "head": {"ref": head, "sha": branches[head], "label": f"{m['owner']}:{head}"},
            "base": {"ref": base, "sha": branches[base], "label": f"{m['owner']}:{base}"},
            "user": {"login": self.bot_login, "type": "Bot"},
            "created_at": now,
            "updated_at": now,
            "repo": full_name,
        }
        self.pull_requests.append(pull)
        return _Reply(201, pull)

    def _gh_list_pulls(self, request: RecordedRequest, m: re.Match[str]) -> _Reply:
        full_name = f"{m['owner']}/{m['repo']}"
        head = (request.query.get("head") or [""])[0]
        state = (request.query.get("state") or ["open"])[0]
        found = [
            p
            for p in self.pull_requests
            if p["repo"] == full_name
            and (not head or p["head"]["label"] == head)
            and (state == "all" or p["state"] == state)
        ]
        return _Reply(200, found)

    # --- Jira ---------------------------------------------------------------------------------------------------

    def _jira_comment(self, key: str, comment_id: str, body: str) -> JsonObj:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
        author = {"accountId": "5b10ac8d82e05b22cc7d4ef5", "displayName": "Agent Machine", "active": True}
        return {
            "self": f"{self.url}/rest/api/2/issue/{key}/comment/{comment_id}",
            "id": comment_id,
            "author": author,
            "updateAuthor": author,
            "body": body,
            "created": now,
            "updated": now,
            "jsdPublic": True,
            "key": key,
        }

    def _jira_create(self, request: RecordedRequest, m: re.Match[str]) -> _Reply:
        body = self._body_text(request, "body")
        if body is None:
            return _Reply(400, {"errorMessages": [], "errors": {"comment": "Comment body can not be empty!"}})
        comment_id = str(next(self._ids))
        comment = self._jira_comment(m["key"], comment_id, body)
        self.jira_comments[comment_id] = comment
        return _Reply(201, comment)

    def _jira_list(self, request: RecordedRequest, m: re.Match[str]) -> _Reply:
        found = [c for c in self.jira_comments.values() if c["key"] == m["key"]]
        found.sort(key=lambda c: int(c["id"]), reverse=(request.query.get("orderBy") or [""])[0] == "-created")
        return _Reply(200, {"startAt": 0, "maxResults": 50, "total": len(found), "comments": found})

    def _jira_update(self, request: RecordedRequest, m: re.Match[str]) -> _Reply:
        comment = self.jira_comments.get(m["id"])
        if comment is None or comment["key"] != m["key"]:
            return _Reply(404, {"errorMessages": ["Can not find a comment for the id."], "errors": {}})
        body = self._body_text(request, "body")
        if body is None:
            return _Reply(400, {"errorMessages": [], "errors": {"comment": "Comment body can not be empty!"}})
        comment.update(body=body)
        return _Reply(200, comment)

    # --- Sentry -------------------------------------------------------------------------------------------------

    def _sentry_create(self, request: RecordedRequest, m: re.Match[str]) -> _Reply:
        text = self._body_text(request, "text")
        if not text:
            return _Reply(400, {"detail": "text is required"})
        note_id = str(next(self._ids))
        note = {
            "id": note_id,
            "type": "note",
            "issue": m["issue"],
            "data": {"text": text},
            "user": {"id": "1", "name": "agent-machine"},
            "dateCreated": _now(),
        }
        self.sentry_notes[note_id] = note
        return _Reply(201, note)

    def _sentry_list(self, request: RecordedRequest, m: re.Match[str]) -> _Reply:
        found = [n for n in self.sentry_notes.values() if n["issue"] == m["issue"]]
        return _Reply(200, sorted(found, key=lambda n: int(n["id"]), reverse=True))

    def _sentry_update(self, request: RecordedRequest, m: re.Match[str]) -> _Reply:
        note = self.sentry_notes.get(m["id"])
        if note is None or note["issue"] != m["issue"]:
            return _Reply(404, {"detail": "The requested resource does not exist"})
        text = self._body_text(request, "text")
        if not text:
            return _Reply(400, {"detail": "text is required"})
        note["data"] = {"text": text}
        return _Reply(200, note)
