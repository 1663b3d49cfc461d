"""Account credentials on the simulated cloud: verification, refusal and expiry, and the
credentials a launch order carries inline with their retention policy.

The simulator's ``rejected_namespaces`` knob makes every call from an account's namespace
raise ``ProviderAuthError``; an account's namespace is its name.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cloudstate.domain.events import EventRecord, EventType
from cloudstate.domain.states import InstanceState, UnknownReason
from cloudstate.embedded import CloudState
from cloudstate.engine.reconciler import Reconciler
from cloudstate.exceptions import ProviderAuthError, ValidationError
from cloudstate.providers.simulator import SimulatedCloud
from cloudstate.service.accounts import update_account
from cloudstate.service.retention import drop_order_credentials
from cloudstate.service.views import AccountView
from cloudstate.store.repositories import AccountRepository
from cloudstate.store.tables import Account, Order, utcnow
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


# --- credentials carried inline by a launch order ---------------------------------------------


def order_with(credentials: dict[str, dict[str, str]], **fields: object) -> dict[str, object]:
    return {
        "image": "img-basic",
        "hardware_profile": "small",
        "instances": [{"uuid": str(uuid.uuid4())}],
        "credentials": credentials,
        **fields,
    }


def account(cs: CloudState) -> AccountView:
    return next(view for view in cs.accounts() if view.name == ACCOUNT)


def test_an_orders_inline_credentials_replace_the_accounts_and_clear_its_status(
    cs: CloudState, cloud: SimulatedCloud
) -> None:
    """An account whose credentials were refused takes the order's: they are stored
    (encrypted, marked as from an order, no expiry without a TTL), the ``credentials`` status
    is cleared, the instances launch, and the stored order does not carry them."""
    uuids = running(cs, 1)
    cloud.configure(rejected_namespaces=[ACCOUNT])
    with pytest.raises(ProviderAuthError):
        cs.verify_account(ACCOUNT)
    cloud.configure(rejected_namespaces=[])
    assert status(cs)[0] == "credentials"

    view = cs.launch(order_with({ACCOUNT: {"token": "inline-secret"}}))
    assert cs.burst(timeout=60)

    stored = account(cs)
    assert (stored.has_credentials, stored.credentials_from_order) == (True, True)
    assert stored.credentials_expire_at is None
    assert status(cs) == ("ok", "")
    assert {cs.get(u).state for u in [*uuids, view.instances[0].uuid]} == {InstanceState.RUNNING}
    with cs.store.read() as session:
        row = session.get_one(Order, view.id)
        assert "credentials" not in row.request
        assert "inline-secret" not in json.dumps(row.request)
        [encrypted] = session.scalars(select(Account.credentials).where(Account.name == ACCOUNT))
    assert encrypted is not None
    assert b"inline-secret" not in encrypted
    assert AccountRepository(session, cs.store.secrets).secrets.decrypt_json(encrypted) == {
        "token": "inline-secret"
    }


@pytest.mark.parametrize(
    ("credentials", "extra", "field", "message"),
    [
        ({"elsewhere": {"token": "x"}}, {}, "credentials.elsewhere", "no instance of this order"),
        ({ACCOUNT: {}}, {}, f"credentials.{ACCOUNT}", "must not be empty"),
        ({}, {"credentials_ttl": 60}, "credentials_ttl", "given without inline credentials"),
        ({ACCOUNT: {"token": "x"}}, {"credentials_ttl": 0}, "credentials_ttl", "greater than 0"),
    ],
)
def test_bad_inline_credentials_are_refused_naming_the_field_and_nothing_is_written(
    cs: CloudState,
    credentials: dict[str, dict[str, str]],
    extra: dict[str, object],
    field: str,
    message: str,
) -> None:
    cs.launch(image="img-basic", hardware_profile="small", instances=[{"uuid": str(uuid.uuid4())}])
    before = account(cs)
    with pytest.raises(ValidationError) as caught:
        cs.launch(order_with(credentials, **extra))
    assert [(e.field, message in e.message) for e in caught.value.errors] == [(field, True)]
    assert account(cs) == before
    with cs.store.read() as session:
        assert session.scalar(select(func.count()).select_from(Order)) == 1


def test_inline_credentials_must_suit_the_accounts_provider(cs: CloudState, tmp_path: Path) -> None:
    """An EC2 account takes only EC2's credential fields: a typo is refused before anything
    is stored (the driver is built, no call made), naming the order's field."""
    cs.add_account(
        "aws", "ec2", config={"region": "us-east-1", "endpoint_url": "http://127.0.0.1:9"}
    )
    order = order_with(
        {"aws": {"access_key_id": "AKIA", "secret_acess_key": "typo"}}, account="aws"
    )
    with pytest.raises(ValidationError) as caught:
        cs.launch(order)
    assert all(e.field.startswith("credentials.aws") for e in caught.value.errors)
    assert "secret_acess_key" in str(caught.value)
    assert not next(view for view in cs.accounts() if view.name == "aws").has_credentials


def test_inline_credentials_with_a_ttl_are_dropped_when_it_passes(cs: CloudState) -> None:
    """``credentials_ttl``: kept until then (expiry set), dropped after: ciphertext gone,
    status ``credentials``, instances ``unknown``/``credentials``, one event saying why.
    The next order that carries credentials brings the account back."""
    view = cs.launch(order_with({ACCOUNT: {"token": "short-lived"}}, credentials_ttl=60))
    assert cs.burst(timeout=60)
    instance = view.instances[0].uuid
    expires = account(cs).credentials_expire_at
    assert expires is not None
    assert timedelta(seconds=55) < expires - utcnow() <= timedelta(seconds=60)

    assert drop_order_credentials(cs.store, utcnow()) == 0
    assert drop_order_credentials(cs.store, expires + timedelta(seconds=1)) == 1

    dropped = account(cs)
    assert (dropped.has_credentials, dropped.status) == (False, "credentials")
    assert all_unknown_for_credentials(cs, [instance])
    [event] = events(cs, REQUIRED)
    assert "credentials_ttl passed" in event.data["reason"]
    assert drop_order_credentials(cs.store, expires + timedelta(seconds=2)) == 0

    cs.launch(order_with({ACCOUNT: {"token": "renewed"}}))
    assert status(cs) == ("ok", "")
    cycle(cs)
    assert cs.get(instance).state is InstanceState.RUNNING


def test_inline_credentials_without_a_ttl_last_while_the_account_has_live_instances(
    cs: CloudState,
) -> None:
    """The default policy: kept while any instance of the account is live (launching,
    running, stopped, ...), dropped by the engine's sweeper once the last one is terminated."""
    view = cs.launch(order_with({ACCOUNT: {"token": "while-live"}}))
    assert drop_order_credentials(cs.store, utcnow()) == 0  # ``new`` is live: it must launch
    assert cs.burst(timeout=60)
    instance = view.instances[0].uuid
    assert drop_order_credentials(cs.store, utcnow()) == 0

    cs.action(instance, "destroy")
    assert cs.burst(timeout=60)  # the engine's own sweeper enforces the policy
    assert cs.get(instance).state is InstanceState.TERMINATED
    assert not account(cs).has_credentials
    assert drop_order_credentials(cs.store, utcnow()) == 0
    [event] = events(cs, REQUIRED)
    assert "no live instance is left" in event.data["reason"]


def test_credentials_set_by_an_operator_are_never_dropped(cs: CloudState) -> None:
    """Only order-supplied credentials fall under the retention policy."""
    update_account(cs.store, ACCOUNT, credentials={"token": "operator"})
    assert drop_order_credentials(cs.store, utcnow() + timedelta(days=400)) == 0
    assert account(cs).has_credentials
