"""Deliveries: every SQL statement of delivering events. The deliverer (``engine.pipeline``)
decides; this manager claims, records and queues, inside the caller's transaction.

The outbox queues one ``deliveries`` row per (matching subscription, event) with ``enqueue``.
Statuses and what an attempt leads to are the domain's (``domain.deliveries``).

Ordering, with an explicit head: of the unfinished deliveries of one (subscription, ordering
key), exactly one is the ``head``; only a pending head is claimable. So a key has at most one
delivery in flight, and a later event of an instance never reaches a subscriber before an
earlier one is delivered, dead or cancelled. When a head finishes, the key's next unfinished
delivery (lowest event number) becomes the head in the same transaction. A claim walks only
pending heads (``ix_deliveries_pending_heads``) and stops after its window: its cost does not
grow with how many deliveries wait behind one head.

Who may change a key's head: the writer that queues the key's first unfinished delivery, and
whoever finishes or requeues one. Each takes the key's lock first (PostgreSQL: a transaction-
scoped advisory lock on a 64-bit hash of the key, always in ascending order, so two lockers
never wait on each other in a cycle), then reads what is unfinished: the two can never both
miss each other. SQLite has one writer at a time.

Admission: a claimer may judge each due head before taking it (``admit``): take it, leave it
pending untouched (its endpoint has no free slot), or *defer* it to a later ``next_attempt_at``
without using an attempt (its endpoint's circuit breaker is open); and it may ``exclude``
subscriptions it cannot serve now, so they do not crowd out the others in the claim's window.

Operators: ``retry`` makes one delivery due now (its attempts kept); ``replay`` queues a run
of events again with a fresh schedule, creating the rows that are missing (events from before
the subscription, or from while it was disabled). Either may send an event after later events
of its instance were delivered: receivers see that from ``data.sequence``.

Concurrency: candidates are claimed with the shared claim primitive (``store.claims``), so N
workers never claim one row. Acknowledgements lock their rows and apply only while
``claimed_by`` still names the acknowledging worker, so a late answer from a worker whose claim
expired and was taken over changes nothing.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, Select, and_, exists, or_, select, text, update
from sqlalchemy.orm import InstrumentedAttribute

from cloudstate.domain.deliveries import (
    UNFINISHED,
    DeliveryStatus,
    Outcome,
    after_attempt,
)
from cloudstate.domain.events import EventRecord
from cloudstate.exceptions import CryptoError
from cloudstate.store.claims import claimable, is_postgres, locked
from cloudstate.store.repositories import _Repository, event_record
from cloudstate.store.tables import Delivery, Event, Subscription, utcnow

MAX_ERROR = 2000
RELEASE_BATCH = 1000

Key = tuple[UUID, str]  # (subscription, ordering key): one queue, sent in order

_LOCK_KEYS = text(
    "SELECT pg_advisory_xact_lock(k) FROM"
    " (SELECT k FROM unnest(CAST(:keys AS bigint[])) AS k ORDER BY k) AS ordered"
)


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
    ordering_key: str
    next_attempt_at: datetime
    delivered_at: datetime | None

    @staticmethod
    def columns() -> tuple[InstrumentedAttribute[Any], ...]:
        return (
            Delivery.id,
            Delivery.claimed_by,
            Delivery.attempts,
            Delivery.subscription_id,
            Delivery.ordering_key,
            Delivery.next_attempt_at,
            Delivery.delivered_at,
        )


class DeliveryRepository(_Repository):
    """Queues, claims, releases and acknowledges deliveries inside the caller's transaction."""

    @property
    def _postgres(self) -> bool:
        return is_postgres(self.session)

    # queueing -----------------------------------------------------------------------------

    def enqueue(self, queued: Sequence[tuple[UUID, Event]]) -> None:
        """Queue each (subscription, committed-with-this-transaction event), in event order.
        The first one of a key with nothing unfinished is its head."""
        if not queued:
            return
        keys = {(subscription_id, event.subject) for subscription_id, event in queued}
        self._lock(keys)
        busy = self._unfinished_keys(keys)
        rows = []
        for subscription_id, event in queued:
            key = (subscription_id, event.subject)
            rows.append(_queued(subscription_id, event, event.time, head=key not in busy))
            busy.add(key)
        self.session.add_all(rows)
        self.session.flush()

    def _lock(self, keys: Iterable[Key]) -> None:
        """Take each key's lock until the commit (PostgreSQL), in one global order."""
        if keys and self._postgres:
            self.session.execute(_LOCK_KEYS, {"keys": sorted({_key_lock(key) for key in keys})})

    def _unfinished_keys(self, keys: Collection[Key]) -> set[Key]:
        subscriptions = sorted({subscription for subscription, _ in keys})
        subjects = sorted({subject for _, subject in keys})
        found = self.session.execute(
            select(Delivery.subscription_id, Delivery.ordering_key)
            .where(
                Delivery.subscription_id.in_(subscriptions),
                Delivery.ordering_key.in_(subjects),
                Delivery.status.in_(UNFINISHED),
            )
            .distinct()
        )
        return {(row.subscription_id, row.ordering_key) for row in found} & set(keys)

    def _rehead(self, keys: Collection[Key]) -> None:
        """Give each key (locked by the caller) a head if it has unfinished deliveries and
        none is the head: the lowest event number."""
        for subscription_id, ordering_key in sorted(keys):
            of_key = and_(
                Delivery.subscription_id == subscription_id,
                Delivery.ordering_key == ordering_key,
                Delivery.status.in_(UNFINISHED),
            )
            if self.session.scalar(select(Delivery.id).where(of_key, Delivery.head).limit(1)):
                continue
            first = select(Delivery.id).where(of_key).order_by(Delivery.event_number).limit(1)
            first_id = self.session.scalar(first)
            if first_id is not None:
                self.session.execute(
                    update(Delivery)
                    .where(Delivery.id == first_id)
                    .values(head=True)
                    .execution_options(synchronize_session=False)
                )

    # claiming -----------------------------------------------------------------------------

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
        statement = claimable(
            self.session, _due_heads(now, callables, exclude).limit(window), of=Delivery
        )
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
        worker shutting down with deliveries it could not finish). Returns how many. A
        released delivery stays its key's head."""
        if not ids:
            return 0
        result = self.session.execute(
            update(Delivery)
            .where(
                Delivery.id.in_(sorted(ids)),
                Delivery.status == DeliveryStatus.DELIVERING,
                Delivery.claimed_by == worker_id,
            )
            .values(
                status=DeliveryStatus.PENDING,
                claimed_by=None,
                claimed_until=None,
                next_attempt_at=now,
                last_error=reason[:MAX_ERROR],
            )
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

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
        rows = self.session.scalars(claimable(self.session, statement)).all()
        for row in rows:
            row.last_error = f"claim by {row.claimed_by} expired before it was acknowledged"
            row.status = DeliveryStatus.PENDING
            row.claimed_by = None
            row.claimed_until = None
            row.next_attempt_at = now
        self.session.flush()
        return len(rows)

    # acknowledging ------------------------------------------------------------------------

    def record_results(
        self,
        results: Iterable[DeliveryResult],
        schedule: Sequence[float],
        *,
        now: datetime | None = None,
        rng: random.Random | None = None,
    ) -> dict[int, DeliveryStatus]:
        """Apply a batch of attempt outcomes (``domain.deliveries.after_attempt`` decides
        each); returns the new status of each applied one. A finished head hands its key to
        the next unfinished delivery. A result whose row is no longer claimed by its worker
        is skipped (it is absent from the returned mapping)."""
        now = now or utcnow()
        rng = rng or random.Random()
        results = list(results)
        held = self._held([r.delivery_id for r in results])
        changes: list[dict[str, Any]] = []
        finished: set[Key] = set()
        for result in results:
            row = held.pop(result.delivery_id, None)  # a repeated result finds it taken
            if row is None or row.claimed_by != result.worker_id:
                continue
            change = _acknowledged(row, result, schedule, now, rng)
            changes.append(change)
            if change["status"] != DeliveryStatus.PENDING:
                finished.add((row.subscription_id, row.ordering_key))
        if not changes:
            return {}
        self._lock(finished)
        self.session.execute(update(Delivery), changes)  # one executemany: same columns
        self._rehead(finished)
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
            .values(status=DeliveryStatus.CANCELLED, head=False, last_error=f"cancelled: {reason}")
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
                Delivery.head,
                Delivery.next_attempt_at <= now + horizon,
                _deliverable(callables),
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
            .order_by(Delivery.event_number)
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
        """A subscription's deliveries with their events, in event order after the cursor
        ``after``, optionally only those in ``statuses``: the delivery log, one page."""
        statement = (
            select(Delivery, Event)
            .join(Event, Event.number == Delivery.event_number)
            .where(Delivery.subscription_id == subscription_id, Event.seq > after)
            .order_by(Event.seq)
            .limit(limit)
        )
        if statuses:
            statement = statement.where(Delivery.status.in_(sorted(statuses)))
        return [(delivery, event) for delivery, event in self.session.execute(statement)]

    def locked(self, delivery_id: int) -> Delivery | None:
        """One delivery, locked until the transaction ends (on PostgreSQL), so a decision
        about its status cannot race a worker claiming or acknowledging it."""
        statement = select(Delivery).where(Delivery.id == delivery_id)
        return self.session.scalar(locked(self.session, statement))

    def retry(self, row: Delivery, now: datetime) -> None:
        """Make ``row`` due at ``now`` again, keeping its attempts (so a dead one that fails
        once more is dead again) and the last attempt's status code and error. It is sent
        once it is its key's head."""
        key = (row.subscription_id, row.ordering_key)
        self._lock([key])
        self._restart(row, now)
        self.session.flush()
        self._rehead([key])

    def _restart(self, row: Delivery, now: datetime) -> None:
        row.status = DeliveryStatus.PENDING
        row.next_attempt_at = now
        row.claimed_by = None
        row.claimed_until = None
        row.delivered_at = None

    def replay(self, subscription_id: UUID, events: Sequence[Event], now: datetime) -> Replayed:
        """Queue ``events`` for the subscription again, due at ``now`` with a fresh schedule.

        Existing rows restart (attempts back to 0); missing rows are created; rows in flight
        are left to their worker (they are being sent already). The head rule then sends each
        instance's events in order, after any unfinished delivery of it.
        """
        numbers = [event.number for event in events]
        statement = locked(
            self.session,
            select(Delivery)
            .where(
                Delivery.subscription_id == subscription_id,
                Delivery.event_number.in_(numbers),
            )
            .order_by(Delivery.id),
            of=Delivery,
        )
        existing = {row.event_number: row for row in self.session.scalars(statement)}
        self._lock({(subscription_id, event.subject) for event in events})  # rows, then keys
        done = Replayed()
        for event in events:
            row = existing.get(event.number)
            if row is None:
                self.session.add(_queued(subscription_id, event, now, head=False))
                done.created += 1
            elif row.status == DeliveryStatus.DELIVERING:
                done.in_flight += 1
            else:
                self._restart(row, now)
                row.attempts = 0
                done.reset += 1
        self.session.flush()
        self._rehead({(subscription_id, event.subject) for event in events})
        return done

    # internals ----------------------------------------------------------------------------

    def _held(self, ids: Sequence[int]) -> dict[int, _Held]:
        """What acknowledging needs of the claimed rows among ``ids``, locked (PostgreSQL)."""
        if not ids:
            return {}
        statement = locked(
            self.session,
            select(*_Held.columns())
            .where(Delivery.id.in_(ids), Delivery.status == DeliveryStatus.DELIVERING)
            .order_by(Delivery.id),
            of=Delivery,
        )
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
            .join(Event, Event.number == Delivery.event_number)
            .join(Subscription, Subscription.id == Delivery.subscription_id)
            .where(Delivery.id.in_(ids))
            .order_by(Delivery.event_number, Delivery.id)
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


def _key_lock(key: Key) -> int:
    """A key's advisory lock: a signed 64-bit hash (a collision only serializes two keys)."""
    digest = hashlib.blake2b(f"{key[0]}:{key[1]}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _due_heads(
    now: datetime, callables: Collection[str], exclude: Collection[UUID]
) -> Select[int, UUID, str, str]:
    """Claimable deliveries as ``Candidate`` fields, oldest event first: pending heads whose
    event has its cursor (``seq``, given after commit), walked on ``ix_deliveries_pending_heads``
    so PostgreSQL stops after the window."""
    statement = (
        select(Delivery.id, Delivery.subscription_id, Subscription.kind, Subscription.target)
        .join(Subscription, Subscription.id == Delivery.subscription_id)
        .where(
            Delivery.status == DeliveryStatus.PENDING,
            Delivery.head,
            Delivery.next_attempt_at <= now,
            _deliverable(callables),
            exists().where(Event.number == Delivery.event_number, Event.seq.is_not(None)),
        )
        .order_by(Delivery.event_number, Delivery.id)
    )
    if exclude:
        statement = statement.where(Delivery.subscription_id.not_in(sorted(exclude)))
    return statement


def _queued(subscription_id: UUID, event: Event, due: datetime, *, head: bool) -> Delivery:
    """A new delivery of ``event``, keyed as the outbox keys it (by subject)."""
    return Delivery(
        subscription_id=subscription_id,
        event_number=event.number,
        ordering_key=event.subject,
        next_attempt_at=due,
        head=head,
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
    """The change one attempt's result makes to its row (a bulk-update row). Every change
    sets the same columns (those it leaves alone, to their current value), so a whole
    acknowledgement is one executemany."""
    attempts = row.attempts + 1
    attempted_at = result.attempted_at or now
    verdict = after_attempt(result.outcome, attempts, schedule, now, rng)
    return {
        "id": row.id,
        "status": verdict.status,
        "head": verdict.status == DeliveryStatus.PENDING,
        "attempts": attempts,
        "last_attempt_at": attempted_at,
        "last_status_code": result.status_code,
        "last_error": result.error[:MAX_ERROR],
        "claimed_by": None,
        "claimed_until": None,
        "next_attempt_at": verdict.next_attempt_at or row.next_attempt_at,
        "delivered_at": attempted_at
        if verdict.status == DeliveryStatus.DELIVERED
        else row.delivered_at,
    }


def _deliverable(callables: Collection[str]) -> ColumnElement[bool]:
    """Enabled subscriptions this process can deliver to: HTTP, or a registered callable."""
    kinds: ColumnElement[bool] = Subscription.kind == "http"
    if callables:
        kinds = or_(
            kinds,
            and_(Subscription.kind == "callable", Subscription.target.in_(sorted(callables))),
        )
    return and_(Subscription.enabled.is_(True), kinds)
