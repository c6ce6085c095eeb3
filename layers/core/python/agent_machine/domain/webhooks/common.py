"""Pieces the sender modules share: tolerant pydantic base, null-safe lists, the plan lookup hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict

from agent_machine.models import Task

T = TypeVar("T")


class Payload(BaseModel):
    """Tolerant: unknown fields ignored (senders add fields all the time), nulls allowed where senders send them."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _none_to_list(value: Any) -> Any:
    return [] if value is None else value


NullableList = Annotated[list[T], BeforeValidator(_none_to_list)]

# session id -> the newest completed planning task with a plan in it (plans.latest_plan; tests pass a fake).
PlanLookup = Callable[[str], Task | None]
