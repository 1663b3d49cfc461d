"""Reads for callers: instances, orders, events. Views only; no secrets unless asked for."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TypeVar
from uuid import UUID

import anyio
import anyio.to_thread
from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import joinedload

from cloudstate.domain.events import EventRecord
from cloudstate.domain.orders import OrderState
from cloudstate.domain.states import InstanceState
from cloudstate.domain.subscriptions import SubscriptionFilter
from cloudstate.domain.validation import parse
from cloudstate.exceptions import (
    CursorExpiredError,
    NotFoundError,
    ValidationError,
    WaitTimeoutError,
)
from cloudstate.service.views import InstanceView, OrderView, instance_view, order_view
from cloudstate.store import Store
from cloudstate.store.eventlog import ChangeLog
from cloudstate.store.repositories import (
    MAX_PAGE,
    AccountRepository,
    InstanceQuery,
    InstanceRepository,
    event_record,
)
from cloudstate.store.tables import Account, Instance, Order, Realm
from cloudstate.store.uow import UnitOfWork

S = TypeVar("S", bound=StrEnum)


def get_instance(store: Store, instance_uuid: UUID) -> InstanceView:
    """One instance with its labels and account name: one query (the API's hottest read)."""
    statement = (
        select(Instance, Account.name)
        .join(Account, Account.id == Instance.account_id)
        .where(Instance.uuid == instance_uuid)
        .options(joinedload(Instance.labels))
    )
    with store.read() as session:
        found = session.execute(statement).unique().first()
        if found is None:
            raise NotFoundError("instance", instance_uuid)
        return instance_view(found[0], found[1])


def list_instances(
    store: Store,
    *,
    states: Sequence[str] = (),
    account: str | None = None,
    order_id: UUID | None = None,
    labels: Mapping[str, str] | None = None,
    after: UUID | None = None,
    limit: int = 100,
) -> list[InstanceView]:
    query = InstanceQuery(
        states=[_member(InstanceState, value) for value in states],
        account=account,
        order_id=order_id,
        labels=dict(labels or {}),
    )
    with store.read() as session:
        rows = InstanceRepository(session, store.secrets).list(query, after=after, limit=limit)
        names = AccountRepository(session, store.secrets).names()
        return [instance_view(row, names[row.account_id]) for row in rows]


def get_order(store: Store, order_id: UUID) -> OrderView:
    with store.unit_of_work() as uow:
        row = uow.orders.get(order_id)
        names = uow.accounts.names()
        rows = uow.session.scalars(
            select(Instance).where(Instance.order_id == order_id).order_by(Instance.created_at)
        )
        return order_view(row, tuple(instance_view(i, names[i.account_id]) for i in rows))


def list_orders(
    store: Store, *, states: Sequence[str] = (), after: UUID | None = None, limit: int = 100
) -> list[OrderView]:
    """One page of orders, newest first; pass the last order's id as ``after`` for the next.

    Pages are keyed on (created_at, id), so an order accepted while a caller pages does not
    shift the later pages. Every listed order's instances come in one more query.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"must be between 1 and {MAX_PAGE}", field="limit")
    wanted = [_member(OrderState, value) for value in states]
    with store.unit_of_work() as uow:
        statement = select(Order).order_by(Order.created_at.desc(), Order.id.desc()).limit(limit)
        if wanted:
            statement = statement.where(Order.state.in_(wanted))
        if after is not None:
            statement = statement.where(_older_than(uow.session.get(Order, after), after))
        rows = list(uow.session.scalars(statement))
        names = uow.accounts.names()
        members: dict[UUID, list[InstanceView]] = {row.id: [] for row in rows}
        for instance in uow.session.scalars(
            select(Instance)
            .where(Instance.order_id.in_(list(members)))
            .order_by(Instance.created_at)
        ):
            assert instance.order_id is not None  # selected by it
            members[instance.order_id].append(instance_view(instance, names[instance.account_id]))
        return [order_view(row, tuple(members[row.id])) for row in rows]


def _older_than(cursor: Order | None, after: UUID) -> ColumnElement[bool]:
    """Orders listed after ``cursor`` (newest first): created before it, or at the same moment
    with a smaller id."""
    if cursor is None:
        raise ValidationError(f"no order {after}: not a cursor this API issued", field="cursor")
    same_moment = and_(Order.created_at == cursor.created_at, Order.id < cursor.id)
    return or_(Order.created_at < cursor.created_at, same_moment)


def events_after(
    store: Store, after: int = 0, *, limit: int = 100, where: Mapping[str, object] | None = None
) -> list[EventRecord]:
    """Committed events after the cursor ``after``, oldest first, optionally filtered."""
    if after < 0:
        raise ValidationError("must be 0 or a sequence number", field="after")
    selection = parse(SubscriptionFilter, dict(where or {})) if where else None
    with store.unit_of_work() as uow:
        if uow.changelog.number_committed():  # no worker may be numbering (an API alone)
            uow.commit()
        rows = uow.events.after(after, limit=limit, where=selection)
        if after and (selection is not None or (rows and rows[0].seq != after + 1)):
            check_cursor(uow, after)  # else the page itself shows nothing after it was pruned
        return [event_record(row) for row in rows]


def check_cursor(uow: UnitOfWork, after: int) -> None:
    """The rule of the event log, for every reader: a cursor is good while no event after it
    was pruned; else ``CursorExpiredError`` (REST: 410), never a silent skip."""
    first = uow.changelog.first_seq()
    if after and first and after < first - 1:
        raise CursorExpiredError(
            f"events up to {first - 1} are no longer retained; re-list and start over"
        )


def last_seq(store: Store) -> int:
    """The newest cursor (0 before the first event)."""
    with store.read() as session:
        return ChangeLog(session, sqlite=store.database.is_sqlite).last_seq()


def instance_events(store: Store, instance_uuid: UUID) -> list[EventRecord]:
    with store.unit_of_work() as uow:
        uow.instances.get(instance_uuid)
        return [event_record(row) for row in uow.events.for_instance(instance_uuid)]


def instance_key(store: Store, instance_uuid: UUID) -> str | None:
    """The generated private key of an instance: for authorised readers only."""
    with store.unit_of_work() as uow:
        return uow.instances.key_material(uow.instances.get(instance_uuid))


def _member(states: type[S], value: str) -> S:
    """``value`` as one of ``states``, or a ValidationError on ``state`` listing them."""
    try:
        return states(value)
    except ValueError:
        known = ", ".join(state.value for state in states)
        raise ValidationError(f"unknown state {value!r}; one of {known}", field="state") from None


@dataclass(frozen=True)
class RealmView:
    account: str
    name: str
    available: bool
    reason: str
    updated_at: datetime


def list_realms(store: Store, account: str | None = None) -> list[RealmView]:
    """Realm availability as last observed by the reconciler."""
    with store.unit_of_work() as uow:
        names = uow.accounts.names()
        statement = select(Realm).order_by(Realm.account_id, Realm.name)
        if account is not None:
            statement = statement.where(Realm.account_id == uow.accounts.get(account).id)
        return [
            RealmView(names[row.account_id], row.name, row.available, row.reason, row.updated_at)
            for row in uow.session.scalars(statement)
        ]


def settled(views: Sequence[InstanceView], state: InstanceState) -> bool:
    """Every instance is in ``state`` with nothing in flight."""
    return all(view.state is state and view.operation is None for view in views)


def wait_for_state(
    store: Store, uuids: Sequence[UUID], state: InstanceState, *, timeout: float
) -> list[InstanceView]:
    """Poll until every instance has settled in ``state``; ``WaitTimeoutError`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        views = [get_instance(store, u) for u in uuids]
        if settled(views, state):
            return views
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(not_settled_message(views, state, timeout))
        time.sleep(0.1)


WAIT_POLL_SECONDS = 0.25


async def wait_for_state_async(
    store: Store, uuids: Sequence[UUID], state: InstanceState, *, timeout: float
) -> list[InstanceView]:
    """``wait_for_state`` for an event loop: the wait holds no thread, only each short read
    does (one every ``WAIT_POLL_SECONDS``), so waiting requests never take the request threads
    other requests need."""
    deadline = time.monotonic() + timeout
    while True:
        views = await anyio.to_thread.run_sync(lambda: [get_instance(store, u) for u in uuids])
        if settled(views, state):
            return views
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeoutError(not_settled_message(views, state, timeout))
        await anyio.sleep(min(WAIT_POLL_SECONDS, left))


def not_settled_message(views: Sequence[InstanceView], state: InstanceState, timeout: float) -> str:
    late = ", ".join(f"{v.uuid} is {v.state}" for v in views if v.state is not state)
    return f"not {state} after {timeout:g}s: {late or 'an operation is still in flight'}"
