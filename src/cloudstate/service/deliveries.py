"""Operating webhook deliveries: the delivery log, retrying one delivery, replaying a cursor.

Each use case owns its transaction. Both ways of sending an event again are explicit operator
acts, and both may deliver an event after later events of its instance were delivered (an
event that was dead-lettered is, by then, already out of order): receivers tell from
``data.sequence``. Within what is queued, the store's head-of-queue rule keeps each instance's
events in order.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from cloudstate.domain.deliveries import DeliveryStatus
from cloudstate.exceptions import ConflictError, NotFoundError
from cloudstate.service.queries import check_cursor
from cloudstate.store import Store
from cloudstate.store.repositories import MAX_PAGE, subscription_filter
from cloudstate.store.tables import Delivery, Event, Subscription, utcnow
from cloudstate.store.uow import UnitOfWork

REPLAY_LIMIT = 10_000
"""The most events one replay queues; the answer says where to continue (``through``)."""


@dataclass(frozen=True)
class DeliveryView:
    """One delivery as the log shows it. ``next_attempt_at`` only while it is pending."""

    id: int
    subscription_id: UUID
    event_seq: int
    event_id: UUID
    event_type: str
    subject: str
    instance_seq: int | None
    event_time: datetime
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    delivered_at: datetime | None


@dataclass(frozen=True)
class DeliveryPage:
    items: tuple[DeliveryView, ...]
    next_after: int | None  # the event seq to continue after; None on the last page


@dataclass(frozen=True)
class ReplayResult:
    """What a replay queued: ``queued`` = ``reset`` + ``created``; ``in_flight`` ones were
    being sent already. ``through`` is the last event seq considered; ``more`` says matching
    events remain after it (replay again from ``through``)."""

    after: int
    through: int
    queued: int
    reset: int
    created: int
    in_flight: int
    more: bool


def delivery_view(row: Delivery, event: Event) -> DeliveryView:
    return DeliveryView(
        id=row.id,
        subscription_id=row.subscription_id,
        event_seq=event.seq or 0,
        event_id=event.id,
        event_type=event.type,
        subject=event.subject,
        instance_seq=event.instance_seq,
        event_time=event.time,
        status=row.status,
        attempts=row.attempts,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        next_attempt_at=row.next_attempt_at if row.status == DeliveryStatus.PENDING else None,
        last_attempt_at=row.last_attempt_at,
        delivered_at=row.delivered_at,
    )


def list_deliveries(
    store: Store,
    subscription_id: UUID,
    *,
    statuses: Collection[str] = (),
    after: int = 0,
    limit: int = 100,
) -> DeliveryPage:
    """One page of a subscription's delivery log, oldest event first, after the event seq
    ``after``. ``NotFoundError`` for an unknown subscription (an empty log is a real answer)."""
    with store.unit_of_work() as uow:
        uow.subscriptions.get(subscription_id)
        rows = uow.deliveries.page(subscription_id, statuses=statuses, after=after, limit=limit)
        items = tuple(delivery_view(row, event) for row, event in rows)
    next_after = items[-1].event_seq if len(items) == limit else None
    return DeliveryPage(items, next_after)


def retry_delivery(store: Store, delivery_id: int) -> DeliveryView:
    """Send one delivery again now: a dead, cancelled or pending one becomes pending, due at
    once, its attempts kept (a dead one gets one more attempt, and is dead again if that fails).

    ``ConflictError`` (409) when it is ``delivered`` (the receiver took it; sending it again is
    a replay, which the operator asks for by cursor), when it is ``delivering`` (an attempt is
    in flight; its result comes first), or when its subscription is disabled (enable it first,
    or the retry would wait unseen). A pending delivery behind an earlier open event of its
    instance still waits for that one: retrying never breaks the order of what is queued.
    """
    with store.unit_of_work() as uow:
        row = uow.deliveries.locked(delivery_id)
        if row is None:
            raise NotFoundError("delivery", delivery_id)
        event = uow.session.get_one(Event, row.event_number)
        if row.status in (DeliveryStatus.DELIVERED, DeliveryStatus.DELIVERING):
            raise ConflictError(_not_retryable(row, event))
        _require_enabled(uow.subscriptions.get(row.subscription_id))
        uow.deliveries.retry(row, utcnow())
        uow.commit()
        return delivery_view(row, event)


def replay(
    store: Store, subscription_id: UUID, after: int, *, limit: int = REPLAY_LIMIT
) -> ReplayResult:
    """Deliver again every retained event after the cursor ``after`` that matches the
    subscription's filters (labels as the instances carry them now), up to ``limit`` events.

    Delivered, dead and cancelled rows restart with a fresh schedule, missing rows are created
    (events from before the subscription, or from while it was disabled), rows in flight are
    left alone. ``CursorExpiredError`` when events after the cursor were already pruned (the
    replay could not be complete); ``ConflictError`` for a disabled subscription.
    """
    with store.unit_of_work() as uow:
        subscription = uow.subscriptions.get(subscription_id)
        _require_enabled(subscription)
        uow.changelog.number_committed()  # every committed event has its cursor to replay by
        check_cursor(uow, after)
        events = _matching(uow, subscription, after, limit + 1)
        more = len(events) > limit
        events = events[:limit]
        done = uow.deliveries.replay(subscription_id, events, utcnow())
        uow.commit()
    return ReplayResult(
        after=after,
        through=(events[-1].seq or after) if events else after,
        queued=done.reset + done.created,
        reset=done.reset,
        created=done.created,
        in_flight=done.in_flight,
        more=more,
    )


def _matching(uow: UnitOfWork, subscription: Subscription, after: int, wanted: int) -> list[Event]:
    """Up to ``wanted`` events after ``after`` that the subscription's filters match."""
    where = subscription_filter(subscription)
    found: list[Event] = []
    while len(found) < wanted:
        size = min(MAX_PAGE, wanted - len(found))
        page = uow.events.after(after, limit=size, where=where)
        found += page
        if len(page) < size:
            break
        after = page[-1].seq or after
    return found


def _require_enabled(subscription: Subscription) -> None:
    if not subscription.enabled:
        why = f" ({subscription.disabled_reason})" if subscription.disabled_reason else ""
        raise ConflictError(f"subscription {subscription.id} is disabled{why}; enable it first")


def _not_retryable(row: Delivery, event: Event) -> str:
    if row.status == DeliveryStatus.DELIVERED:
        return (
            f"delivery {row.id} was delivered; to send it again, replay its subscription "
            f"after {(event.seq or 1) - 1}"
        )
    return f"delivery {row.id} is being attempted now; retry once its result is recorded"
