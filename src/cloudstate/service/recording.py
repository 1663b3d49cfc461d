"""How a change to an instance becomes an event: one helper every use case goes through."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, update

from cloudstate.domain.events import EventDraft, EventType
from cloudstate.domain.observations import Change, Snapshot
from cloudstate.domain.states import (
    UNSETTLED_OPERATIONS,
    InstanceState,
    Operation,
    OperationStatus,
)
from cloudstate.service.order_progress import watch_order
from cloudstate.service.views import instance_view
from cloudstate.store.tables import Instance, OperationRow, utcnow
from cloudstate.store.uow import UnitOfWork

_ORDER_EVENTS = frozenset(
    {
        EventType.INSTANCE_STATE_CHANGED,
        EventType.INSTANCE_LAUNCH_FAILED,
        EventType.INSTANCE_ACTION_COMPLETED,  # a rollback ends once its destroys are judged
        EventType.INSTANCE_ACTION_FAILED,
    }
)


def record(uow: UnitOfWork, row: Instance, account: str, kind: EventType, **details: Any) -> None:
    """Record ``kind`` for ``row`` as it is now (after the change), in ``uow``'s transaction."""
    data = {"instance": instance_view(row, account).as_event_data(), **details}
    uow.record(EventDraft(kind, data, row.uuid, row.order_id, account), row)
    if kind in _ORDER_EVENTS:
        watch_order(uow, row.order_id)


def snapshot(row: Instance | Row[Any]) -> Snapshot:
    """The observable part of an instance: from its row, or from a query of those columns."""
    return Snapshot(
        state=InstanceState(row.state),
        raw_state=row.raw_state,
        reason=row.state_reason,
        operation=Operation(row.operation) if row.operation else None,
        public_addresses=tuple(row.public_addresses),
        private_addresses=tuple(row.private_addresses),
        key_fingerprint=row.key_fingerprint,
    )


def apply(row: Instance, after: Snapshot) -> None:
    """Write a snapshot back onto the row, stamping when the state changed."""
    if str(after.state) != row.state:
        row.state_changed_at = utcnow()
    row.state = after.state
    row.raw_state = after.raw_state
    row.state_reason = after.reason
    row.operation = after.operation
    row.public_addresses = list(after.public_addresses)
    row.private_addresses = list(after.private_addresses)
    row.key_fingerprint = after.key_fingerprint


def commit_changes(
    uow: UnitOfWork, row: Instance, account: str, after: Snapshot, changes: Sequence[Change]
) -> None:
    """Apply an observed snapshot, record each change, and close settled operation rows."""
    apply(row, after)
    for change in changes:
        record(uow, row, account, change.type, **change.details)
        if change.type is EventType.INSTANCE_ACTION_COMPLETED:
            finish_operations(uow, row.uuid, OperationStatus.SUCCEEDED)
        elif change.type is EventType.INSTANCE_ACTION_FAILED:
            finish_operations(uow, row.uuid, OperationStatus.FAILED)


def finish_operations(uow: UnitOfWork, instance_uuid: uuid.UUID, status: OperationStatus) -> None:
    """Close the instance's open operations once observation settled them."""
    uow.session.execute(
        update(OperationRow)
        .where(
            OperationRow.instance_uuid == instance_uuid,
            OperationRow.status.in_(UNSETTLED_OPERATIONS),
        )
        .values(status=status, finished_at=utcnow())
    )
