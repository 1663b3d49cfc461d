"""The unit of work: one transaction in which a change and its events commit together.

This is the transactional outbox. Use cases change rows through the repositories, describe
each change with ``record(...)``, and ``commit()`` writes the rows, the events and one delivery
per matching subscription in a single transaction. If anything fails, nothing is written.

Numbering: an instance event takes the next number of that instance's own sequence (the
instance row's ``event_seq``, guarded by its version column, so two writers cannot hand out
the same number). The global cursor ``seq`` follows commit order without any lock shared by
writers: it is given after commit (``store.eventlog``). Subscriptions are matched before the
events are inserted; the only locks a commit takes for its events are those of the delivery
keys it queues on (``store.deliveries``), so writers of different instances never wait on
each other.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from cloudstate.domain.events import EventDraft
from cloudstate.exceptions import (
    CloudStateError,
    ConcurrentUpdateError,
    ConflictError,
    StoreError,
)
from cloudstate.store.crypto import SecretBox
from cloudstate.store.database import Database
from cloudstate.store.deliveries import DeliveryRepository
from cloudstate.store.eventlog import WORK_CHANNEL, ChangeLog
from cloudstate.store.repositories import (
    AccountRepository,
    EventRepository,
    InstanceRepository,
    OrderRepository,
    SubscriptionRepository,
    subscription_filter,
)
from cloudstate.store.tables import Event, Instance, Subscription, utcnow

__all__ = ["WORK_CHANNEL", "UnitOfWork"]


@dataclass(frozen=True)
class _Pending:
    draft: EventDraft
    instance_seq: int | None
    labels: Mapping[str, str]


class UnitOfWork:
    """Use as ``with store.unit_of_work() as uow: ...; uow.commit()``.

    Leaving the block without ``commit()`` (or with an exception) rolls everything back.
    """

    def __init__(self, database: Database, secrets: SecretBox) -> None:
        self._database = database
        self._secrets = secrets
        self._pending: list[_Pending] = []
        self._before_commit: dict[object, Callable[[], None]] = {}
        self._written: list[Event] = []
        self.session: Session

    def __enter__(self) -> UnitOfWork:
        self.session = self._database.write_session()
        self.accounts = AccountRepository(self.session, self._secrets)
        self.instances = InstanceRepository(self.session, self._secrets)
        self.orders = OrderRepository(self.session, self._secrets)
        self.events = EventRepository(self.session, self._secrets)
        self.subscriptions = SubscriptionRepository(self.session, self._secrets)
        self.deliveries = DeliveryRepository(self.session, self._secrets)
        self.changelog = ChangeLog(self.session, sqlite=self._database.is_sqlite)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.session.rollback()
        self.session.close()
        self._pending.clear()
        self._written.clear()
        if isinstance(exc, SQLAlchemyError):
            # Raised inside the block (an autoflush before a query, a query itself): the same
            # errors as a failed commit, so callers never see the ORM's own exceptions.
            raise _translated(exc) from exc

    def record(self, draft: EventDraft, instance: Instance | None = None) -> None:
        """Describe a change made in this unit of work; it commits with the change.

        Instance events must pass the instance row: it numbers them.
        """
        if draft.instance_uuid is not None and instance is None:
            raise ValueError("an instance event needs its instance row to be numbered")
        seq = None
        labels: Mapping[str, str] = {}
        if instance is not None:
            instance.event_seq = (instance.event_seq or 0) + 1
            seq = instance.event_seq
            labels = instance.label_map
        self._pending.append(_Pending(draft, seq, labels))

    def before_commit(self, key: object, action: Callable[[], None]) -> None:
        """Run ``action`` once (per ``key``) just before committing, inside the transaction:
        for work that depends on every change of the unit (an order's overall state)."""
        self._before_commit.setdefault(key, action)

    def write(self) -> list[Event]:
        """Write the changes, their events and deliveries into the open transaction, without
        committing it (``commit`` does this first; a test may hold the transaction open)."""
        try:
            while self._before_commit:
                key = next(iter(self._before_commit))
                self._before_commit.pop(key)()
            self.session.flush()
            events = self._write_events()
        except SQLAlchemyError as exc:
            raise _translated(exc) from exc
        finally:
            self._pending.clear()
            self._before_commit.clear()
        self._written += events
        return events

    def commit(self) -> list[Event]:
        """Write the changes, their events and deliveries in one transaction, and commit it."""
        self.write()
        try:
            self.session.commit()
        except SQLAlchemyError as exc:
            raise _translated(exc) from exc
        written, self._written = self._written, []
        return written

    def _write_events(self) -> list[Event]:
        if not self._pending:
            return []
        now = utcnow()
        rows = [_event_row(pending, now) for pending in self._pending]
        matched = self._matches(rows)  # read before any insert or lock
        self.changelog.append(rows)
        self.deliveries.enqueue([(subscription_id, rows[i]) for i, subscription_id in matched])
        return rows

    def _matches(self, rows: list[Event]) -> list[tuple[int, uuid.UUID]]:
        """(event index, subscription) for each enabled subscription that wants each event,
        in event order. A subscription this transaction can see was created before these
        events commit, so each is one it asked for."""
        subscriptions = list(
            self.session.scalars(select(Subscription).where(Subscription.enabled.is_(True)))
        )
        if not subscriptions:
            return []
        filters = [(sub.id, subscription_filter(sub)) for sub in subscriptions]
        return [
            (index, subscription_id)
            for index, (row, pending) in enumerate(zip(rows, self._pending, strict=True))
            for subscription_id, where in filters
            if where.matches(
                row.type,
                instance_uuid=row.instance_uuid,
                order_id=row.order_id,
                account=row.account,
                labels=pending.labels,
            )
        ]


def _event_row(pending: _Pending, now: Any) -> Event:
    draft = pending.draft
    return Event(
        id=uuid.uuid4(),
        type=str(draft.type),
        subject=draft.subject,
        instance_uuid=draft.instance_uuid,
        instance_seq=pending.instance_seq,
        order_id=draft.order_id,
        account=draft.account,
        time=now,
        data=draft.data,
    )


def _translated(exc: SQLAlchemyError) -> CloudStateError:
    if isinstance(exc, StaleDataError):
        return ConcurrentUpdateError("another writer changed this instance first")
    if isinstance(exc, IntegrityError):
        return ConflictError(f"the change conflicts with stored data: {exc.orig}")
    if isinstance(exc, OperationalError):
        return StoreError(f"database unavailable: {exc.orig}")
    return StoreError(f"database write failed: {exc.__class__.__name__}")
