"""What the registry's callers send and see (AgentInput, SkillInput, WebhookInput, WebhookView) and its errors.

Apart from registry_service so that the REST API can declare its routes with them at cold start without the
service's store (boto3) coming along: the service is imported when a registry route is first called.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from agent_machine.models import PermissionMode, RegistryName

ToolRule = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:/\[\]\-]+$")]
HeaderName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9\-]+$")]
AgentRef = Annotated[str, StringConstraints(max_length=63, pattern=r"^(\*|[a-z0-9][a-z0-9_-]{0,62})$")]


class RegistryError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(RegistryError):
    status_code, code = 404, "not_found"


class Conflict(RegistryError):
    status_code, code = 409, "conflict"


class Invalid(RegistryError):
    status_code, code = 422, "invalid"


class _Input(BaseModel):
    # Dashboards send back what they read (builtin, updated_at...): ignore what is not an input.
    model_config = ConfigDict(extra="ignore")


class AgentInput(_Input):
    name: RegistryName | None = None
    description: str = Field("", max_length=2000)
    instructions: str = Field("", max_length=100_000)
    allowed_tools: list[ToolRule] = Field(default_factory=list, max_length=200)
    disallowed_tools: list[ToolRule] = Field(default_factory=list, max_length=200)
    permission_mode: PermissionMode = PermissionMode.DONT_ASK
    model: ModelName | None = None
    max_turns: int = Field(30, ge=1, le=500)
    max_budget_usd: float | None = Field(None, gt=0, le=1000)
    long_running: bool = False


class SkillInput(_Input):
    name: RegistryName | None = None
    description: str = Field("", max_length=1024)
    content: str = Field("", max_length=100_000)
    agents: list[AgentRef] = Field(default_factory=list, max_length=100)


class WebhookInput(_Input):
    name: RegistryName | None = None
    description: str = Field("", max_length=1000)
    agent: RegistryName = "planning"
    prompt_template: str = Field("A webhook event arrived:\n{payload}", min_length=1, max_length=20_000)
    filter: str | None = Field(None, max_length=1000)
    secret: str | None = Field(None, min_length=16, max_length=256)
    signature_header: HeaderName = "X-Signature-256"
    enabled: bool = True


class WebhookView(BaseModel):
    """What the API shows of a webhook: never its secret."""

    name: str
    description: str
    builtin: bool
    agent: str
    prompt_template: str | None
    filter: str | None
    signature_header: str
    enabled: bool
    has_secret: bool
    path: str
    updated_at: datetime | None = None
    updated_by: str | None = None
