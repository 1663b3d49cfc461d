"""Accepting a launch order on real SQLite and PostgreSQL: what it writes, and a race for a UUID."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine

from cloudstate.domain.hardware import HardwareProfile
from cloudstate.exceptions import AlreadyExistsError
from cloudstate.service.orders import accept_order
from cloudstate.store import Store
from cloudstate.store.tables import Instance, Order


class _Catalogue:
    """Profiles unknown (the launcher applies the rules later); ``meanwhile`` runs once, in
    the gap between the read-only checks and the transaction, as another request could."""

    def __init__(self, meanwhile: Any = None) -> None:
        self.meanwhile = meanwhile

    def hardware_profiles(self, account: str) -> Sequence[HardwareProfile] | None:
        meanwhile, self.meanwhile = self.meanwhile, None
        if meanwhile is not None:
            meanwhile()
        return None

    def validate(self, *args: Any, **kwargs: Any) -> None:
        return None


def _request(uuids: Sequence[uuid.UUID]) -> dict[str, Any]:
    return {
        "account": "sim",
        "image": "img-basic",
        "hardware_profile": "small",
        "instances": [{"uuid": str(u), "labels": {"team": "a"}} for u in uuids],
    }


@pytest.fixture
def sim(store: Store) -> Store:
    with store.unit_of_work() as uow:
        uow.accounts.add("sim", "simulator")
        uow.commit()
    return store


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """Every SQL statement sent while the test runs, in order."""
    sent: list[str] = []

    def note(_c: Any, _cur: Any, statement: str, _p: Mapping[str, Any], *_: Any) -> None:
        sent.append(statement)

    event.listen(Engine, "after_cursor_execute", note)
    yield sent
    event.remove(Engine, "after_cursor_execute", note)


def test_each_instance_is_inserted_with_its_created_event_number_and_never_updated(
    sim: Store, statements: list[str]
) -> None:
    """The instances' rows are written by their INSERT alone: the ``instance.created`` event
    is numbered before the flush, so no per-row UPDATE follows, and the UUIDs are looked up
    once."""
    uuids = [uuid.uuid4() for _ in range(20)]

    view = accept_order(sim, _Catalogue(), _request(uuids))

    assert [i.event_seq for i in view.instances] == [1] * 20
    assert all(i.created_at == i.state_changed_at for i in view.instances)
    assert [s for s in statements if s.lstrip().upper().startswith("UPDATE INSTANCES")] == []
    lookups = [s for s in statements if s.lstrip().upper().startswith("SELECT INSTANCES.UUID")]
    assert len(lookups) == 1
    with sim.read() as session:
        stored = session.execute(select(Instance.event_seq, Instance.version)).all()
    assert sorted(stored) == [(1, 1)] * 20


def test_a_uuid_taken_by_another_order_meanwhile_is_reported_as_already_existing(
    sim: Store,
) -> None:
    """An order that takes one of the UUIDs after the checks and before the commit wins; the
    other order fails with ``AlreadyExistsError`` naming it, and writes nothing."""
    shared, own = uuid.uuid4(), uuid.uuid4()

    def rival() -> None:
        accept_order(sim, _Catalogue(), _request([shared]))

    with pytest.raises(AlreadyExistsError, match=str(shared)):
        accept_order(sim, _Catalogue(meanwhile=rival), _request([own, shared]))

    with sim.read() as session:
        assert session.scalar(select(func.count()).select_from(Order)) == 1
        assert set(session.scalars(select(Instance.uuid))) == {shared}
