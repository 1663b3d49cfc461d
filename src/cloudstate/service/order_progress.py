"""An order's own state, derived from its instances, with ``order.*`` events.

``accepted`` → ``launching`` once any instance has left ``new``; when every instance has
settled (running, or failed to launch, or gone), the order ends ``running`` (all running),
``partial`` (some) or ``failed`` (none) and one ``order.completed`` event says how it went.

Under ``all_or_nothing`` the first failed instance turns the order ``rolling_back`` instead
(in the transaction that records the failure); the order supervisor then destroys every
instance of it (``service.order_control``), and the order ends ``rolled_back`` (or
``cancelled``, when a cancel started the rollback) once all of them are terminated.
"""

from __future__ import annotations

from collections import Counter
from uuid import UUID

from sqlalchemy import func, select

from cloudstate.domain.events import EventDraft, EventType
from cloudstate.domain.orders import OrderPolicy, OrderState
from cloudstate.domain.states import InstanceState
from cloudstate.store.tables import Instance, Order, utcnow
from cloudstate.store.uow import UnitOfWork

OPEN_ORDERS = (OrderState.ACCEPTED, OrderState.LAUNCHING)
_UNSETTLED = (InstanceState.NEW, InstanceState.PENDING)
_FAILED = (InstanceState.ERROR, InstanceState.TERMINATED)
CANCELLED_REASON = "cancelled by request"


def watch_order(uow: UnitOfWork, order_id: UUID | None) -> None:
    """Re-derive the order's state when this unit of work commits (once per order)."""
    if order_id is not None:
        uow.before_commit(("order", order_id), lambda: settle_order(uow, order_id))


def settle_order(uow: UnitOfWork, order_id: UUID) -> None:
    """Re-derive an open order's state. A settled order never changes again, so it is
    recognised without a lock: instance changes long after the launch (every stop, start,
    destroy) then take no order lock, and writers touching several orders cannot deadlock."""
    state = uow.session.scalar(select(Order.state).where(Order.id == order_id))
    if state not in (*OPEN_ORDERS, OrderState.ROLLING_BACK):
        return
    order = locked_order(uow, order_id)
    if order is None or order.state not in (*OPEN_ORDERS, OrderState.ROLLING_BACK):
        return
    counts = instance_counts(uow, order_id)
    if order.state == OrderState.ROLLING_BACK:
        if counts[InstanceState.TERMINATED] == sum(counts.values()) and not _in_flight(
            uow, order_id
        ):
            final = (
                OrderState.CANCELLED if order.reason == CANCELLED_REASON else OrderState.ROLLED_BACK
            )
            finish(uow, order, final, counts)
        return
    if order.policy == OrderPolicy.ALL_OR_NOTHING and any(counts[s] for s in _FAILED):
        failed = _first_failure(uow, order_id)
        start_rollback(uow, order, failed, counts)
        return
    if any(counts[state] for state in _UNSETTLED):
        if counts[InstanceState.NEW] < sum(counts.values()):
            move(uow, order, OrderState.LAUNCHING, counts)
        return
    running = counts[InstanceState.RUNNING]
    final = (
        OrderState.RUNNING
        if running == sum(counts.values())
        else OrderState.PARTIAL
        if running
        else OrderState.FAILED
    )
    finish(uow, order, final, counts)


def _in_flight(uow: UnitOfWork, order_id: UUID) -> bool:
    """Has an instance of the order an action its executor has not judged yet? A rollback is
    over only once every destroy is settled by its owner, not when a listing shows the end."""
    busy = select(Instance.uuid).where(
        Instance.order_id == order_id, Instance.operation.is_not(None)
    )
    return uow.session.scalar(busy.limit(1)) is not None


def locked_order(uow: UnitOfWork, order_id: UUID) -> Order | None:
    """The order, row-locked (PostgreSQL) and freshly read, so two workers settling it at
    once take turns and the second sees what the first decided."""
    statement = (
        select(Order)
        .where(Order.id == order_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return uow.session.scalars(statement).first()


def instance_counts(uow: UnitOfWork, order_id: UUID) -> Counter[str]:
    return Counter(
        dict(
            uow.session.execute(
                select(Instance.state, func.count())
                .where(Instance.order_id == order_id)
                .group_by(Instance.state)
            ).all()
        )
    )


def start_rollback(uow: UnitOfWork, order: Order, reason: str, counts: Counter[str]) -> None:
    """The order is to be undone: ``rolling_back`` with its reason (the supervisor destroys
    the instances; a crash in between loses nothing, as the state is what it acts on)."""
    order.reason = reason
    move(uow, order, OrderState.ROLLING_BACK, counts)


def finish(uow: UnitOfWork, order: Order, final: OrderState, counts: Counter[str]) -> None:
    move(uow, order, final, counts)
    order.finished_at = utcnow()
    data = {
        "order_id": str(order.id),
        "state": str(final),
        "reason": order.reason,
        "instances": dict(counts),
    }
    uow.record(EventDraft(EventType.ORDER_COMPLETED, data, order_id=order.id))


def move(uow: UnitOfWork, order: Order, state: OrderState, counts: Counter[str]) -> None:
    if order.state == state:
        return
    previous, order.state = order.state, state
    data = {
        "order_id": str(order.id),
        "state": str(state),
        "previous_state": previous,
        "reason": order.reason,
        "instances": dict(counts),
    }
    uow.record(EventDraft(EventType.ORDER_STATE_CHANGED, data, order_id=order.id))


def _first_failure(uow: UnitOfWork, order_id: UUID) -> str:
    row = uow.session.scalars(
        select(Instance)
        .where(Instance.order_id == order_id, Instance.state.in_(_FAILED))
        .order_by(Instance.state_changed_at)
        .limit(1)
    ).one()
    why = row.state_reason or row.last_error or str(row.state)
    return f"instance {row.uuid} {'failed' if row.state == InstanceState.ERROR else 'ended'}: {why}"
