"""The registry: agents (built-ins editable and resettable), skills, and webhooks (built-ins listed, secrets
write-only), plus the audit trail of changes. The rules live in agent_machine.domain.registry_service."""

from __future__ import annotations

from typing import Annotated, Any

from agent_machine.domain.registry_models import AgentInput, SkillInput, WebhookInput, WebhookView
from agent_machine.models import AgentSpec, SkillSpec
from fastapi import APIRouter, Depends, Query, Response, Security
from pydantic import BaseModel

from machine_api.deps import actor, bearer_scheme

router = APIRouter(prefix="/api", dependencies=[Security(bearer_scheme)])
Actor = Annotated[str, Depends(actor)]


class AgentList(BaseModel):
    items: list[AgentSpec]


class SkillList(BaseModel):
    items: list[SkillSpec]


class WebhookList(BaseModel):
    items: list[WebhookView]


class AuditList(BaseModel):
    items: list[dict[str, Any]]


def _svc() -> Any:
    from agent_machine.domain import registry_service  # lazy: keeps boto3 off the API cold start

    return registry_service


# --- agents -----------------------------------------------------------------------------------------------------


@router.get("/agents", response_model=AgentList, tags=["agents"], summary="Built-in and defined agents")
def list_agents() -> AgentList:
    return AgentList(items=_svc().list_agents())


@router.get("/agents/{name}", response_model=AgentSpec, tags=["agents"])
def get_agent(name: str) -> AgentSpec:
    spec: AgentSpec = _svc().get_agent(name)
    return spec


@router.post("/agents", response_model=AgentSpec, status_code=201, tags=["agents"], summary="Define an agent")
def create_agent(data: AgentInput, who: Actor) -> AgentSpec:
    spec: AgentSpec = _svc().create_agent(data, who)
    return spec


@router.put(
    "/agents/{name}",
    response_model=AgentSpec,
    tags=["agents"],
    summary="Replace an agent's definition (built-ins too: the edited copy is used until reset)",
)
def update_agent(name: str, data: AgentInput, who: Actor) -> AgentSpec:
    spec: AgentSpec = _svc().update_agent(name, data, who)
    return spec


@router.delete(
    "/agents/{name}",
    tags=["agents"],
    response_model=None,
    summary="Delete a defined agent (204), or reset a built-in one to its default (200 + the default)",
)
def delete_agent(name: str, who: Actor) -> AgentSpec | Response:
    default: AgentSpec | None = _svc().delete_agent(name, who)
    return Response(status_code=204) if default is None else default


@router.post(
    "/agents/{name}/reset", response_model=AgentSpec, tags=["agents"], summary="Reset a built-in agent to its default"
)
def reset_agent(name: str, who: Actor) -> AgentSpec:
    spec: AgentSpec = _svc().reset_agent(name, who)
    return spec


# --- skills -----------------------------------------------------------------------------------------------------


@router.get("/skills", response_model=SkillList, tags=["skills"])
def list_skills() -> SkillList:
    return SkillList(items=_svc().list_skills())


@router.get("/skills/{name}", response_model=SkillSpec, tags=["skills"])
def get_skill(name: str) -> SkillSpec:
    spec: SkillSpec = _svc().get_skill(name)
    return spec


@router.post("/skills", response_model=SkillSpec, status_code=201, tags=["skills"])
def create_skill(data: SkillInput, who: Actor) -> SkillSpec:
    spec: SkillSpec = _svc().create_skill(data, who)
    return spec


@router.put("/skills/{name}", response_model=SkillSpec, tags=["skills"])
def update_skill(name: str, data: SkillInput, who: Actor) -> SkillSpec:
    spec: SkillSpec = _svc().update_skill(name, data, who)
    return spec


@router.delete("/skills/{name}", status_code=204, tags=["skills"])
def delete_skill(name: str, who: Actor) -> Response:
    _svc().delete_skill(name, who)
    return Response(status_code=204)


# --- webhooks ---------------------------------------------------------------------------------------------------


@router.get(
    "/webhooks",
    response_model=WebhookList,
    tags=["webhooks"],
    summary="Built-in (github, jira, sentry) and defined webhooks; secrets are never returned",
)
def list_webhooks() -> WebhookList:
    return WebhookList(items=_svc().list_webhooks())


@router.get("/webhooks/{name}", response_model=WebhookView, tags=["webhooks"])
def get_webhook(name: str) -> WebhookView:
    view: WebhookView = _svc().get_webhook(name)
    return view


@router.post(
    "/webhooks",
    response_model=WebhookView,
    status_code=201,
    tags=["webhooks"],
    summary="Define a webhook: POST /webhooks/{name} then verifies, filters and queues tasks",
)
def create_webhook(data: WebhookInput, who: Actor) -> WebhookView:
    view: WebhookView = _svc().create_webhook(data, who)
    return view


@router.put(
    "/webhooks/{name}",
    response_model=WebhookView,
    tags=["webhooks"],
    summary="Replace a defined webhook (an omitted secret keeps the current one)",
)
def update_webhook(name: str, data: WebhookInput, who: Actor) -> WebhookView:
    view: WebhookView = _svc().update_webhook(name, data, who)
    return view


@router.delete("/webhooks/{name}", status_code=204, tags=["webhooks"])
def delete_webhook(name: str, who: Actor) -> Response:
    _svc().delete_webhook(name, who)
    return Response(status_code=204)


# --- audit ------------------------------------------------------------------------------------------------------


@router.get("/audit", response_model=AuditList, tags=["registry"], summary="Registry changes, newest first")
def audit(limit: Annotated[int, Query(ge=1, le=500)] = 100) -> AuditList:
    return AuditList(items=_svc().audit_log(limit))
