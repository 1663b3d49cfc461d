"""Retention prunes old events, but never one a subscriber is still owed, nor the newest."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from cloudstate.domain.events import EventDraft, EventType
from cloudstate.domain.subscriptions import SubscriptionFilter
from cloudstate.service.queries import events_after
from cloudstate.service.retention import prune_events
from cloudstate.store import Store
from cloudstate.store.tables import Delivery, Event, utcnow


def _events(store: Store, count: int, *, account: str) -> None:
    with store.unit_of_work() as uow:
        for n in range(count):
            uow.record(EventDraft(EventType.REALM_AVAILABILITY_CHANGED, {"n": n}, account=account))
        uow.commit()


def test_old_finished_events_go_and_owed_or_newest_stay(store: Store) -> None:
    """Of six old events: those whose deliveries are all finished are pruned; the ones with a
    pending delivery stay."""
    _events(store, 2, account="nobody")  # no subscription yet: no deliveries
    with store.unit_of_work() as uow:
        uow.subscriptions.add("callable", "audit", SubscriptionFilter(account="watched"))
        uow.commit()
    _events(store, 4, account="watched")  # four deliveries
    seqs = [e.seq for e in events_after(store, 0, limit=100)]  # numbered, on PostgreSQL too
    with store.unit_of_work() as uow:
        delivered, owed = seqs[2:4], seqs[4]
        uow.session.execute(
            update(Delivery)
            .where(Delivery.event_number == Event.number, Event.seq.in_(delivered))
            .values(status="delivered")
        )
        uow.session.execute(update(Event).values(time=utcnow() - timedelta(days=30)))
        uow.commit()
    assert prune_events(store, utcnow() - timedelta(days=7)) == 4
    with store.read() as session:
        left = list(session.scalars(select(Event.seq).order_by(Event.seq)))
        deliveries = list(
            session.scalars(
                select(Event.seq)
                .join(Delivery, Delivery.event_number == Event.number)
                .order_by(Event.seq)
            )
        )
    assert left == [owed, seqs[5]]
    assert deliveries == [owed, seqs[5]]


def test_recent_events_are_kept(store: Store) -> None:
    """Nothing younger than the retention is touched."""
    _events(store, 3, account="a")
    assert prune_events(store, utcnow() - timedelta(days=7)) == 0


def test_the_newest_event_stays_even_when_old_and_delivered(store: Store) -> None:
    """All events old and owed to nobody: every one but the newest goes, so the oldest
    retained sequence still tells a client whether its cursor is good."""
    _events(store, 3, account="a")
    newest = events_after(store, 0)[-1].seq
    with store.unit_of_work() as uow:
        uow.session.execute(update(Event).values(time=utcnow() - timedelta(days=30)))
        uow.commit()
    assert prune_events(store, utcnow() - timedelta(days=7)) == 2
    with store.read() as session:
        assert list(session.scalars(select(Event.seq))) == [newest]
