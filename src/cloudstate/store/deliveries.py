"""Deliveries: claiming due work and recording what each attempt did. Never commits.

The outbox writes one ``deliveries`` row per (matching subscription, event). Its ``status``:

================ ==============================================================================
``pending``      waiting for ``next_attempt_at`` (and for earlier events of its key, see below)
``delivering``   claimed by worker ``claimed_by`` until ``claimed_until``; a claim that expires
                 (the worker died) goes back to ``pending`` and is tried again: at least once
``delivered``    the target took it (2xx, or the callable returned); ``delivered_at`` says when
``dead``         every attempt of the retry schedule failed; kept, with ``attempts``,
                 ``last_status_code`` and ``last_error``, for inspection and replay
``cancelled``    never to be attempted: its subscription was disabled (the receiver said
                 410 Gone); ``last_error`` says why
================ ==============================================================================

Ordering: a delivery is claimable only when it is the *head* of its (subscription, ordering
key), i.e. no delivery with a smaller ``event_seq`` for the same pair is ``pending`` or
``delivering``. So one key has at most one delivery in flight, and a later event of an instance
never reaches a subscriber before an earlier one is delivered, dead or cancelled. Within one
claim this also yields at most one delivery per key.

Admission: a claimer may judge each due head before taking it (``admit``): take it, leave it
pending untouched (its endpoint has no free slot), or *defer* it to a later ``next_attempt_at``
without using an attempt (its endpoint's circuit breaker is open); and it may ``exclude``
subscriptions it cannot serve now, so they do not crowd out the others in the claim's window.

Operators: ``retry`` makes one delivery due now (its attempts kept); ``replay`` queues a run
of events again with a fresh schedule, creating the rows that are missing (events from before
the subscription, or from while it was disabled). Either may send an event after later events
of its instance were delivered: receivers see that from ``data.sequence``.

Concurrency: on PostgreSQL candidates are locked ``FOR UPDATE OF deliveries SKIP LOCKED``, so N
workers never claim one row; a worker that sees the *next* row of a key whose head another
worker has just locked also sees that head as still ``pending`` (or, once committed,
``delivering``), so the next row is not a head for it either. Acknowledgements lock their rows
and apply only while ``claimed_by`` still names the acknowledging worker, so a late answer from a
worker whose claim expired and was taken over changes nothing. SQLite serializes writers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import ColumnElement, Select, and_, exists, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, aliased

from cloudstate.domain.events import EventRecord
from cloudstate.exceptions import CryptoError
from cloudstate.store.repositories import _Repository, event_record
from cloudstate.store.tables import Delivery, Event, Subscription, utcnow

MAX_ERROR = 2000
RELEASE_BATCH = 1000
JITTER = 0.1
_S = TypeVar("_S", bound=Select[*tuple[Any, ...]])


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    DEAD = "dead"
    CANCELLED = "cancelled"


OPEN = (DeliveryStatus.PENDING, DeliveryStatus.DELIVERING)


class Outcome(StrEnum):
    """What one attempt did: the target took it, it failed (retry or dead), or it is gone."""

    DELIVERED = "delivered"
    FAILED = "failed"
    GONE = "gone"


@dataclass(frozen=True)
class ClaimedDelivery:
    """A claimed delivery with everything needed to attempt it, detached from the session.

    ``secrets`` are the active signing secrets, newest first (the previous one while its
    rotation window lasts); ``secret_error`` is set when they could not be decrypted, and the
    attempt then fails without sending anything unsigned.
    """

    id: int
    subscription_id: UUID
    kind: str
    target: str
    attempt: int
    event: EventRecord
    secrets: tuple[str, ...] = field(default=(), repr=False)
    secret_error: str = ""


@dataclass(frozen=True)
class Candidate:
    """A due head delivery a claim is about to take, for the claimer's ``admit`` to judge."""

    delivery_id: int
    subscription_id: UUID
    kind: str
    target: str


@dataclass(frozen=True)
class Admission:
    """What a claim does with a candidate: take it, leave it pending untouched, or defer it
    to ``defer_until`` without using an attempt (``reason`` becomes its ``last_error``)."""

    take: bool
    defer_until: datetime | None = None
    reason: str = ""


TAKE = Admission(take=True)
LEAVE = Admission(take=False)
Admit = Callable[[Candidate], Admission]


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of one attempt, as reported by the worker that claimed it."""

    delivery_id: int
    worker_id: str
    outcome: Outcome
    status_code: int | None = None
    error: str = ""
    attempted_at: datetime | None = None


@dataclass
class Replayed:
    """What a replay did: rows restarted, rows created, rows left alone because in flight."""

    reset: int = 0
    created: int = 0
    in_flight: int = 0


@dataclass(frozen=True)
class _Held:
    """The columns of a claimed row that acknowledging it reads (not its whole row)."""

    id: int
    claimed_by: str | None
    attempts: int
    subscription_id: UUID
    next_attempt_at: datetime
    delivered_at: datetime | None

    @staticmethod
    def columns() -> tuple[InstrumentedAttribute[Any], ...]:
        return (
            Delivery.id,
            Delivery.claimed_by,
            Delivery.attempts,
            Delivery.subscription_id,
            Delivery.next_attempt_at,
            Delivery.delivered_at,
        )


class DeliveryRepository(_Repository):
    """Claims, releases and acknowledges deliveries inside the caller's transaction."""

    @property
    def _postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    def claim(
        self,
        worker_id: str,
        limit: int,
        now: datetime,
        lease: timedelta,
        *,
        callables: Collection[str] = (),
        exclude: Collection[UUID] = (),
        admit: Admit | None = None,
    ) -> list[ClaimedDelivery]:
        """Claim up to ``limit`` due head deliveries, oldest event first, for ``lease``.

        HTTP subscriptions are always deliverable; callable subscriptions only when their name
        is in ``callables`` (registered in the claiming process). Subscriptions in ``exclude``
        are not considered at all (their endpoint is busy). ``admit``, when given, judges each
        candidate in order: up to twice ``limit`` are looked at, so a few left or deferred
        ones do not starve the claim.
        """
        window = limit * 2 if admit is not None else limit
        statement = self._locked(_due_heads(now, callables, exclude).limit(window))
        taken: list[int] = []
        deferred: list[dict[str, Any]] = []
        for candidate in (Candidate(*row) for row in self.session.execute(statement)):
            if len(taken) >= limit:
                break
            verdict = TAKE if admit is None else admit(candidate)
            if verdict.take:
                taken.append(candidate.delivery_id)
            elif verdict.defer_until is not None:
                deferred.append(_deferral(candidate, verdict))
        if deferred:
            self.session.execute(update(Delivery), deferred)
        return self._take(taken, worker_id, now, now + lease)

    def release(self, ids: Collection[int], worker_id: str, now: datetime, reason: str) -> int:
        """Hand claims of ``worker_id`` back, due at once and without using an attempt (a
        worker shutting down with deliveries it could not finish). Returns how many."""
        rows = self._claimed_rows(sorted(ids)).values()
        released = 0
        for row in rows:
            if row.claimed_by != worker_id:
                continue
            row.status = DeliveryStatus.PENDING
            row.claimed_by = None
            row.claimed_until = None
            row.next_attempt_at = now
            row.last_error = reason[:MAX_ERROR]
            released += 1
        self.session.flush()
        return released

    def release_expired(self, now: datetime) -> int:
        """Put deliveries whose claim expired before ``now`` back to ``pending``, due at once.

        The worker that held them may have sent them already: delivery is at least once, and
        receivers de-duplicate on ``webhook-id``. Returns how many were released.
        """
        statement = (
            select(Delivery)
            .where(Delivery.status == DeliveryStatus.DELIVERING, Delivery.claimed_until < now)
            .order_by(Delivery.id)
            .limit(RELEASE_BATCH)
        )
        rows = self.session.scalars(self._locked(statement)).all()
        for row in rows:
            row.last_error = f"claim by {row.claimed_by} expired before it was acknowledged"
            row.status = DeliveryStatus.PENDING
            row.claimed_by = None
            row.claimed_until = None
            row.next_attempt_at = now
        self.session.flush()
        return len(rows)

    def record_results(
        self,
        results: Iterable[DeliveryResult],
        schedule: Sequence[float],
        *,
        now: datetime | None = None,
        rng: random.Random | None = None,
    ) -> dict[int, DeliveryStatus]:
        """Apply a batch of attempt outcomes; returns the new status of each applied one.

        A failure is retried after the next delay of ``schedule`` (seconds before each attempt,
        ±10% jitter) and is ``dead`` once every attempt of it is used. ``GONE`` disables the
        subscription and cancels its pending deliveries. A result whose row is no longer claimed
        by its worker is skipped (it is absent from the returned mapping).
        """
        now = now or utcnow()
        rng = rng or random.Random()
        results = list(results)
        held = self._held([r.delivery_id for r in results])
        changes: list[dict[str, Any]] = []
        gone: dict[UUID, DeliveryResult] = {}
        for result in results:
            row = held.pop(result.delivery_id, None)  # a repeated result finds it taken
            if row is None or row.claimed_by != result.worker_id:
                continue
            changes.append(_acknowledged(row, result, schedule, now, rng))
            if result.outcome is Outcome.GONE:
                gone[row.subscription_id] = result
        if changes:  # one executemany: every change sets the same columns
            self.session.execute(update(Delivery), changes)
        for subscription_id in sorted(gone):  # one lock order for every worker
            result = gone[subscription_id]
            self.disable_subscription(subscription_id, _gone_reason(result, now))
        return {change["id"]: change["status"] for change in changes}

    def disable_subscription(self, subscription_id: UUID, reason: str) -> int:
        """Disable a subscription and cancel its pending deliveries; returns how many."""
        subscription = self.session.get(Subscription, subscription_id)
        if subscription is not None:
            subscription.enabled = False
            subscription.disabled_reason = reason
        result = self.session.execute(
            update(Delivery)
            .where(
                Delivery.subscription_id == subscription_id,
                Delivery.status == DeliveryStatus.PENDING,
            )
            .values(status=DeliveryStatus.CANCELLED, last_error=f"cancelled: {reason}")
            .execution_options(synchronize_session=False)
        )
        self.session.flush()
        return int(getattr(result, "rowcount", 0) or 0)

    def has_work_soon(
        self, now: datetime, horizon: timedelta, *, callables: Collection[str] = ()
    ) -> bool:
        """True while this process has deliveries in flight or a head due within ``horizon``.

        A burst uses this to keep polling for a retry due in a moment, yet stop for one due in
        minutes, or for deliveries this process cannot make (unregistered callables).
        """
        in_flight = (
            select(Delivery.id)
            .join(Subscription, Subscription.id == Delivery.subscription_id)
            .where(Delivery.status == DeliveryStatus.DELIVERING, _deliverable(callables))
            .limit(1)
        )
        due_soon = (
            select(Delivery.id)
            .join(Subscription, Subscription.id == Delivery.subscription_id)
            .where(
                Delivery.status == DeliveryStatus.PENDING,
                Delivery.next_attempt_at <= now + horizon,
                _deliverable(callables),
                _is_head(),
            )
            .limit(1)
        )
        return any(self.session.scalar(query) is not None for query in (in_flight, due_soon))

    def get(self, delivery_id: int) -> Delivery | None:
        return self.session.get(Delivery, delivery_id)

    def for_subscription(self, subscription_id: UUID) -> list[Delivery]:
        """Every delivery of a subscription, oldest event first."""
        statement = (
            select(Delivery)
            .where(Delivery.subscription_id == subscription_id)
            .order_by(Delivery.event_seq)
        )
        return list(self.session.scalars(statement))

    # operators ----------------------------------------------------------------------------

    def page(
        self,
        subscription_id: UUID,
        *,
        statuses: Collection[str] = (),
        after: int = 0,
        limit: int = 100,
    ) -> list[tuple[Delivery, Event]]:
        """A subscription's deliveries with their events, in event order after the event seq
        ``after``, optionally only those in ``statuses``: the delivery log, one page."""
        statement = (
            select(Delivery, Event)
            .join(Event, Event.seq == Delivery.event_seq)
            .where(Delivery.subscription_id == subscription_id, Delivery.event_seq > after)
            .order_by(Delivery.event_seq)
            .limit(limit)
        )
        if statuses:
            statement = statement.where(Delivery.status.in_(sorted(statuses)))
        return [(delivery, event) for delivery, event in self.session.execute(statement)]

    def locked(self, delivery_id: int) -> Delivery | None:
        """One delivery, locked until the transaction ends (on PostgreSQL), so a decision
        about its status cannot race a worker claiming or acknowledging it."""
        return self.session.get(Delivery, delivery_id, with_for_update=self._postgres)

    def retry(self, row: Delivery, now: datetime) -> None:
        """Make ``row`` due at ``now`` again, keeping its attempts (so a dead one that fails
        once more is dead again) and the last attempt's status code and error."""
        row.status = DeliveryStatus.PENDING
        row.next_attempt_at = now
        row.claimed_by = None
        row.claimed_until = None
        row.delivered_at = None
        self.session.flush()

    def replay(self, subscription_id: UUID, events: Sequence[Event], now: datetime) -> Replayed:
        """Queue ``events`` for the subscription again, due at ``now`` with a fresh schedule.

        Existing rows restart (attempts back to 0); missing rows are created; rows in flight
        are left to their worker (they are being sent already). The head-of-queue rule then
        sends each instance's events in order, after any earlier event still open.
        """
        seqs = [event.seq for event in events]
        statement = (
            select(Delivery)
            .where(Delivery.subscription_id == subscription_id, Delivery.event_seq.in_(seqs))
            .order_by(Delivery.id)
        )
        if self._postgres:
            statement = statement.with_for_update(of=Delivery)
        existing = {row.event_seq: row for row in self.session.scalars(statement)}
        done = Replayed()
        for event in events:
            row = existing.get(event.seq)
            if row is None:
                self.session.add(_queued(subscription_id, event, now))
                done.created += 1
            elif row.status == DeliveryStatus.DELIVERING:
                done.in_flight += 1
            else:
                self.retry(row, now)
                row.attempts = 0
                done.reset += 1
        self.session.flush()
        return done

    # internals ----------------------------------------------------------------------------

    def _locked(self, statement: _S) -> _S:
        if not self._postgres:
            return statement
        return statement.with_for_update(of=Delivery, skip_locked=True)

    def _claimed_rows(self, ids: Sequence[int]) -> dict[int, Delivery]:
        if not ids:
            return {}
        statement = (
            select(Delivery)
            .where(Delivery.id.in_(ids), Delivery.status == DeliveryStatus.DELIVERING)
            .order_by(Delivery.id)
        )
        if self._postgres:
            statement = statement.with_for_update(of=Delivery)
        return {row.id: row for row in self.session.scalars(statement)}

    def _held(self, ids: Sequence[int]) -> dict[int, _Held]:
        """What acknowledging needs of the claimed rows among ``ids``, locked (PostgreSQL)."""
        if not ids:
            return {}
        statement = (
            select(*_Held.columns())
            .where(Delivery.id.in_(ids), Delivery.status == DeliveryStatus.DELIVERING)
            .order_by(Delivery.id)
        )
        if self._postgres:
            statement = statement.with_for_update(of=Delivery)
        return {row.id: _Held(*row) for row in self.session.execute(statement)}

    def _take(
        self, ids: list[int], worker_id: str, now: datetime, until: datetime
    ) -> list[ClaimedDelivery]:
        """Mark the admitted rows claimed, then load their events and subscriptions: only
        now, for these rows alone, so the candidates' window never carries event data."""
        if not ids:
            return []
        self.session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids))
            .values(status=DeliveryStatus.DELIVERING, claimed_by=worker_id, claimed_until=until)
        )
        statement = (
            select(Delivery.id, Delivery.attempts, Event, Subscription)
            .join(Event, Event.seq == Delivery.event_seq)
            .join(Subscription, Subscription.id == Delivery.subscription_id)
            .where(Delivery.id.in_(ids))
            .order_by(Delivery.event_seq, Delivery.id)
        )
        return [
            self._claimed(delivery_id, attempts, event, subscription, now)
            for delivery_id, attempts, event, subscription in self.session.execute(statement)
        ]

    def _claimed(
        self,
        delivery_id: int,
        attempts: int,
        event: Event,
        subscription: Subscription,
        now: datetime,
    ) -> ClaimedDelivery:
        secrets: tuple[str, ...] = ()
        problem = ""
        try:
            secrets = self._signing_secrets(subscription, now)
        except CryptoError as exc:
            problem = f"signing secret unusable: {exc}"
        return ClaimedDelivery(
            id=delivery_id,
            subscription_id=subscription.id,
            kind=subscription.kind,
            target=subscription.target,
            attempt=attempts + 1,
            event=event_record(event),
            secrets=secrets,
            secret_error=problem,
        )

    def _signing_secrets(self, subscription: Subscription, now: datetime) -> tuple[str, ...]:
        tokens = [subscription.secret]
        expires = subscription.previous_secret_expires_at
        if subscription.previous_secret and (expires is None or expires > now):
            tokens.append(subscription.previous_secret)
        return tuple(self.secrets.decrypt(token).decode() for token in tokens if token)


def _due_heads(
    now: datetime, callables: Collection[str], exclude: Collection[UUID]
) -> Select[int, UUID, str, str]:
    """Claimable deliveries as ``Candidate`` fields, oldest event first: no event data, so
    PostgreSQL can walk ``ix_deliveries_pending_by_seq`` and stop after the window."""
    statement = (
        select(Delivery.id, Delivery.subscription_id, Subscription.kind, Subscription.target)
        .join(Subscription, Subscription.id == Delivery.subscription_id)
        .where(
            Delivery.status == DeliveryStatus.PENDING,
            Delivery.next_attempt_at <= now,
            _deliverable(callables),
            _is_head(),
        )
        .order_by(Delivery.event_seq, Delivery.id)
    )
    if exclude:
        statement = statement.where(Delivery.subscription_id.not_in(sorted(exclude)))
    return statement


def _queued(subscription_id: UUID, event: Event, now: datetime) -> Delivery:
    """A new delivery of ``event``, keyed as the outbox keys it (by subject)."""
    return Delivery(
        subscription_id=subscription_id,
        event_seq=event.seq,
        ordering_key=event.subject,
        next_attempt_at=now,
    )


def _deferral(candidate: Candidate, verdict: Admission) -> dict[str, Any]:
    """The change that defers a candidate without using an attempt (a bulk-update row)."""
    return {
        "id": candidate.delivery_id,
        "next_attempt_at": verdict.defer_until,
        "last_error": verdict.reason[:MAX_ERROR],
    }


def _acknowledged(
    row: _Held,
    result: DeliveryResult,
    schedule: Sequence[float],
    now: datetime,
    rng: random.Random,
) -> dict[str, Any]:
    """The change one attempt's result makes to its row (a bulk-update row).

    A failure is retried after the next delay of ``schedule`` while attempts remain, else
    dead. Every change sets the same columns (those it leaves alone, to their current value),
    so a whole acknowledgement is one executemany.
    """
    attempts = row.attempts + 1
    attempted_at = result.attempted_at or now
    change: dict[str, Any] = {
        "id": row.id,
        "attempts": attempts,
        "last_attempt_at": attempted_at,
        "last_status_code": result.status_code,
        "last_error": result.error[:MAX_ERROR],
        "claimed_by": None,
        "claimed_until": None,
        "next_attempt_at": row.next_attempt_at,
        "delivered_at": row.delivered_at,
    }
    if result.outcome is Outcome.DELIVERED:
        change.update(status=DeliveryStatus.DELIVERED, delivered_at=attempted_at)
    elif result.outcome is Outcome.GONE:
        change.update(status=DeliveryStatus.CANCELLED)
    elif attempts < len(schedule):
        delay = schedule[attempts] * rng.uniform(1 - JITTER, 1 + JITTER)
        change.update(status=DeliveryStatus.PENDING, next_attempt_at=now + timedelta(seconds=delay))
    else:
        change.update(status=DeliveryStatus.DEAD)
    return change


def _deliverable(callables: Collection[str]) -> ColumnElement[bool]:
    """Enabled subscriptions this process can deliver to: HTTP, or a registered callable."""
    kinds: ColumnElement[bool] = Subscription.kind == "http"
    if callables:
        kinds = or_(
            kinds,
            and_(Subscription.kind == "callable", Subscription.target.in_(sorted(callables))),
        )
    return and_(Subscription.enabled.is_(True), kinds)


def _is_head() -> ColumnElement[bool]:
    """No earlier delivery of the same (subscription, key) is still pending or in flight."""
    earlier = aliased(Delivery)
    return ~exists().where(
        earlier.subscription_id == Delivery.subscription_id,
        earlier.ordering_key == Delivery.ordering_key,
        earlier.event_seq < Delivery.event_seq,
        earlier.status.in_(OPEN),
    )


def _gone_reason(result: DeliveryResult, now: datetime) -> str:
    answer = f"HTTP {result.status_code}" if result.status_code is not None else "gone"
    return f"the receiver answered {answer} at {now:%Y-%m-%d %H:%M:%S} UTC"
