"""The orphan policy (account config ``orphans``) on the simulated cloud: an instance tagged
with a UUID cloudstate does not know is reported (default), adopted or destroyed; a duplicate
of a known UUID is never adopted."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudstate.domain.events import EventRecord, EventType
from cloudstate.domain.states import InstanceState
from cloudstate.embedded import CloudState
from cloudstate.engine.reconciler import Reconciler
from cloudstate.exceptions import NotFoundError, ValidationError
from cloudstate.providers.simulator import SimulatedCloud
from cloudstate.service.accounts import update_account
from cloudstate.store.tables import utcnow
from cloudstate.testing import simulated_cloud

ACCOUNT = "simulator"
ORPHAN_FOUND = EventType.INSTANCE_ORPHAN_FOUND


@pytest.fixture
def cs(tmp_path: Path) -> Iterator[CloudState]:
    with CloudState(home=tmp_path / "home", simulator_fast=True) as opened:
        yield opened


@pytest.fixture
def cloud(cs: CloudState) -> Iterator[SimulatedCloud]:
    opened = simulated_cloud(cs.settings.simulator_path)
    yield opened
    opened.close()


def policy(cs: CloudState, value: str) -> None:
    config = next(v for v in cs.accounts() if v.name == ACCOUNT).config
    update_account(cs.store, ACCOUNT, config={**config, "orphans": value})


def cycle(cs: CloudState, times: int = 1) -> None:
    task = next(task for task in cs.engine.tasks if isinstance(task, Reconciler))
    for _ in range(times):
        with cs.store.unit_of_work() as uow:
            uow.accounts.get(ACCOUNT).next_reconcile_at = utcnow()
            uow.commit()
        assert task.tick().worked


def events(cs: CloudState) -> list[EventRecord]:
    found: list[EventRecord] = []
    after = 0
    while page := cs.events(after=after, limit=1000):
        found += page
        after = page[-1].seq
    return found


def of_type(cs: CloudState, kind: EventType) -> list[EventRecord]:
    return [event for event in events(cs) if event.type == kind]


def running_instance(cs: CloudState) -> uuid.UUID:
    known = uuid.uuid4()
    order = {"image": "img-basic", "hardware_profile": "small"}
    cs.launch(order, instances=[{"uuid": str(known)}])
    assert cs.burst(timeout=60)
    assert cs.get(known).state is InstanceState.RUNNING
    return known


def test_an_unknown_orphan_is_adopted_with_what_the_provider_lists(
    cs: CloudState, cloud: SimulatedCloud
) -> None:
    """``adopt``: a tracked instance with the provider's image and profile, events
    ``instance.created`` (reason ``adopted``) then its state, and no orphan report."""
    policy(cs, "adopt")
    stranger = uuid.uuid4()
    orphan = cloud.external_create(ACCOUNT, uuid=stranger, image="img-basic")
    cycle(cs, times=2)

    view = cs.get(stranger)
    assert (view.provider_id, view.image, view.hardware_profile) == (
        orphan.provider_id,
        "img-basic",
        "small",
    )
    assert view.state is not InstanceState.NEW
    mine = [e for e in events(cs) if e.instance_uuid == stranger]
    assert mine[0].type == EventType.INSTANCE_CREATED
    assert mine[0].data["reason"] == "adopted"
    assert EventType.INSTANCE_STATE_CHANGED in {e.type for e in mine}
    assert of_type(cs, ORPHAN_FOUND) == []


def test_a_duplicate_of_a_known_uuid_is_reported_not_adopted(
    cs: CloudState, cloud: SimulatedCloud
) -> None:
    known = running_instance(cs)
    ours = cs.get(known).provider_id
    policy(cs, "adopt")
    duplicate = cloud.external_create(ACCOUNT, uuid=known)
    cycle(cs, times=2)

    assert cs.get(known).provider_id == ours
    [found] = of_type(cs, ORPHAN_FOUND)
    assert (found.data["provider_id"], found.data["reason"]) == (
        duplicate.provider_id,
        "duplicate",
    )
    assert found.data["action"] == "reported"


def test_destroy_destroys_an_orphan_once_and_says_so(cs: CloudState, cloud: SimulatedCloud) -> None:
    """``destroy``: one destroy call per orphan (a duplicate too), one event each with
    ``"action": "destroyed"``, however many cycles see it; our own instance is untouched."""
    known = running_instance(cs)
    policy(cs, "destroy")
    stranger = uuid.uuid4()
    orphan = cloud.external_create(ACCOUNT, uuid=stranger)
    duplicate = cloud.external_create(ACCOUNT, uuid=known)
    acts = cloud.call_counts(ACCOUNT).get("act", 0)
    cycle(cs, times=3)

    assert cloud.call_counts(ACCOUNT).get("act", 0) - acts == 2
    found = {e.data["provider_id"]: e.data for e in of_type(cs, ORPHAN_FOUND)}
    assert set(found) == {orphan.provider_id, duplicate.provider_id}
    assert {data["action"] for data in found.values()} == {"destroyed"}
    states = {i.provider_id: i.state for i in cloud.instances(ACCOUNT)}
    gone = {InstanceState.SHUTTING_DOWN, InstanceState.TERMINATED}
    assert states[orphan.provider_id] in gone
    assert states[duplicate.provider_id] in gone
    assert cs.get(known).state is InstanceState.RUNNING
    with pytest.raises(NotFoundError):
        cs.get(stranger)


def test_an_unknown_orphan_policy_is_refused_naming_the_option(cs: CloudState) -> None:
    config = {"path": str(cs.settings.simulator_path), "orphans": "keep"}
    with pytest.raises(ValidationError) as refused:
        cs.add_account("other", "simulator", config=config)
    assert [error.field for error in refused.value.errors] == ["orphans"]
