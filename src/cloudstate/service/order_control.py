"""Orders under control: cancel, roll back, launch timeouts and dependencies.

The order supervisor (``engine.supervisor``) calls ``push_rollbacks``, ``time_out_orders`` and
``release_dependencies`` every second; ``cancel_order`` is the API's. Each runs in one
transaction, and each acts on what is stored (an order's state, an instance's ``blocked``
flag), not on what a worker remembers, so a worker killed halfway leaves work the next
tick of any worker finishes: a rollback interrupted by a crash still completes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from sqlalchemy import or_, select

from cloudstate.domain.events import EventType
from cloudstate.domain.orders import OrderPolicy, OrderState
from cloudstate.domain.states import InstanceState, Operation
from cloudstate.exceptions import ConflictError, NotFoundError
from cloudstate.service.actions import request_destroy
from cloudstate.service.launches import fail_launch
from cloudstate.service.order_progress import (
    CANCELLED_REASON,
    OPEN_ORDERS,
    instance_counts,
    locked_order,
    settle_order,
    start_rollback,
)
from cloudstate.service.queries import get_order
from cloudstate.service.recording import record
from cloudstate.service.views import OrderView
from cloudstate.store import Store
from cloudstate.store.tables import Instance, Order
from cloudstate.store.uow import UnitOfWork

_GONE = (InstanceState.ERROR, InstanceState.TERMINATED)


def cancel_order(store: Store, order_id: UUID) -> OrderView:
    """Stop an order that is still launching: what was launched is destroyed, what was not
    never will be; the order is ``rolling_back`` until all of it is gone, then ``cancelled``.
    An order already rolling back is left as it is; a finished one cannot be cancelled."""
    with store.unit_of_work() as uow:
        order = locked_order(uow, order_id)
        if order is None:
            raise NotFoundError("order", order_id)
        if order.state in OPEN_ORDERS:
            start_rollback(uow, order, CANCELLED_REASON, instance_counts(uow, order.id))
            _destroy_all(uow, order)
        elif order.state != OrderState.ROLLING_BACK:
            raise ConflictError(
                f"order {order_id} is {order.state}: it has finished, so there is nothing to "
                "cancel; destroy its instances instead"
            )
        uow.commit()
    return get_order(store, order_id)


def push_rollbacks(store: Store) -> int:
    """Request a destroy for every instance of a rolling-back order that is neither
    terminated nor being destroyed (again, if an earlier destroy failed or a worker died),
    and finish the orders with nothing left. Returns how many destroys were requested."""
    with store.unit_of_work() as uow:
        orders = list(
            uow.session.scalars(select(Order).where(Order.state == OrderState.ROLLING_BACK))
        )
        requested = sum(_destroy_all(uow, order) for order in orders)
        for order in orders:
            settle_order(uow, order.id)
        uow.commit()
    return requested


def time_out_orders(store: Store, now: datetime) -> int:
    """Orders past their launch deadline with instances still not running: under
    ``all_or_nothing`` the order rolls back; otherwise each such instance fails (and, if a
    create may have reached the provider, is destroyed, so nothing half-launched is left).
    Returns how many instances timed out."""
    with store.unit_of_work() as uow:
        orders = uow.session.scalars(
            select(Order).where(Order.state.in_(OPEN_ORDERS), Order.launch_deadline <= now)
        )
        timed_out = 0
        names = uow.accounts.names()
        for order in list(orders):
            stuck = _stuck(uow, order.id)
            if not stuck:
                continue
            timed_out += len(stuck)
            seconds = round(
                (order.launch_deadline or now).timestamp() - order.created_at.timestamp()
            )
            reason = f"launch timed out: not running {seconds} s after the order"
            if order.policy == OrderPolicy.ALL_OR_NOTHING:
                why = f"{len(stuck)} instance(s) not running {seconds} s after the order"
                start_rollback(uow, order, f"launch timeout: {why}", instance_counts(uow, order.id))
                _destroy_all(uow, order)
                continue
            for row in stuck:
                _time_out(uow, row, names[row.account_id], reason)
        uow.commit()
    return timed_out


def release_dependencies(store: Store) -> int:
    """Blocked instances whose ``after`` instances are all running may launch now; one whose
    dependency failed or is gone fails with that reason. Returns how many changed."""
    with store.unit_of_work() as uow:
        blocked = list(
            uow.session.scalars(
                select(Instance).where(Instance.blocked, Instance.state == InstanceState.NEW)
            )
        )
        needed = {UUID(u) for row in blocked for u in row.after}
        found = uow.session.execute(
            select(Instance.uuid, Instance.state).where(Instance.uuid.in_(needed))
        )
        states: dict[UUID, str] = {key: state for key, state in found}
        names = uow.accounts.names()
        changed = 0
        for row in blocked:
            waiting = [UUID(u) for u in row.after]
            failed = next(
                (u for u in waiting if states.get(u, "missing") in (*_GONE, "missing")), None
            )
            if failed is not None:
                row.blocked = False
                why = f"dependency {failed} is {states.get(failed, 'missing')}: not launched"
                fail_launch(uow, row, names[row.account_id], why)
                changed += 1
            elif all(states.get(u) == InstanceState.RUNNING for u in waiting):
                row.blocked = False
                changed += 1
        uow.commit()
    return changed


def rolling_back(store: Store) -> bool:
    with store.read() as session:
        found = select(Order.id).where(Order.state == OrderState.ROLLING_BACK).limit(1)
        return session.scalar(found) is not None


def open_work(store: Store) -> bool:
    """Anything the supervisor still has to see through: a rollback, or a blocked instance."""
    if rolling_back(store):
        return True
    with store.read() as session:
        return session.scalar(select(Instance.uuid).where(Instance.blocked).limit(1)) is not None


def _destroy_all(uow: UnitOfWork, order: Order) -> int:
    rows = uow.session.scalars(
        select(Instance)
        .where(Instance.order_id == order.id, Instance.state != InstanceState.TERMINATED)
        .order_by(Instance.uuid)  # the order every writer locks instances in
    )
    requested = 0
    for row in list(rows):
        row.blocked = False
        requested += request_destroy(uow, row)
    return requested


def _stuck(uow: UnitOfWork, order_id: UUID) -> Sequence[Instance]:
    """Instances of the order that are not running yet and not already on their way out."""
    launching = or_(
        (Instance.state == InstanceState.NEW)
        & (Instance.operation.is_(None) | (Instance.operation != Operation.DESTROYING)),
        Instance.operation == Operation.LAUNCHING,
    )
    return list(
        uow.session.scalars(
            select(Instance)
            .where(Instance.order_id == order_id, launching)
            .order_by(Instance.uuid)  # the order every writer locks instances in
        )
    )


def _time_out(uow: UnitOfWork, row: Instance, account: str, reason: str) -> None:
    row.blocked = False
    if row.provider_id is None and row.launch_requested_at is None:
        fail_launch(uow, row, account, reason)  # nothing was ever sent: it simply fails
        return
    row.last_error = reason
    record(uow, row, account, EventType.INSTANCE_LAUNCH_FAILED, reason=reason)
    request_destroy(uow, row)
