"""The delivery pipeline: sends stay in flight across claims, so a slow endpoint delays no other.

A ``Pipeline`` lives on its deliverer's event loop and keeps a set of in-flight attempts,
bounded by ``delivery_concurrency`` overall and by ``delivery_per_endpoint_concurrency`` per
endpoint (URL ``host:port``, or one callable). It claims more as slots free up, and only what
it can start at once: a claim never considers subscriptions whose endpoint is full (or whose
breaker is waiting for a probe's answer), and takes at most the free slots of each endpoint,
because a claimed row holds a lease. Finished attempts are acknowledged in small batches (every
``ACK_INTERVAL`` or ``ACK_BATCH`` results, whichever comes first, and at once when nothing else
is in flight), one transaction each.

Invariants kept from the store: a (subscription, ordering key) has at most one delivery in
flight and its events go out in order, because only the head of each queue is claimable and
the next becomes the head only once the previous is acknowledged; claims are leases (a crash
leaves them to expire and be retried: at least once); an acknowledgement applies only while
the row is still claimed by this worker.

Store calls are short and run on the loop's thread between awaits; they pause the sends for
milliseconds, never for the duration of a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from uuid import UUID

from cloudstate.config import Settings
from cloudstate.domain.deliveries import (
    DeliveryStatus,
    Outcome,
    disables_subscription,
    gone_reason,
)
from cloudstate.engine import failpoints
from cloudstate.engine.breaker import Breakers, Gate
from cloudstate.store import Store
from cloudstate.store.deliveries import (
    LEAVE,
    TAKE,
    Admission,
    Candidate,
    ClaimedDelivery,
    DeliveryResult,
)
from cloudstate.store.tables import utcnow
from cloudstate.store.uow import UnitOfWork
from cloudstate.webhooks.safety import endpoint

log = logging.getLogger("cloudstate.engine.deliverer")

ACK_INTERVAL = 0.05
ACK_BATCH = 100
POLL_SECONDS = 0.25  # while sends are in flight, look for new work this often
RELEASE_EVERY = 1.0  # seconds between sweeps for expired claims of dead workers


class Health(Enum):
    """What an attempt says about its endpoint, for the circuit breaker."""

    UP = "up"  # it answered (any status below 500)
    DOWN = "down"  # no answer, a timeout, or a 5xx
    NEUTRAL = "neutral"  # nothing was learnt (refused by policy, unsigned, a callable)


@dataclass(frozen=True)
class Attempted:
    result: DeliveryResult
    health: Health = Health.NEUTRAL


Attempt = Callable[[ClaimedDelivery], Awaitable[Attempted]]


@dataclass(frozen=True)
class _Flight:
    claimed: ClaimedDelivery
    endpoint: str
    probe: bool


@dataclass
class Progress:
    """What one ``run`` did, and what it left: the basis of the task's ``TickResult``."""

    claimed: int = 0
    deferred: int = 0
    acknowledged: int = 0
    in_flight: int = 0
    backlog: bool = False  # claimable work may remain

    @property
    def worked(self) -> bool:
        return bool(self.claimed or self.deferred or self.acknowledged)


class Pipeline:
    """In-flight attempts of one deliverer; driven by ``run``, on one event loop only."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        worker_id: str,
        callables: Callable[[], Collection[str]],
        attempt: Attempt,
        breakers: Breakers,
    ) -> None:
        self._store = store
        self._settings = settings
        self._worker_id = worker_id
        self._callables = callables
        self._attempt = attempt
        self._breakers = breakers
        self._flights: dict[asyncio.Task[Attempted], _Flight] = {}
        self._per_endpoint: Counter[str] = Counter()
        self._done: list[tuple[ClaimedDelivery, DeliveryResult]] = []
        self._first_done_at = math.inf
        self._endpoints: dict[UUID, str] = {}  # subscription → endpoint, learnt from claims
        self._wake = asyncio.Event()
        self._backlog = True
        self._released_at = -math.inf

    async def run(self, budget: float) -> Progress:
        """Claim, send and acknowledge until nothing is claimable and nothing is in flight,
        or for ``budget`` seconds; sends still in flight then carry on at the next run."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        next_poll = loop.time() + POLL_SECONDS
        progress = Progress()
        self._backlog = True
        while True:
            if self._ack_due(loop.time()):
                progress.acknowledged += self._flush()
            if self._backlog and self._free() > 0:
                self._claim(progress)
            now = loop.time()
            if (not self._flights and not self._done and not self._backlog) or now >= deadline:
                break
            if now >= next_poll:  # new events may have arrived meanwhile
                self._backlog, next_poll = True, now + POLL_SECONDS
            if self._backlog and self._free() > 0:
                await asyncio.sleep(0)  # let the sends breathe between claims
                continue
            await self._wait(min(deadline, next_poll, self._first_done_at + ACK_INTERVAL) - now)
        progress.acknowledged += self._flush()
        progress.in_flight, progress.backlog = len(self._flights), self._backlog
        return progress

    async def shutdown(self, grace: float) -> None:
        """Give in-flight attempts ``grace`` seconds, acknowledge what finished, and hand the
        rest back to the queue (due at once, no attempt used: they may have been sent)."""
        if self._flights:
            await asyncio.wait(list(self._flights), timeout=grace)
        unfinished = dict(self._flights)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        self._flush()
        if not unfinished:
            return
        ids = [flight.claimed.id for flight in unfinished.values()]
        with self._store.unit_of_work() as uow:
            released = uow.deliveries.release(
                ids, self._worker_id, utcnow(), "released unacknowledged at shutdown"
            )
            uow.commit()
        log.warning("shutdown: %d unfinished delivery claim(s) handed back", released)

    # claiming -----------------------------------------------------------------------------

    def _free(self) -> int:
        return self._settings.delivery_concurrency - len(self._flights)

    def _claim(self, progress: Progress) -> None:
        limit = min(self._settings.delivery_batch_size, self._free())
        admission = _Admission(self._breakers, self._endpoints, self._room)
        now, clock = utcnow(), asyncio.get_running_loop().time()
        with self._store.unit_of_work() as uow:
            # Only events with their cursor are sent (the envelope carries it): number what
            # has committed first, so delivery never waits for another worker's sequencer.
            uow.changelog.number_committed()
            released = 0
            if clock - self._released_at >= RELEASE_EVERY:
                released = uow.deliveries.release_expired(now)
                self._released_at = clock
            batch = uow.deliveries.claim(
                self._worker_id,
                limit,
                now,
                timedelta(seconds=self._settings.delivery_lease_seconds),
                callables=self._callables(),
                exclude=self._excluded(),
                admit=admission,
            )
            uow.commit()
        if released:
            log.warning("released %d expired delivery claim(s) for another attempt", released)
        for claimed in batch:
            self._start(claimed, admission.probes)
        progress.claimed += len(batch)
        progress.deferred += admission.deferred
        self._backlog = admission.seen >= limit

    def _room(self, ep: str) -> int:
        """Free slots of one endpoint."""
        return self._settings.delivery_per_endpoint_concurrency - self._per_endpoint[ep]

    def _excluded(self) -> set[UUID]:
        """Subscriptions not worth a look now: their endpoint is full or awaits a probe."""
        busy = {
            ep
            for ep in set(self._endpoints.values())
            if self._room(ep) <= 0 or self._breakers.check(ep).gate is Gate.HOLD
        }
        return {sid for sid, ep in self._endpoints.items() if ep in busy}

    def _start(self, claimed: ClaimedDelivery, probes: set[str]) -> None:
        ep = endpoint(claimed.kind, claimed.target)
        probe = ep in probes
        if probe:
            self._breakers.probing(ep)
            probes.discard(ep)
        task = asyncio.ensure_future(self._attempt(claimed))
        self._flights[task] = _Flight(claimed, ep, probe)
        self._per_endpoint[ep] += 1
        task.add_done_callback(self._finished)

    # finishing ----------------------------------------------------------------------------

    def _finished(self, task: asyncio.Task[Attempted]) -> None:
        flight = self._flights.pop(task)
        self._per_endpoint[flight.endpoint] -= 1
        if self._per_endpoint[flight.endpoint] <= 0:
            del self._per_endpoint[flight.endpoint]
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:  # an attempt must not raise; one that does is a failed attempt
            result = _failure(flight.claimed, self._worker_id, f"{type(error).__name__}: {error}")
            attempted = Attempted(result)
        else:
            attempted = task.result()
        self._judge(flight, attempted)
        if not self._done:
            self._first_done_at = asyncio.get_running_loop().time()
        self._done.append((flight.claimed, attempted.result))
        self._wake.set()

    def _judge(self, flight: _Flight, attempted: Attempted) -> None:
        if attempted.health is Health.UP:
            self._breakers.succeeded(flight.endpoint)
        elif attempted.health is Health.DOWN:
            self._breakers.failed(flight.endpoint, attempted.result.error, probe=flight.probe)
        else:
            self._breakers.neutral(flight.endpoint, probe=flight.probe)

    def _ack_due(self, now: float) -> bool:
        if not self._done:
            return False
        waited = now - self._first_done_at
        return not self._flights or len(self._done) >= ACK_BATCH or waited >= ACK_INTERVAL

    def _flush(self) -> int:
        """Acknowledge every finished attempt in one transaction (kept for the next flush if
        the store fails: the rows stay claimed by this worker until then)."""
        if not self._done:
            return 0
        batch, self._done, self._first_done_at = self._done, [], math.inf
        failpoints.hit("deliver.after_send")  # crash tests: sent, never acknowledged
        try:
            with self._store.unit_of_work() as uow:
                applied = uow.deliveries.record_results(
                    [result for _, result in batch], self._settings.delivery_retry_schedule
                )
                self._disable_gone(uow, batch, applied)
                uow.commit()
        except BaseException:
            self._done = batch + self._done
            self._first_done_at = asyncio.get_running_loop().time()
            raise
        for claimed, result in batch:
            if result.outcome is not Outcome.DELIVERED:
                _log_failure(claimed, result, applied.get(result.delivery_id))
        self._backlog = True  # acknowledged heads may have unblocked their successors
        return len(batch)

    @staticmethod
    def _disable_gone(
        uow: UnitOfWork,
        batch: list[tuple[ClaimedDelivery, DeliveryResult]],
        applied: dict[int, DeliveryStatus],
    ) -> None:
        """A receiver that answered 410 Gone is never called again: its subscription is
        disabled (and its pending deliveries cancelled) in the acknowledging transaction."""
        gone = {
            claimed.subscription_id: result
            for claimed, result in batch
            if disables_subscription(result.outcome) and result.delivery_id in applied
        }
        now = utcnow()
        for subscription_id in sorted(gone):  # one lock order for every worker
            reason = gone_reason(gone[subscription_id].status_code, now)
            uow.deliveries.disable_subscription(subscription_id, reason)

    async def _wait(self, timeout: float) -> None:
        if timeout <= 0:
            return
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)


class _Admission:
    """Judges one claim's candidates, in claim order, against each endpoint's free slots and
    breaker; learns which endpoint each subscription posts to, for later exclusions."""

    def __init__(
        self, breakers: Breakers, endpoints: dict[UUID, str], room: Callable[[str], int]
    ) -> None:
        self._breakers = breakers
        self._endpoints = endpoints
        self._room = room
        self._taken: Counter[str] = Counter()
        self.probes: set[str] = set()
        self.seen = 0
        self.deferred = 0

    def __call__(self, candidate: Candidate) -> Admission:
        self.seen += 1
        ep = endpoint(candidate.kind, candidate.target)
        self._endpoints[candidate.subscription_id] = ep
        verdict = self._breakers.check(ep)
        if verdict.gate is Gate.OPEN:
            self.deferred += 1
            until = utcnow() + timedelta(seconds=verdict.retry_in)
            return Admission(take=False, defer_until=until, reason=verdict.reason)
        if verdict.gate is Gate.HOLD or ep in self.probes or self._room(ep) <= self._taken[ep]:
            return LEAVE
        self._taken[ep] += 1
        if verdict.gate is Gate.PROBE:
            self.probes.add(ep)
        return TAKE


def _failure(claimed: ClaimedDelivery, worker_id: str, error: str) -> DeliveryResult:
    return DeliveryResult(claimed.id, worker_id, Outcome.FAILED, None, error, utcnow())


_NEXT: dict[DeliveryStatus | None, str] = {
    DeliveryStatus.PENDING: "will retry",
    DeliveryStatus.DEAD: "dead-lettered",
    DeliveryStatus.CANCELLED: "subscription disabled",
}


def _log_failure(
    claimed: ClaimedDelivery, result: DeliveryResult, status: DeliveryStatus | None
) -> None:
    """One line per failed attempt: who, which event, what happened, what comes next."""
    then = _NEXT.get(status, "result discarded: the claim was taken over")
    log.warning(
        "delivery failed: subscription %s, event %d, attempt %d: %s; %s",
        claimed.subscription_id,
        claimed.event.seq,
        claimed.attempt,
        result.error,
        then,
    )
