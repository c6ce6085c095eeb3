"""Domain models: what the machine stores and passes between its parts. Pydantic at every boundary."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

# The message becomes an argument of the CLI's command line: exec refuses a NUL byte and a lone surrogate cannot be
# encoded, and terminal escapes have no business in a prompt. Refused: C0 controls but tab, LF and CR; DEL and the
# C1 controls; UTF-16 surrogates (JSON's "\ud800" decodes to one).
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def control_character(value: str) -> str | None:
    """Why `value` cannot be a prompt or a session id (its first forbidden character), or None."""
    found = _FORBIDDEN.search(value)
    return f"control character U+{ord(found.group()):04X} at position {found.start()}" if found else None


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# Fixed-width ISO-8601 in UTC so stored timestamps sort as strings (DynamoDB sort keys).
Timestamp = Annotated[datetime, PlainSerializer(iso, return_type=str, when_used="json")]


def new_id() -> str:
    return str(uuid.uuid4())


def _legacy_run_mode(value: object) -> object:
    # Tasks stored by earlier versions may say "local" for a long run handed to a child process: a Fargate run.
    return "fargate" if value == "local" else value


# Where a task ran: the runner's Lambda function, or a Fargate task (ecs:RunTask).
RunMode = Annotated[Literal["lambda", "fargate"], BeforeValidator(_legacy_run_mode)]


class TaskStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"
    TIMED_OUT = "timed_out"

    @property
    def terminal(self) -> bool:
        return self not in (TaskStatus.QUEUED, TaskStatus.RUNNING)


class TaskSource(StrEnum):
    CHAT = "chat"
    GITHUB = "github"
    JIRA = "jira"
    SENTRY = "sentry"
    WEBHOOK = "webhook"
    AGENT = "agent"


class Model(BaseModel):
    model_config = ConfigDict(extra="ignore", use_enum_values=False)


class TokenUsage(Model):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens + other.cache_read_input_tokens,
            cache_creation_input_tokens=self.cache_creation_input_tokens + other.cache_creation_input_tokens,
        )


class ModelUsage(TokenUsage):
    cost_usd: float = 0.0


class RepoContext(Model):
    """Where work came from and where to report back: kept on the task, never used to pick tools."""

    full_name: str | None = None  # "owner/repo"
    clone_url: str | None = None
    ref: str | None = None
    issue_number: int | None = None
    pr_number: int | None = None
    issue_url: str | None = None
    comment_url: str | None = None
    jira_issue_key: str | None = None
    jira_base_url: str | None = None
    sentry_issue_id: str | None = None
    sentry_url: str | None = None


class Task(Model):
    task_id: str = Field(default_factory=new_id)
    session_id: str
    agent: str = "brain"
    source: TaskSource = TaskSource.CHAT
    source_name: str | None = None  # a dynamic webhook's name, or the sender for built-ins
    title: str | None = None
    prompt: str
    status: TaskStatus = TaskStatus.QUEUED
    created_at: Timestamp = Field(default_factory=utcnow)
    updated_at: Timestamp = Field(default_factory=utcnow)
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    heartbeat_at: Timestamp | None = None
    attempt: int = 0
    runner_id: str | None = None
    run_mode: RunMode | None = None
    parent_task_id: str | None = None
    depth: int = 0
    result: str | None = None
    error: str | None = None
    error_kind: str | None = None
    stop_requested: bool = False
    cost_usd: float = 0.0
    # What the runner's model proxy metered at the wire for this run (None: the run never started the CLI).
    proxy_cost_usd: float | None = None
    max_budget_usd: float | None = None
    # What the task held of the day's budget while it ran (its cap, at most the daily cap), and on which UTC day:
    # given back, with the real cost booked, when it ends (domain/lifecycle.py).
    reserved_usd: float | None = None
    reserved_day: str | None = None
    usage: TokenUsage = Field(default_factory=TokenUsage)
    model_usage: dict[str, ModelUsage] = Field(default_factory=dict)
    num_turns: int = 0
    duration_ms: int = 0
    cli_session_id: str | None = None
    resume_cli_session_id: str | None = None
    last_seq: int = 0
    repo: RepoContext | None = None
    plan: str | None = None
    report: dict[str, str] = Field(default_factory=dict)  # report-back state (e.g. GitHub comment id)


class Session(Model):
    session_id: str = Field(default_factory=new_id)
    title: str = "New session"
    agent: str = "brain"
    source: TaskSource = TaskSource.CHAT
    cli_session_id: str | None = None
    cli_total_cost_usd: float = 0.0  # the CLI's cumulative total at the end of the last run
    created_at: Timestamp = Field(default_factory=utcnow)
    updated_at: Timestamp = Field(default_factory=utcnow)
    task_count: int = 0
    total_cost_usd: float = 0.0
    total_input_tokens: int = 0
    total_output_tokens: int = 0


ALL_TASKS_TOPIC = "all"  # dashboards watching every task's lifecycle (not its output)


class Subscription(Model):
    kind: Literal["session", "task", "all"]
    id: str = ""

    @property
    def topic(self) -> str:
        return ALL_TASKS_TOPIC if self.kind == "all" else f"{self.kind}#{self.id}"


class Connection(Model):
    connection_id: str
    connected_at: Timestamp = Field(default_factory=utcnow)
    expires_at: int  # epoch seconds (DynamoDB TTL)
    subscriptions: list[Subscription] = Field(default_factory=list)


class CostRecord(Model):
    """An aggregate bucket: a day's total, or a day's share for one agent, source or session."""

    day: str
    key: str  # "TOTAL", "AGENT#brain", "SOURCE#github", "SESSION#<id>"
    cost_usd: float = 0.0
    tasks: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


class EventType(StrEnum):
    CREATED = "task.created"
    STARTED = "task.started"
    OUTPUT = "task.output"
    COMPLETED = "task.completed"
    FAILED = "task.failed"
    STOPPED = "task.stopped"


class TaskEvent(Model):
    """One event of a task's life as pushed to WebSocket clients and kept for replay."""

    type: EventType
    task_id: str
    session_id: str
    seq: int
    ts: str = Field(default_factory=lambda: iso(utcnow()))
    payload: dict[str, Any] = Field(default_factory=dict)


class DeliveryDecision(StrEnum):
    TASK_CREATED = "task_created"
    IGNORED = "ignored"
    ANSWERED = "answered"  # ping, installation


class WebhookDelivery(Model):
    """A webhook that came in and what was decided. Its conditional put is also the redelivery guard."""

    delivery_key: str  # "<sender>#<delivery id>"
    sender: str
    delivery_id: str
    event: str
    action: str | None = None
    received_at: Timestamp = Field(default_factory=utcnow)
    decision: DeliveryDecision
    reason: str
    task_id: str | None = None
    status_code: int = 202
    response: dict[str, Any] = Field(default_factory=dict)
    expires_at: int = 0


class PermissionMode(StrEnum):
    DEFAULT = "default"
    ACCEPT_EDITS = "acceptEdits"
    PLAN = "plan"
    BYPASS = "bypassPermissions"
    DONT_ASK = "dontAsk"


def _check_name(value: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise ValueError("must be 1-63 chars of lowercase letters, digits, '-' or '_', starting with a letter or digit")
    return value


# Registry names become folder names and URL segments: no path traversal, no surprises.
RegistryName = Annotated[str, AfterValidator(_check_name)]


class AgentSpec(Model):
    name: RegistryName
    description: str = ""
    instructions: str = ""
    allowed_tools: list[str] = Field(default_factory=list)
    disallowed_tools: list[str] = Field(default_factory=list)
    permission_mode: PermissionMode = PermissionMode.DONT_ASK
    model: str | None = None
    max_turns: int = Field(30, ge=1, le=500)
    max_budget_usd: float | None = Field(None, gt=0)
    long_running: bool = False
    builtin: bool = False
    updated_at: Timestamp = Field(default_factory=utcnow)
    updated_by: str = "system"


class SkillSpec(Model):
    name: RegistryName
    description: str = Field("", max_length=1024)
    content: str = Field("", max_length=100_000)
    agents: list[str] = Field(default_factory=list)
    updated_at: Timestamp = Field(default_factory=utcnow)
    updated_by: str = "system"


class WebhookSpec(Model):
    name: RegistryName
    description: str = ""
    builtin: bool = False
    agent: str = "planning"
    prompt_template: str = "A webhook event arrived:\n{payload}"
    filter: str | None = None  # "$.action == 'opened'" style
    secret: str | None = None  # write-only: never returned by the API
    signature_header: str = "X-Signature-256"
    enabled: bool = True
    updated_at: Timestamp = Field(default_factory=utcnow)
    updated_by: str = "system"
