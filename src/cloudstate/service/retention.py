"""Retention: the change log keeps ``event_retention_days`` of events.

An event is pruned only once every delivery of it is finished (delivered, dead or cancelled):
retention never drops news a subscriber has not had. The newest event is always kept, so the
oldest retained sequence tells a client whether its cursor is still good (410 otherwise).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select

from cloudstate.store import Store
from cloudstate.store.tables import Delivery, Event

FINISHED = ("delivered", "dead", "cancelled")
BATCH = 5000


def prune_events(store: Store, before: datetime) -> int:
    """Delete up to ``BATCH`` events older than ``before`` (and their finished deliveries)."""
    with store.unit_of_work() as uow:
        newest = uow.session.scalar(select(func.max(Event.seq))) or 0
        unfinished = (
            select(Delivery.id)
            .where(Delivery.event_seq == Event.seq, Delivery.status.not_in(FINISHED))
            .exists()
        )
        doomed = list(
            uow.session.scalars(
                select(Event.seq)
                .where(Event.time < before, Event.seq < newest, ~unfinished)
                .order_by(Event.seq)
                .limit(BATCH)
            )
        )
        if doomed:
            uow.session.execute(delete(Delivery).where(Delivery.event_seq.in_(doomed)))
            uow.session.execute(delete(Event).where(Event.seq.in_(doomed)))
        uow.commit()
    return len(doomed)
