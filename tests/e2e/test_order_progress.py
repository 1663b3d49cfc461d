"""An order has a state of its own, derived from its instances, and says when it is done."""

from __future__ import annotations

import uuid
from pathlib import Path

from cloudstate.domain.events import EventRecord
from cloudstate.embedded import CloudState
from cloudstate.service import queries


def _instances(count: int, **extra: str) -> list[dict[str, str]]:
    return [{"uuid": str(uuid.uuid4()), **extra} for _ in range(count)]


def test_an_order_moves_through_launching_and_completes_running(tmp_path: Path) -> None:
    """All instances running: accepted → launching → running, and one order.completed event
    reaches a subscriber that filters on the order."""
    with CloudState(home=tmp_path, simulator_fast=True) as cs:
        got: list[EventRecord] = []
        order = cs.launch(image="img-basic", hardware_profile="small", instances=_instances(3))
        cs.subscribe(got.append, name="order-watch", order=str(order.id))
        assert cs.burst(30)
        assert queries.get_order(cs.store, order.id).state == "running"
        order_events = [e for e in got if e.type.startswith("order.")]
        assert [(e.type, e.data["state"]) for e in order_events] == [
            ("order.state_changed", "launching"),
            ("order.state_changed", "running"),
            ("order.completed", "running"),
        ]
        assert order_events[-1].data["instances"] == {"running": 3}


def test_an_order_with_a_failed_launch_completes_partial(tmp_path: Path) -> None:
    """One instance asks for an image the cloud does not have: the order ends ``partial`` and
    its completion event counts what happened."""
    with CloudState(home=tmp_path, simulator_fast=True) as cs:
        instances = _instances(2) + _instances(1, image="img-missing")
        order = cs.launch(image="img-basic", hardware_profile="small", instances=instances)
        assert cs.burst(30)
        assert queries.get_order(cs.store, order.id).state == "partial"
        [done] = [e for e in cs.events(limit=1000) if e.type == "order.completed"]
        assert done.order_id == order.id
        assert done.data["instances"] == {"running": 2, "error": 1}
