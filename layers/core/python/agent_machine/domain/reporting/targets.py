"""Where a task reports back: a GitHub issue/PR comment, a Jira ticket comment, a Sentry issue note.

Each target can create, edit and find its one sticky comment. Responses are validated with pydantic (an answer
we cannot read is a failure, never a crash); names that go into URL paths are validated first.
"""

from __future__ import annotations

import re
from datetime import UTC, timedelta
from typing import Any, Protocol
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent_machine.domain.reporting import render
from agent_machine.domain.reporting.config import USER_AGENT, GitHubConfig, JiraConfig, SentryConfig
from agent_machine.domain.reporting.http import HttpFailure, JsonClient, Redactor
from agent_machine.models import Task

_REPO = re.compile(r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$")
_JIRA_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,49}-[0-9]{1,12}$")
_SENTRY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

# A comment this machine wrote is found again by its marker within this window before the task was created
# (clock skew between us and the API).
FIND_SKEW = timedelta(minutes=10)


class _Tolerant(BaseModel):
    # Jira and Sentry send ids as strings, but a number is the same id.
    model_config = ConfigDict(extra="ignore", populate_by_name=True, coerce_numbers_to_str=True)


class GitHubComment(_Tolerant):
    id: int
    html_url: str | None = None
    body: str | None = None


class JiraComment(_Tolerant):
    id: str
    self_url: str | None = Field(None, alias="self")
    body: Any = None


class JiraComments(_Tolerant):
    comments: list[JiraComment] = Field(default_factory=list)


class SentryNoteData(_Tolerant):
    text: str | None = None


class SentryNote(_Tolerant):
    id: str
    type: str | None = None
    data: SentryNoteData = Field(default_factory=SentryNoteData)


class CommentRef(_Tolerant):
    id: str
    url: str | None = None
    body: str | None = None  # as the API has it now, when known (a found comment may already be up to date)


class InvalidContext(Exception):
    """The task's source reference cannot be used (a malformed repository, key or id): reported, not retried."""


def _parse(model: type[_Tolerant], body: Any, what: str) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError:
        raise HttpFailure(f"{what}: the response was not the expected JSON", retryable=False) from None


class Target(Protocol):
    name: str  # also the prefix of its keys in task.report
    where: render.Where

    @property
    def id_key(self) -> str: ...

    @property
    def url_key(self) -> str: ...

    def render(self, v: render.View, *, opening: bool) -> str: ...

    def create(self, body: str) -> CommentRef: ...

    def update(self, comment_id: str, body: str) -> CommentRef | None:
        """None when the comment is gone (someone deleted it): the caller creates a new one."""
        ...

    def find(self, marker: str) -> CommentRef | None:
        """Our comment for this task if one exists (a create whose answer was lost, a crash before it was stored)."""
        ...


class _Base:
    name = "base"

    @property
    def id_key(self) -> str:
        return f"{self.name}_comment_id"

    @property
    def url_key(self) -> str:
        return f"{self.name}_comment_url"


def _gone(exc: HttpFailure) -> bool:
    return exc.status in (404, 410)


class GitHubTarget(_Base):
    name = "github"

    def __init__(self, cfg: GitHubConfig, task: Task, *, timeout: float, deadline: float, redact: Redactor) -> None:
        repo = task.repo
        number = (repo.issue_number or repo.pr_number) if repo else None
        if repo is None or not repo.full_name or not _REPO.fullmatch(repo.full_name) or ".." in repo.full_name:
            raise InvalidContext("the task's repository name is not a valid owner/name")
        if not number or number < 1:
            raise InvalidContext("the task has no issue or pull request number")
        redact.add(cfg.token)
        self.owner, self.repo = repo.full_name.split("/", 1)
        self.number = number
        self.since = (task.created_at - FIND_SKEW).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.where = render.Where(
            "issue" if repo.issue_number else "pull request", comment_approves=bool(repo.issue_number)
        )
        self.client = JsonClient(
            cfg.api_url,
            {
                "Authorization": f"Bearer {cfg.token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": USER_AGENT,
            },
            timeout=timeout,
            deadline=deadline,
            redact=redact,
        )

    @property
    def _repo_path(self) -> str:
        return f"/repos/{quote(self.owner, safe='')}/{quote(self.repo, safe='')}"

    def render(self, v: render.View, *, opening: bool) -> str:
        return render.github_body(v, self.where, opening=opening)

    def _ref(self, body: Any, what: str) -> CommentRef:
        comment: GitHubComment = _parse(GitHubComment, body, what)
        return CommentRef(id=str(comment.id), url=comment.html_url)

    def create(self, body: str) -> CommentRef:
        resp = self.client.request("POST", f"{self._repo_path}/issues/{self.number}/comments", body={"body": body})
        return self._ref(resp.body, "create comment")

    def update(self, comment_id: str, body: str) -> CommentRef | None:
        try:
            resp = self.client.request(
                "PATCH", f"{self._repo_path}/issues/comments/{quote(comment_id, safe='')}", body={"body": body}
            )
        except HttpFailure as exc:
            if _gone(exc):
                return None
            raise
        return self._ref(resp.body, "edit comment")

    def find(self, marker: str) -> CommentRef | None:
        resp = self.client.request(
            "GET", f"{self._repo_path}/issues/{self.number}/comments", query={"since": self.since, "per_page": "100"}
        )
        if not isinstance(resp.body, list):
            return None
        needle = f"<!-- {marker} -->"
        for raw in resp.body:
            comment: GitHubComment = _parse(GitHubComment, raw, "list comments")
            if comment.body and comment.body.startswith(needle):
                return CommentRef(id=str(comment.id), url=comment.html_url, body=comment.body)
        return None


class JiraTarget(_Base):
    name = "jira"

    def __init__(self, cfg: JiraConfig, task: Task, *, timeout: float, deadline: float, redact: Redactor) -> None:
        key = task.repo.jira_issue_key if task.repo else None
        if not key or not _JIRA_KEY.fullmatch(key):
            raise InvalidContext("the task's Jira issue key is not valid")
        redact.add(cfg.token)
        redact.add(cfg.basic)
        self.key = key
        self.base_url = cfg.base_url
        self.where = render.Where("ticket", comment_approves=True)
        self.client = JsonClient(
            cfg.base_url,
            {
                "Authorization": f"Basic {cfg.basic}",
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
            },
            timeout=timeout,
            deadline=deadline,
            redact=redact,
        )

    @property
    def _path(self) -> str:
        return f"/rest/api/2/issue/{quote(self.key, safe='')}/comment"

    def render(self, v: render.View, *, opening: bool) -> str:
        return render.jira_body(v, self.where, opening=opening)

    def _ref(self, body: Any, what: str) -> CommentRef:
        comment: JiraComment = _parse(JiraComment, body, what)
        return CommentRef(
            id=comment.id, url=f"{self.base_url}/browse/{self.key}?focusedCommentId={quote(comment.id, safe='')}"
        )

    def create(self, body: str) -> CommentRef:
        return self._ref(self.client.request("POST", self._path, body={"body": body}).body, "create comment")

    def update(self, comment_id: str, body: str) -> CommentRef | None:
        try:
            resp = self.client.request("PUT", f"{self._path}/{quote(comment_id, safe='')}", body={"body": body})
        except HttpFailure as exc:
            if _gone(exc):
                return None
            raise
        return self._ref(resp.body, "edit comment")

    def find(self, marker: str) -> CommentRef | None:
        resp = self.client.request("GET", self._path, query={"orderBy": "-created", "maxResults": "50"})
        page: JiraComments = _parse(JiraComments, resp.body, "list comments")
        for comment in page.comments:
            if isinstance(comment.body, str) and marker in comment.body:
                return CommentRef(
                    id=comment.id,
                    url=f"{self.base_url}/browse/{self.key}?focusedCommentId={quote(comment.id, safe='')}",
                    body=comment.body,
                )
        return None


class SentryTarget(_Base):
    name = "sentry"

    def __init__(self, cfg: SentryConfig, task: Task, *, timeout: float, deadline: float, redact: Redactor) -> None:
        issue_id = task.repo.sentry_issue_id if task.repo else None
        if not issue_id or not _SENTRY_ID.fullmatch(issue_id):
            raise InvalidContext("the task's Sentry issue id is not valid")
        redact.add(cfg.token)
        self.issue_id = issue_id
        self.issue_url = render.safe_url(task.repo.sentry_url if task.repo else None)
        self.where = render.Where("Sentry issue", comment_approves=False)
        self.client = JsonClient(
            cfg.api_url,
            {
                "Authorization": f"Bearer {cfg.token}",
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
            },
            timeout=timeout,
            deadline=deadline,
            redact=redact,
        )

    @property
    def _path(self) -> str:
        return f"/api/0/issues/{quote(self.issue_id, safe='')}/comments/"

    def render(self, v: render.View, *, opening: bool) -> str:
        return render.sentry_body(v, self.where, opening=opening)

    def _ref(self, body: Any, what: str) -> CommentRef:
        note: SentryNote = _parse(SentryNote, body, what)
        return CommentRef(id=note.id, url=self.issue_url)

    def create(self, body: str) -> CommentRef:
        return self._ref(self.client.request("POST", self._path, body={"text": body}).body, "create note")

    def update(self, comment_id: str, body: str) -> CommentRef | None:
        try:
            resp = self.client.request("PUT", f"{self._path}{quote(comment_id, safe='')}/", body={"text": body})
        except HttpFailure as exc:
            if _gone(exc):
                return None
            raise
        return self._ref(resp.body, "edit note")

    def find(self, marker: str) -> CommentRef | None:
        resp = self.client.request("GET", self._path)
        if not isinstance(resp.body, list):
            return None
        for raw in resp.body:
            note: SentryNote = _parse(SentryNote, raw, "list notes")
            if note.data.text and marker in note.data.text:
                return CommentRef(id=note.id, url=self.issue_url, body=note.data.text)
        return None
