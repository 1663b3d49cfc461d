"""An order's own state, derived from its instances, with ``order.*`` events.

``accepted`` → ``launching`` once any instance has left ``new``; when every instance has
settled (running, or failed to launch, or gone), the order ends ``running`` (all running),
``partial`` (some) or ``failed`` (none) and one ``order.completed`` event says how it went.
"""

from __future__ import annotations

from collections import Counter
from uuid import UUID

from sqlalchemy import func, select

from cloudstate.domain.events import EventDraft, EventType
from cloudstate.domain.orders import OrderState
from cloudstate.domain.states import InstanceState
from cloudstate.store.tables import Instance, Order, utcnow
from cloudstate.store.uow import UnitOfWork

_OPEN = (OrderState.ACCEPTED, OrderState.LAUNCHING)
_UNSETTLED = (InstanceState.NEW, InstanceState.PENDING)


def watch_order(uow: UnitOfWork, order_id: UUID | None) -> None:
    """Re-derive the order's state when this unit of work commits (once per order)."""
    if order_id is not None:
        uow.before_commit(("order", order_id), lambda: settle_order(uow, order_id))


def settle_order(uow: UnitOfWork, order_id: UUID) -> None:
    order = uow.session.get(Order, order_id)
    if order is None or order.state not in _OPEN:
        return
    counts = Counter(
        dict(
            uow.session.execute(
                select(Instance.state, func.count())
                .where(Instance.order_id == order_id)
                .group_by(Instance.state)
            ).all()
        )
    )
    if any(counts[state] for state in _UNSETTLED):
        if counts[InstanceState.NEW] < sum(counts.values()):
            _move(uow, order, OrderState.LAUNCHING, counts)
        return
    running = counts[InstanceState.RUNNING]
    final = (
        OrderState.RUNNING
        if running == sum(counts.values())
        else OrderState.PARTIAL
        if running
        else OrderState.FAILED
    )
    _move(uow, order, final, counts)
    order.finished_at = utcnow()
    data = {"order_id": str(order.id), "state": str(final), "instances": dict(counts)}
    uow.record(EventDraft(EventType.ORDER_COMPLETED, data, order_id=order.id))


def _move(uow: UnitOfWork, order: Order, state: OrderState, counts: Counter[str]) -> None:
    if order.state == state:
        return
    previous, order.state = order.state, state
    data = {
        "order_id": str(order.id),
        "state": str(state),
        "previous_state": previous,
        "instances": dict(counts),
    }
    uow.record(EventDraft(EventType.ORDER_STATE_CHANGED, data, order_id=order.id))
