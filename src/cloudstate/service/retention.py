"""Retention: the change log keeps ``event_retention_days`` of events, and credentials that
launch orders carried inline are kept only as long as their policy says.

An event is pruned only once every delivery of it is finished (delivered, dead or cancelled):
retention never drops news a subscriber has not had. The newest event is always kept, so the
oldest retained sequence tells a client whether its cursor is still good (410 otherwise).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select

from cloudstate.domain.deliveries import FINISHED
from cloudstate.domain.states import InstanceState
from cloudstate.service.observations import require_credentials
from cloudstate.store import Store
from cloudstate.store.tables import Account, Delivery, Event, Instance

BATCH = 5000


def prune_events(store: Store, before: datetime) -> int:
    """Delete up to ``BATCH`` events older than ``before`` (and their finished deliveries)."""
    with store.unit_of_work() as uow:
        newest = uow.changelog.last_seq()
        unfinished = (
            select(Delivery.id)
            .where(Delivery.event_number == Event.number, Delivery.status.not_in(FINISHED))
            .exists()
        )
        doomed = list(
            uow.session.scalars(
                select(Event.number)
                .where(Event.time < before, Event.seq < newest, ~unfinished)
                .order_by(Event.seq)
                .limit(BATCH)
            )
        )
        if doomed:
            uow.session.execute(delete(Delivery).where(Delivery.event_number.in_(doomed)))
            uow.session.execute(delete(Event).where(Event.number.in_(doomed)))
        uow.commit()
    return len(doomed)


GONE = (InstanceState.TERMINATED, InstanceState.ERROR)


def drop_order_credentials(store: Store, now: datetime) -> int:
    """Enforce the retention of credentials that launch orders carried inline.

    They are dropped (the ciphertext deleted) once their ``credentials_ttl`` has passed, or,
    without a TTL, once the account has no live instance left (every one terminated or failed
    to launch). The account then needs credentials again: its status becomes ``credentials``
    and ``account.credentials_required`` is recorded with the drop, in one transaction. Returns
    how many accounts lost their credentials.
    """
    live = (
        select(Instance.uuid)
        .where(Instance.account_id == Account.id, Instance.state.not_in(GONE))
        .exists()
    )
    expired = Account.credentials_expire_at.is_not(None) & (Account.credentials_expire_at <= now)
    unused = Account.credentials_expire_at.is_(None) & ~live
    with store.unit_of_work() as uow:
        doomed = list(
            uow.session.scalars(
                select(Account)
                .where(Account.credentials_from_order, Account.credentials.is_not(None))
                .where(expired | unused)
                .order_by(Account.id)
            )
        )
        for account in doomed:
            reason = (
                "credentials from a launch order dropped: their credentials_ttl passed"
                if account.credentials_expire_at is not None
                else "credentials from a launch order dropped: no live instance is left"
            )
            account.credentials = None
            account.credentials_from_order = False
            account.credentials_expire_at = min(now, account.credentials_expire_at or now)
            require_credentials(uow, account, reason)
        uow.commit()
    return len(doomed)
