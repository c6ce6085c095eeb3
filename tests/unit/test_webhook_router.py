"""The webhook router documents exactly the domain's built-in senders: a sender added to one table and not the
other would be undocumented (no path of its own in the OpenAPI) or served as an unknown user-defined webhook."""

from __future__ import annotations

from agent_machine.domain.webhooks import dynamic, receive
from machine_api import webhooks


def test_the_router_and_the_domain_know_the_same_senders() -> None:
    assert set(webhooks.SENDERS) == set(receive.SENDERS)


def test_no_user_defined_webhook_can_take_a_built_in_senders_name() -> None:
    assert set(receive.SENDERS) <= dynamic.RESERVED_NAMES


def test_each_built_in_sender_has_its_documented_route_before_the_user_defined_one() -> None:
    paths = [getattr(route, "path", "") for route in webhooks.router.routes]
    for sender in webhooks.SENDERS:
        assert paths.index(f"/webhooks/{sender}") < paths.index("/webhooks/{name}")
        assert paths.index(f"/webhooks/{sender}/") < paths.index("/webhooks/{name}/")
