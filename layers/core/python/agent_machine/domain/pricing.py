"""What a model response costs: the price table and the formula, the same as the `claude` CLI's (2.1.197).

The runner's model proxy meters every response with this, and the task stores that figure next to the CLI's own
`total_cost_usd`: both must agree, so the table, the family names and the formula follow the CLI's (its
`modelCost` table: per million tokens for input, output, 5-minute and 1-hour cache writes and cache reads, plus
$0.01 per web search). A model the table does not know is priced like the CLI prices one (its default model's
price, Opus 4.x). Long-context (> 200k) surcharges are not in the CLI's table, so not here either.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PER_MILLION = 1_000_000


@dataclass(frozen=True)
class ModelPrice:
    """US dollars per million tokens (web searches: per request)."""

    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float
    web_search: float = 0.01


HAIKU_3_5 = ModelPrice(0.8, 4, 1, 1.6, 0.08)
HAIKU_4_5 = ModelPrice(1, 5, 1.25, 2, 0.1)
SONNET = ModelPrice(3, 15, 3.75, 6, 0.3)
OPUS_4_0 = ModelPrice(15, 75, 18.75, 30, 1.5)
OPUS_4_5 = ModelPrice(5, 25, 6.25, 10, 0.5)
FABLE = ModelPrice(10, 50, 12.5, 20, 1)
FAST_OPUS_4_8 = FABLE  # "fast" speed, as the CLI prices it
FAST_OPUS_4_6 = ModelPrice(30, 150, 37.5, 60, 3)

PRICES: dict[str, ModelPrice] = {
    "claude-3-5-haiku": HAIKU_3_5,
    "claude-haiku-4-5": HAIKU_4_5,
    "claude-3-5-sonnet": SONNET,
    "claude-3-7-sonnet": SONNET,
    "claude-sonnet-4-0": SONNET,
    "claude-sonnet-4-5": SONNET,
    "claude-sonnet-4-6": SONNET,
    "claude-sonnet-5": SONNET,
    "claude-opus-4-0": OPUS_4_0,
    "claude-opus-4-1": OPUS_4_0,
    "claude-opus-4-5": OPUS_4_5,
    "claude-opus-4-6": OPUS_4_5,
    "claude-opus-4-7": OPUS_4_5,
    "claude-opus-4-8": OPUS_4_5,
    "claude-fable-5": FABLE,
    "claude-mythos-5": FABLE,
}
DEFAULT_PRICE = OPUS_4_5

# Family names in the order the CLI tries them: a model id (first-party, Bedrock `us.anthropic.…-v1:0`, dated
# or not) is known by the first family it contains.
_FAMILIES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("claude-fable-5", r"claude-fable-5"),
        ("claude-mythos-5", r"claude-mythos-5"),
        ("claude-opus-4-8", r"claude-opus-4-8"),
        ("claude-opus-4-7", r"claude-opus-4-7"),
        ("claude-opus-4-6", r"claude-opus-4-6"),
        ("claude-opus-4-5", r"claude-opus-4-5"),
        ("claude-opus-4-1", r"claude-opus-4-1"),
        ("claude-opus-4-0", r"claude-opus-4(?!-\d(?!\d))"),
        ("claude-sonnet-5", r"claude-sonnet-5"),
        ("claude-sonnet-4-6", r"claude-sonnet-4-6"),
        ("claude-sonnet-4-5", r"claude-sonnet-4-5"),
        ("claude-sonnet-4-0", r"claude-sonnet-4(?!-\d(?!\d))"),
        ("claude-haiku-4-5", r"claude-haiku-4-5"),
        ("claude-3-7-sonnet", r"claude-3-7-sonnet"),
        ("claude-3-5-sonnet", r"claude-3-5-sonnet"),
        ("claude-3-5-haiku", r"claude-3-5-haiku"),
    )
)


def family(model: str) -> str:
    """The price-table name of a model id (lower-cased; a date suffix dropped when no family matches)."""
    name = model.lower()
    for family_name, pattern in _FAMILIES:
        if pattern.search(name):
            return family_name
    return re.sub(r"-\d{8}$", "", name)


def price_of(model: str, *, speed: str | None = None) -> ModelPrice:
    name = family(model)
    if speed == "fast":
        if name == "claude-opus-4-8":
            return FAST_OPUS_4_8
        if name in ("claude-opus-4-6", "claude-opus-4-7"):
            return FAST_OPUS_4_6
    return PRICES.get(name, DEFAULT_PRICE)


def _count(usage: Mapping[str, Any], key: str) -> int:
    value = usage.get(key)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else 0


def cost_usd(model: str, usage: Mapping[str, Any]) -> float:
    """The cost of one response from its `usage` object (the Messages API's field names)."""
    price = price_of(model, speed=usage.get("speed") if isinstance(usage.get("speed"), str) else None)
    written = _count(usage, "cache_creation_input_tokens")
    detail = usage.get("cache_creation")
    written_1h = min(_count(detail, "ephemeral_1h_input_tokens"), written) if isinstance(detail, Mapping) else 0
    tools = usage.get("server_tool_use")
    searches = _count(tools, "web_search_requests") if isinstance(tools, Mapping) else 0
    return (
        _count(usage, "input_tokens") * price.input
        + _count(usage, "output_tokens") * price.output
        + _count(usage, "cache_read_input_tokens") * price.cache_read
        + written_1h * price.cache_write_1h
        + (written - written_1h) * price.cache_write_5m
    ) / PER_MILLION + searches * price.web_search
