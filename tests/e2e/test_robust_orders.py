"""Robust launching on the simulated cloud: orders that roll back, fail over and finish.

Each test runs the real engine (``burst``, or its threads) against a simulator file and checks
the outcome twice: in cloudstate (order and instance states, events) and in the cloud itself
(the simulator's ledger: what was really created and destroyed).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server import burst_worker

from cloudstate.domain.events import EventRecord, EventType
from cloudstate.domain.states import InstanceState
from cloudstate.embedded import CloudState
from cloudstate.exceptions import ConflictError, NotFoundError, ValidationError
from cloudstate.providers.simulator import SimulatedCloud
from cloudstate.service.order_control import cancel_order
from cloudstate.service.queries import get_order
from cloudstate.service.views import OrderView
from cloudstate.testing import simulated_cloud, wait_until

ACCOUNT = "simulator"
BAD_IMAGE = "img-that-does-not-exist"  # the simulator refuses it: a permanent launch failure


@pytest.fixture
def cs(tmp_path: Path) -> Iterator[CloudState]:
    with CloudState(home=tmp_path / "home", simulator_fast=True) as opened:
        yield opened


@pytest.fixture
def cloud(cs: CloudState) -> Iterator[SimulatedCloud]:
    opened = simulated_cloud(cs.settings.simulator_path)
    yield opened
    opened.close()


def order_of(*instances: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "image": "img-basic",
        "hardware_profile": "small",
        "instances": list(instances),
        **fields,
    }


def one(**fields: Any) -> dict[str, Any]:
    return {"uuid": str(uuid.uuid4()), **fields}


def order(cs: CloudState, view: OrderView) -> OrderView:
    return get_order(cs.store, view.id)


def events(cs: CloudState, *kinds: EventType) -> list[EventRecord]:
    found: list[EventRecord] = []
    after = 0
    while page := cs.events(after=after, limit=1000):
        found += [event for event in page if event.type in kinds]
        after = page[-1].seq
    return found


def destroyed_in_the_cloud(
    cloud: SimulatedCloud, namespace: str = ACCOUNT
) -> dict[uuid.UUID, bool]:
    """Per UUID the cloud created: did it end terminated (a ``terminated`` transition)?"""
    created = {e.provider_id: e.uuid for e in cloud.ledger(namespace) if e.kind == "create"}
    ended = {
        e.provider_id
        for e in cloud.ledger(namespace)
        if e.kind == "transition" and e.to_state == "terminated"
    }
    return {u: pid in ended for pid, u in created.items() if u is not None}


def test_all_or_nothing_rolls_back_every_instance_when_one_fails(
    cs: CloudState, cloud: SimulatedCloud
) -> None:
    """One of four refused by the cloud: the order goes rolling_back → rolled_back, the
    three that were launched are destroyed (the ledger shows each terminated), and the
    order's events tell the story, the last one ``order.completed``/``rolled_back``."""
    bad = one(image=BAD_IMAGE)
    view = cs.launch(order_of(one(), one(), one(), bad, policy="all_or_nothing"))

    assert cs.burst(timeout=60)

    final = order(cs, view)
    assert final.state == "rolled_back"
    assert f"instance {bad['uuid']} failed" in final.reason
    assert {str(i.state) for i in final.instances} == {"terminated"}
    ledger = destroyed_in_the_cloud(cloud)
    assert len(ledger) == 3
    assert all(ledger.values())
    changes = [e.data["state"] for e in events(cs, EventType.ORDER_STATE_CHANGED)]
    assert changes[-2:] == ["rolling_back", "rolled_back"]
    [completed] = events(cs, EventType.ORDER_COMPLETED)
    assert completed.data["state"] == "rolled_back"
    assert completed.data["instances"] == {"terminated": 4}


def test_partial_keeps_what_launched_and_ends_partial(
    cs: CloudState, cloud: SimulatedCloud
) -> None:
    """The default policy: each instance stands alone; the order ends ``partial``."""
    view = cs.launch(order_of(one(), one(image=BAD_IMAGE)))
    assert cs.burst(timeout=60)
    final = order(cs, view)
    assert final.state == "partial"
    assert final.counts == {"running": 1, "error": 1}
    assert not any(destroyed_in_the_cloud(cloud).values())


def test_failover_from_an_account_with_no_capacity_to_the_next(
    cs: CloudState, cloud: SimulatedCloud
) -> None:
    """The first account is full (capacity 1, taken by someone else's instance): the launch
    is refused there for capacity and succeeds on the second; the instance records both
    attempts and an ``instance.failed_over`` event says where it went and why."""
    config = {"path": str(cs.settings.simulator_path), "fast": True}
    cs.add_account("full", "simulator", config=config)
    cs.add_account("spare", "simulator", config=config)
    cloud.configure(capacity=1)
    cloud.external_create("full")

    view = cs.launch(order_of(one(), accounts=["full", "spare"]))
    assert cs.burst(timeout=60)

    [instance] = order(cs, view).instances
    assert (instance.state, instance.account) == (InstanceState.RUNNING, "spare")
    attempts = [(a["account"], a["error"]) for a in instance.launch_attempts]
    assert [account for account, _ in attempts] == ["full", "spare"]
    assert "instance limit of 1 live instances reached" in (attempts[0][1] or "")
    assert attempts[1][1] is None
    [moved] = events(cs, EventType.INSTANCE_FAILED_OVER)
    assert (moved.data["from_account"], moved.data["to_account"]) == ("full", "spare")
    assert cloud.creates_per_uuid("spare") == {instance.uuid: 1}
    assert cloud.creates_per_uuid("full") == {}
    assert order(cs, view).state == "running"


def test_failover_is_bounded_by_max_attempts(cs: CloudState, cloud: SimulatedCloud) -> None:
    """``max_attempts: 1`` keeps an instance on its first account: refused there, it fails
    with the provider's reason and the spare account is never tried."""
    config = {"path": str(cs.settings.simulator_path), "fast": True}
    cs.add_account("full", "simulator", config=config)
    cs.add_account("spare", "simulator", config=config)
    cloud.configure(capacity=0)

    view = cs.launch(order_of(one(), accounts=["full", "spare"], max_attempts=1))
    assert cs.burst(timeout=60)

    [instance] = order(cs, view).instances
    assert (instance.state, instance.account) == (InstanceState.ERROR, "full")
    assert [a["account"] for a in instance.launch_attempts] == ["full"]
    assert order(cs, view).state == "failed"


def test_a_launch_timeout_fails_instances_stuck_pending(
    cs: CloudState, cloud: SimulatedCloud
) -> None:
    """Booting takes far longer than the order's one-second launch timeout: the instance is
    failed (``instance.launch_failed``, reason launch timed out), destroyed so nothing
    half-launched is left, and the order ends ``failed``: a stuck pending does not last."""
    cloud.configure(boot_seconds=120)
    view = cs.launch(order_of(one(), launch_timeout=1))

    assert cs.burst(timeout=60)

    final = order(cs, view)
    assert final.state == "failed"
    [instance] = final.instances
    assert instance.state is InstanceState.TERMINATED
    [failed] = events(cs, EventType.INSTANCE_LAUNCH_FAILED)
    assert "launch timed out" in failed.data["reason"]
    assert all(destroyed_in_the_cloud(cloud).values())


def test_a_launch_timeout_under_all_or_nothing_rolls_back(
    cs: CloudState, cloud: SimulatedCloud
) -> None:
    cloud.configure(boot_seconds=120)
    view = cs.launch(order_of(one(), one(), launch_timeout=1, policy="all_or_nothing"))
    assert cs.burst(timeout=60)
    final = order(cs, view)
    assert final.state == "rolled_back"
    assert final.reason.startswith("launch timeout: 2 instance(s) not running")
    assert all(destroyed_in_the_cloud(cloud).values())


def test_dependencies_launch_in_order(cs: CloudState, cloud: SimulatedCloud) -> None:
    """``after``: the database first, then the app once the database runs, then the proxy
    once the app runs: the cloud's ledger shows each create after its dependency's
    ``running`` transition."""
    db, app, proxy = one(name="db"), one(name="app"), one(name="proxy")
    app["after"] = [db["uuid"]]
    proxy["after"] = [app["uuid"]]
    view = cs.launch(order_of(proxy, app, db))

    assert cs.burst(timeout=60)

    assert order(cs, view).state == "running"
    ledger = cloud.ledger(ACCOUNT)
    created = {str(e.uuid): e.seq for e in ledger if e.kind == "create"}
    running = {
        str(e.uuid): e.seq for e in ledger if e.kind == "transition" and e.to_state == "running"
    }
    assert running[db["uuid"]] < created[app["uuid"]]
    assert running[app["uuid"]] < created[proxy["uuid"]]


def test_an_instance_whose_dependency_failed_is_never_launched(
    cs: CloudState, cloud: SimulatedCloud
) -> None:
    broken = one(image=BAD_IMAGE)
    waiting = one(after=[broken["uuid"]])
    view = cs.launch(order_of(broken, waiting))
    assert cs.burst(timeout=60)
    final = {str(i.uuid): i for i in order(cs, view).instances}
    assert final[waiting["uuid"]].state is InstanceState.ERROR
    assert f"dependency {broken['uuid']} is error" in final[waiting["uuid"]].state_reason
    assert cloud.creates_per_uuid(ACCOUNT) == {}


@pytest.mark.parametrize(
    ("after", "field", "message"),
    [
        ("self", "instances.0.after", "cannot wait for itself"),
        ("unknown", "instances.0.after", "no instance"),
        ("cycle", "instances.0.after", "a dependency cycle"),
    ],
)
def test_bad_dependencies_are_refused_naming_the_instance(
    cs: CloudState, after: str, field: str, message: str
) -> None:
    first, second = one(), one()
    first["after"] = {
        "self": [first["uuid"]],
        "unknown": [str(uuid.uuid4())],
        "cycle": [second["uuid"]],
    }[after]
    second["after"] = [first["uuid"]] if after == "cycle" else []
    with pytest.raises(ValidationError) as caught:
        cs.launch(order_of(first, second))
    assert [(e.field, message in e.message) for e in caught.value.errors] == [(field, True)]
    assert cs.list() == []


def test_cancel_mid_launch_leaves_nothing_running(cs: CloudState, cloud: SimulatedCloud) -> None:
    """Cancelled while its instances boot: ``rolling_back``, then ``cancelled``; every
    instance the cloud created is destroyed and none is left running."""
    cloud.configure(boot_seconds=2)
    view = cs.launch(order_of(*(one() for _ in range(4))))
    cs.start()
    try:
        wait_until(lambda: bool(cloud.creates_per_uuid(ACCOUNT)), timeout=20, what="a first create")
        assert cs.cancel(view.id).state == "rolling_back"
        wait_until(lambda: order(cs, view).state == "cancelled", timeout=30, what="cancelled")
    finally:
        cs.close()
    final = order(cs, view)
    assert {str(i.state) for i in final.instances} == {"terminated"}
    assert final.reason == "cancelled by request"
    assert all(destroyed_in_the_cloud(cloud).values())
    assert not [i for i in cloud.instances(ACCOUNT) if i.state == "running"]


def test_cancel_refuses_a_finished_order_and_names_an_unknown_one(cs: CloudState) -> None:
    view = cs.launch(order_of(one()))
    assert cs.burst(timeout=60)
    with pytest.raises(ConflictError, match="is running: it has finished"):
        cancel_order(cs.store, view.id)
    with pytest.raises(NotFoundError):
        cancel_order(cs.store, uuid.uuid4())


def test_every_order_ends_terminal_and_a_subscriber_hears_each_step(cs: CloudState) -> None:
    """Three orders (all good, partial, rolled back) all end in a terminal state, and a
    callable subscribed to order events receives every ``order.*`` event, each order's in
    order."""
    heard: list[EventRecord] = []
    cs.subscribe(heard.append, types=["order.state_changed", "order.completed"])
    views = [
        cs.launch(order_of(one(), one())),
        cs.launch(order_of(one(), one(image=BAD_IMAGE))),
        cs.launch(order_of(one(), one(image=BAD_IMAGE), policy="all_or_nothing")),
    ]
    assert cs.burst(timeout=60)

    assert [order(cs, v).state for v in views] == ["running", "partial", "rolled_back"]
    assert [o.id for o in cs.orders()] == [v.id for v in reversed(views)]  # newest first
    assert [o.id for o in cs.orders(state="partial")] == [views[1].id]
    committed = events(cs, EventType.ORDER_STATE_CHANGED, EventType.ORDER_COMPLETED)
    assert sorted(e.seq for e in heard) == [e.seq for e in committed]
    for view in views:  # in order per order (orders are independent of each other)
        mine = [e for e in heard if e.order_id == view.id]
        assert [e.seq for e in mine] == sorted(e.seq for e in mine)
        assert mine[-1].type == EventType.ORDER_COMPLETED
        assert mine[-1].data["state"] == order(cs, view).state


# --- a worker killed during a rollback ---------------------------------------------------------

ENVIRONMENT = {
    "CLOUDSTATE_SIMULATOR_FAST": "true",
    "CLOUDSTATE_PENDING_GRACE_SECONDS": "0.5",
    "CLOUDSTATE_LAUNCH_LEASE_SECONDS": "1",
    "CLOUDSTATE_RECONCILE_FAST_INTERVAL": "0.2",
    "CLOUDSTATE_LOG_LEVEL": "WARNING",
}


@pytest.mark.slow
@pytest.mark.parametrize("failpoint", ["rollback.before_destroy", "rollback.after_destroy"])
def test_a_worker_killed_during_a_rollback_is_finished_by_the_next(
    tmp_path: Path, failpoint: str
) -> None:
    """SIGKILLed once the order is rolling back (before its destroys were requested, or
    right after), then restarted: the next worker finishes the rollback; every instance the
    cloud created is destroyed and the order ends ``rolled_back``."""
    home = tmp_path / "home"
    home.mkdir()
    simulated_cloud(home / "simulator.db", honor_client_token=False).close()
    with CloudState(home=home, simulator_fast=True) as cs:
        view = cs.launch(
            order_of(one(), one(), one(), one(image=BAD_IMAGE), policy="all_or_nothing")
        )

    crashed = burst_worker(home, ENVIRONMENT, failpoint)
    assert crashed.returncode == -9, crashed.stderr  # really died at the failpoint
    with CloudState(home=home, simulator_fast=True) as cs:
        assert order(cs, view).state == "rolling_back"

    finished = burst_worker(home, ENVIRONMENT, None)
    assert finished.returncode == 0, finished.stderr

    with CloudState(home=home, simulator_fast=True) as cs:
        final = order(cs, view)
        assert final.state == "rolled_back"
        assert {str(i.state) for i in final.instances} == {"terminated"}
    cloud = simulated_cloud(home / "simulator.db", honor_client_token=False)
    try:
        ledger = destroyed_in_the_cloud(cloud)
        assert cloud.creates_per_uuid(ACCOUNT) == dict.fromkeys(ledger, 1)
    finally:
        cloud.close()
    assert len(ledger) == 3
    assert all(ledger.values())
