"""Account credentials on the simulated cloud: verification, refusal and expiry.

The simulator's ``rejected_namespaces`` knob makes every call from an account's namespace
raise ``ProviderAuthError``; an account's namespace is its name.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from cloudstate.domain.events import EventRecord, EventType
from cloudstate.domain.states import InstanceState, UnknownReason
from cloudstate.embedded import CloudState
from cloudstate.engine.reconciler import Reconciler
from cloudstate.exceptions import ProviderAuthError
from cloudstate.providers.simulator import SimulatedCloud
from cloudstate.service.accounts import update_account
from cloudstate.store.tables import utcnow
from cloudstate.testing import simulated_cloud

ACCOUNT = "simulator"
REQUIRED = EventType.ACCOUNT_CREDENTIALS_REQUIRED


@pytest.fixture
def cs(tmp_path: Path) -> Iterator[CloudState]:
    with CloudState(home=tmp_path / "home", simulator_fast=True) as opened:
        yield opened


@pytest.fixture
def cloud(cs: CloudState) -> Iterator[SimulatedCloud]:
    opened = simulated_cloud(cs.settings.simulator_path)
    yield opened
    opened.close()


def events(cs: CloudState, kind: EventType) -> list[EventRecord]:
    found: list[EventRecord] = []
    after = 0
    while page := cs.events(after=after, limit=1000):
        found += [event for event in page if event.type == kind]
        after = page[-1].seq
    return found


def cycle(cs: CloudState, times: int = 1) -> None:
    """Reconcile the default account now, ``times`` times, through the reconciler's own tick."""
    task = next(task for task in cs.engine.tasks if isinstance(task, Reconciler))
    for _ in range(times):
        with cs.store.unit_of_work() as uow:
            uow.accounts.get(ACCOUNT).next_reconcile_at = utcnow()
            uow.commit()
        assert task.tick().worked


def running(cs: CloudState, count: int) -> list[uuid.UUID]:
    uuids = [uuid.uuid4() for _ in range(count)]
    order = {"image": "img-basic", "hardware_profile": "small"}
    cs.launch(order, instances=[{"uuid": str(u)} for u in uuids])
    assert cs.burst(timeout=60)
    assert {cs.get(u).state for u in uuids} == {InstanceState.RUNNING}
    return uuids


def status(cs: CloudState) -> tuple[str, str]:
    view = next(v for v in cs.accounts() if v.name == ACCOUNT)
    return view.status, view.status_reason


def all_unknown_for_credentials(cs: CloudState, uuids: list[uuid.UUID]) -> bool:
    views = [cs.get(u) for u in uuids]
    return all(
        v.state is InstanceState.UNKNOWN and v.state_reason == UnknownReason.CREDENTIALS
        for v in views
    )


def test_verify_accepts_good_credentials_and_changes_nothing(cs: CloudState) -> None:
    cs.verify_account(ACCOUNT)
    assert status(cs) == ("ok", "")
    assert events(cs, REQUIRED) == []


def test_a_refused_verification_marks_the_account_and_its_instances_once(
    cs: CloudState, cloud: SimulatedCloud
) -> None:
    """Refused twice: ``ProviderAuthError`` each time, status ``credentials`` with the
    provider's reason, instances ``unknown``/``credentials``, one event; accepted again: ok,
    and the next cycle restores the observed states."""
    uuids = running(cs, 2)
    cloud.configure(rejected_namespaces=[ACCOUNT])
    for _ in range(2):
        with pytest.raises(ProviderAuthError):
            cs.verify_account(ACCOUNT)
    state, reason = status(cs)
    assert state == "credentials"
    assert "refused" in reason
    assert all_unknown_for_credentials(cs, uuids)
    [event] = events(cs, REQUIRED)
    assert event.data["account"] == ACCOUNT

    cloud.configure(rejected_namespaces=[])
    cs.verify_account(ACCOUNT)
    assert status(cs) == ("ok", "")
    cycle(cs)
    assert {cs.get(u).state for u in uuids} == {InstanceState.RUNNING}


def test_adding_an_account_with_verify_stores_nothing_when_refused(
    cs: CloudState, cloud: SimulatedCloud
) -> None:
    cloud.configure(rejected_namespaces=["other"])
    config = {"path": str(cs.settings.simulator_path), "fast": True}
    with pytest.raises(ProviderAuthError):
        cs.add_account("other", "simulator", config=config, verify=True)
    assert "other" not in {view.name for view in cs.accounts()}
    cloud.configure(rejected_namespaces=[])
    assert cs.add_account("other", "simulator", config=config, verify=True).status == "ok"


def test_expired_credentials_make_instances_unknown_without_calling_the_provider(
    cs: CloudState, cloud: SimulatedCloud
) -> None:
    """Past ``credentials_expire_at``: no provider call in a cycle, instances
    ``unknown``/``credentials``, one event over several cycles; new credentials clear it and
    the next cycle restores the states."""
    uuids = running(cs, 2)
    update_account(cs.store, ACCOUNT, credentials_expire_at=utcnow() - timedelta(seconds=1))
    calls = sum(cloud.call_counts(ACCOUNT).values())
    cycle(cs, times=3)
    assert sum(cloud.call_counts(ACCOUNT).values()) == calls
    assert all_unknown_for_credentials(cs, uuids)
    assert status(cs)[0] == "credentials"
    assert len(events(cs, REQUIRED)) == 1

    update_account(cs.store, ACCOUNT, credentials={"token": "fresh"})
    assert status(cs) == ("ok", "")
    cycle(cs)
    assert {cs.get(u).state for u in uuids} == {InstanceState.RUNNING}
