"""The rules for defining agents, skills and webhooks at run time (the REST API's /api/agents, /api/skills and
/api/webhooks), over store/registry.py.

- Names are RegistryName (they become folder names and URL segments).
- Built-in agents (brain, planning, executor) are always listed; they can be edited (the registry then holds an
  edited copy) and reset to their default (the copy deleted), never deleted nor defined anew (409).
- Writes answer with the agent as it will run (agents.enforce: the brain and planning stay read-only, their web
  access is WEB_FETCH_DOMAINS), not with what was sent: the registry keeps what was sent.
- The runner image's own skills (agents.BUILTIN_SKILLS) are reserved names: a registry skill would replace them.
- Built-in webhooks (github, jira, sentry) are listed with the dynamic ones; they are configured through settings
  and secrets, so they can be neither edited nor deleted here.
- Webhook secrets are write-only: stored, used to verify deliveries, never returned (views say has_secret).
- A webhook's agent must exist; an agent a webhook targets cannot be deleted; filters and templates must parse.
- Every change is written together with an audit record naming the actor (one transaction).
"""

from __future__ import annotations

from typing import Any

from agent_machine.domain import agents
from agent_machine.domain.agents import BUILTIN_AGENTS, BUILTIN_SKILLS, enforce
from agent_machine.domain.registry_models import (
    AgentInput,
    Conflict,
    Invalid,
    NotFound,
    RegistryError,
    SkillInput,
    WebhookInput,
    WebhookView,
)
from agent_machine.domain.webhooks.dynamic import RESERVED_NAMES
from agent_machine.domain.webhooks.filters import FilterError, compile_filter
from agent_machine.domain.webhooks.templates import TemplateError, check_template
from agent_machine.models import NAME_PATTERN, AgentSpec, SkillSpec, WebhookSpec, utcnow
from agent_machine.secrets import get_secret
from agent_machine.store import registry

__all__ = [  # the models and errors are re-exported: callers know them as the service's
    "AgentInput",
    "Conflict",
    "Invalid",
    "NotFound",
    "RegistryError",
    "SkillInput",
    "WebhookInput",
    "WebhookView",
]

BUILTIN_WEBHOOKS: dict[str, dict[str, str]] = {
    "github": {
        "description": "GitHub issues, comments and pull requests (X-Hub-Signature-256).",
        "signature_header": "X-Hub-Signature-256",
        "secret": "github_webhook_secret",
    },
    "jira": {
        "description": "Jira Cloud issues and comments (X-Hub-Signature: sha256=...).",
        "signature_header": "X-Hub-Signature",
        "secret": "jira_webhook_secret",
    },
    "sentry": {
        "description": "Sentry alerts, issues and errors (Sentry-Hook-Signature).",
        "signature_header": "Sentry-Hook-Signature",
        "secret": "sentry_webhook_secret",
    },
}


def _name(name: str) -> str:
    """A name from a URL path: one that cannot be valid cannot exist either (404, not 422)."""
    if not NAME_PATTERN.fullmatch(name):
        raise NotFound(f"'{name[:64]}' is not a valid name")
    return name


def _body_name(path_name: str | None, body_name: str | None) -> str:
    if path_name is not None and body_name is not None and body_name != path_name:
        raise Invalid(f"the body's name '{body_name}' differs from the path's '{path_name}'")
    name = path_name or body_name
    if not name:
        raise Invalid("name is required")
    return name


# --- agents -----------------------------------------------------------------------------------------------------


def list_agents() -> list[AgentSpec]:
    return agents.list_agents()


def get_agent(name: str) -> AgentSpec:
    try:
        return agents.get_agent(_name(name))
    except agents.UnknownAgent as exc:
        raise NotFound(f"no agent named '{name}'") from exc


def _agent_spec(name: str, data: AgentInput, actor: str) -> AgentSpec:
    fields = data.model_dump(exclude={"name"})
    return AgentSpec(name=name, builtin=name in BUILTIN_AGENTS, updated_at=utcnow(), updated_by=actor, **fields)


def create_agent(data: AgentInput, actor: str) -> AgentSpec:
    name = _body_name(None, data.name)
    if name in BUILTIN_AGENTS:
        raise Conflict(f"'{name}' is a built-in agent: edit it with PUT /api/agents/{name}")
    spec = _agent_spec(name, data, actor)
    if not registry.put("agent", spec, actor=actor, create_only=True):
        raise Conflict(f"an agent named '{name}' exists already")
    return enforce(spec)


def update_agent(name: str, data: AgentInput, actor: str) -> AgentSpec:
    name = _body_name(_name(name), data.name)
    if name not in BUILTIN_AGENTS and registry.get("agent", name, AgentSpec) is None:
        raise NotFound(f"no agent named '{name}'")
    spec = _agent_spec(name, data, actor)
    registry.put("agent", spec, actor=actor)
    return enforce(spec)


def reset_agent(name: str, actor: str) -> AgentSpec:
    if _name(name) not in BUILTIN_AGENTS:
        if registry.get("agent", name, AgentSpec) is None:
            raise NotFound(f"no agent named '{name}'")
        raise Conflict(f"'{name}' is not a built-in agent: there is no default to reset to")
    registry.delete("agent", name, actor=actor)  # False when it was never edited: already the default
    return enforce(BUILTIN_AGENTS[name])


def delete_agent(name: str, actor: str) -> AgentSpec | None:
    """Deletes a defined agent (None), or resets a built-in one (its default)."""

    if _name(name) in BUILTIN_AGENTS:
        return reset_agent(name, actor)
    users = [w.name for w in registry.list_kind("webhook", WebhookSpec) if w.agent == name]
    if users:
        raise Conflict(f"agent '{name}' is the target of webhook(s) {', '.join(sorted(users))}")
    if not registry.delete("agent", name, actor=actor):
        raise NotFound(f"no agent named '{name}'")
    return None


# --- skills -----------------------------------------------------------------------------------------------------


def list_skills() -> list[SkillSpec]:
    return sorted(registry.list_kind("skill", SkillSpec), key=lambda s: s.name)


def get_skill(name: str) -> SkillSpec:
    skill = registry.get("skill", _name(name), SkillSpec)
    if skill is None:
        raise NotFound(f"no skill named '{name}'")
    return skill


def _skill_spec(name: str, data: SkillInput, actor: str) -> SkillSpec:
    return SkillSpec(name=name, updated_at=utcnow(), updated_by=actor, **data.model_dump(exclude={"name"}))


def _not_builtin_skill(name: str) -> str:
    if name in BUILTIN_SKILLS:
        raise Conflict(f"'{name}' is a built-in skill of the runner image: choose another name")
    return name


def create_skill(data: SkillInput, actor: str) -> SkillSpec:
    spec = _skill_spec(_not_builtin_skill(_body_name(None, data.name)), data, actor)
    if not registry.put("skill", spec, actor=actor, create_only=True):
        raise Conflict(f"a skill named '{spec.name}' exists already")
    return spec


def update_skill(name: str, data: SkillInput, actor: str) -> SkillSpec:
    name = _not_builtin_skill(_body_name(_name(name), data.name))
    if registry.get("skill", name, SkillSpec) is None:
        raise NotFound(f"no skill named '{name}'")
    spec = _skill_spec(name, data, actor)
    registry.put("skill", spec, actor=actor)
    return spec


def delete_skill(name: str, actor: str) -> None:
    if not registry.delete("skill", _name(name), actor=actor):
        raise NotFound(f"no skill named '{name}'")


# --- webhooks ---------------------------------------------------------------------------------------------------


def _builtin_view(name: str) -> WebhookView:
    info = BUILTIN_WEBHOOKS[name]
    secret_name: Any = info["secret"]
    return WebhookView(
        name=name,
        description=info["description"],
        builtin=True,
        agent="routed",
        prompt_template=None,
        filter=None,
        signature_header=info["signature_header"],
        enabled=True,
        has_secret=bool(get_secret(secret_name)),
        path=f"/webhooks/{name}",
    )


def view(spec: WebhookSpec) -> WebhookView:
    return WebhookView(
        name=spec.name,
        description=spec.description,
        builtin=False,
        agent=spec.agent,
        prompt_template=spec.prompt_template,
        filter=spec.filter,
        signature_header=spec.signature_header,
        enabled=spec.enabled,
        has_secret=bool(spec.secret),
        path=f"/webhooks/{spec.name}",
        updated_at=spec.updated_at,
        updated_by=spec.updated_by,
    )


def list_webhooks() -> list[WebhookView]:
    stored = sorted(registry.list_kind("webhook", WebhookSpec), key=lambda w: w.name)
    return [_builtin_view(n) for n in BUILTIN_WEBHOOKS] + [view(w) for w in stored]


def get_webhook(name: str) -> WebhookView:
    if name in BUILTIN_WEBHOOKS:
        return _builtin_view(name)
    spec = registry.get("webhook", _name(name), WebhookSpec)
    if spec is None:
        raise NotFound(f"no webhook named '{name}'")
    return view(spec)


def _check_webhook(data: WebhookInput) -> None:
    if data.filter is not None and data.filter.strip():
        try:
            compile_filter(data.filter)
        except FilterError as exc:
            raise Invalid(f"filter: {exc}") from exc
    try:
        check_template(data.prompt_template)
    except TemplateError as exc:
        raise Invalid(f"prompt_template: {exc}") from exc
    try:
        agents.get_agent(data.agent)
    except agents.UnknownAgent as exc:
        raise Invalid(f"agent: no agent named '{data.agent}'") from exc


def _webhook_spec(name: str, data: WebhookInput, actor: str, secret: str | None) -> WebhookSpec:
    fields = data.model_dump(exclude={"name", "secret"})
    fields["filter"] = (data.filter or "").strip() or None
    return WebhookSpec(name=name, builtin=False, secret=secret, updated_at=utcnow(), updated_by=actor, **fields)


def create_webhook(data: WebhookInput, actor: str) -> WebhookView:
    name = _body_name(None, data.name)
    if name in RESERVED_NAMES:
        raise Conflict(f"'{name}' is reserved (built-in webhooks: {', '.join(BUILTIN_WEBHOOKS)})")
    if not data.secret:
        raise Invalid("secret: a webhook needs an HMAC secret (16 to 256 characters)")
    _check_webhook(data)
    spec = _webhook_spec(name, data, actor, data.secret)
    if not registry.put("webhook", spec, actor=actor, create_only=True):
        raise Conflict(f"a webhook named '{name}' exists already")
    return view(spec)


def update_webhook(name: str, data: WebhookInput, actor: str) -> WebhookView:
    """Replace a dynamic webhook's definition; an omitted secret keeps the current one."""

    if name in BUILTIN_WEBHOOKS:
        raise Conflict(f"'{name}' is a built-in webhook: it is configured by settings and secrets")
    name = _body_name(_name(name), data.name)
    current = registry.get("webhook", name, WebhookSpec)
    if current is None:
        raise NotFound(f"no webhook named '{name}'")
    _check_webhook(data)
    spec = _webhook_spec(name, data, actor, data.secret or current.secret)
    registry.put("webhook", spec, actor=actor)
    return view(spec)


def delete_webhook(name: str, actor: str) -> None:
    if name in BUILTIN_WEBHOOKS:
        raise Conflict(f"'{name}' is a built-in webhook and cannot be deleted")
    if not registry.delete("webhook", _name(name), actor=actor):
        raise NotFound(f"no webhook named '{name}'")


def audit_log(limit: int = 100) -> list[dict[str, Any]]:
    return registry.audit_log(limit)
