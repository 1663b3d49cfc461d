"""Work sharing between worker processes, on real SQLite and PostgreSQL: the shared call
budget, the account lease log, the worker registry and (PostgreSQL) LISTEN/NOTIFY wake-ups.

Workers are played by separate objects with their own ids on one store, exactly as separate
processes would share it (each call is its own transaction).
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from cloudstate.domain.events import EventDraft, EventType
from cloudstate.domain.observations import ORPHANS_OPTION, Observation
from cloudstate.domain.states import InstanceState
from cloudstate.engine.heartbeat import Heartbeat
from cloudstate.engine.listener import WorkListener
from cloudstate.engine.ratelimit import SharedCallBudget
from cloudstate.exceptions import LeaseLostError, ProviderUnavailableError
from cloudstate.service import workers
from cloudstate.service.observations import (
    Lease,
    account_failed,
    apply_page,
    claim_account,
    finish_cycle,
    release_account,
)
from cloudstate.store import Store
from cloudstate.store.tables import Account, Event, Instance, LeaseLog, Worker, utcnow
from cloudstate.testing import wait_until


def _account(store: Store, name: str = "sim", *, adopt: bool = False) -> int:
    with store.unit_of_work() as uow:
        config = {ORPHANS_OPTION: "adopt"} if adopt else {}
        account = uow.accounts.add(name, "simulator", config=config)
        uow.commit()
        return account.id


# --- the shared call budget ------------------------------------------------------------------


def test_two_workers_share_one_accounts_call_budget(store: Store) -> None:
    """10 calls/s with a burst of 2, drawn by two workers at once: 12 calls take about one
    second between them (10 after the burst), as one worker alone would; each alone would
    have allowed all 12 in 1 s too, so this only holds if the bucket is shared."""
    account_id = _account(store)
    budgets = [SharedCallBudget(store, account_id, rate=10.0, burst=2.0) for _ in range(2)]
    started = time.monotonic()

    def draw(budget: SharedCallBudget) -> None:
        for _ in range(6):
            budget.acquire()

    threads = [threading.Thread(target=draw, args=(b,)) for b in budgets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    elapsed = time.monotonic() - started

    assert 0.9 <= elapsed < 3.0, elapsed


def test_a_throttle_seen_by_one_worker_slows_the_other(store: Store) -> None:
    """Unlimited until the provider throttles worker A; worker B's very next grant already
    uses the halved shared rate, and the rate recovers by 2 % per granted call."""
    account_id = _account(store)
    first, second = SharedCallBudget(store, account_id), SharedCallBudget(store, account_id)
    for _ in range(8):
        first.acquire()
    assert first.rate is None

    first.throttled()
    assert first.rate is not None
    assert first.rate <= 4.5  # half of what A used in the last second (8 calls), at most

    second._checked = float("-inf")  # B's once-a-second look at the shared row is due
    second.acquire()
    assert second.rate is not None
    assert second.rate <= first.rate * 1.021
    before = second.rate
    second.acquire()
    assert second.rate == pytest.approx(before * 1.02)


# --- the lease log ---------------------------------------------------------------------------


def test_each_reconcile_lease_is_logged_from_claim_to_release(store: Store) -> None:
    account_id = _account(store)
    lease = timedelta(seconds=30)
    assert claim_account(store, "worker-a", now=utcnow(), lease=lease) == (account_id, "sim")
    apply_page(store, Lease(account_id, "worker-a", lease), [], utcnow())  # renews the lease
    release_account(store, account_id, "worker-a")

    with store.read() as session:
        [entry] = session.scalars(select(LeaseLog))
        assert entry.worker_id == "worker-a"
        assert entry.finished_at is not None
        assert entry.started_at <= entry.finished_at <= entry.expires_at


def test_a_crashed_workers_account_is_taken_over_after_one_lease_and_never_overlaps(
    store: Store,
) -> None:
    """Worker A claims and dies (never renews, never releases); worker B cannot claim the
    account while A's lease runs, and takes it over once it expired. The log shows A's lease
    ending (its expiry) before B's began: no two workers ever held it at once."""
    _account(store)
    lease = timedelta(seconds=0.5)
    now = utcnow()
    assert claim_account(store, "worker-a", now=now, lease=lease) is not None
    assert claim_account(store, "worker-b", now=now + timedelta(seconds=0.2), lease=lease) is None
    later = now + timedelta(seconds=0.6)
    assert claim_account(store, "worker-b", now=later, lease=lease) is not None

    with store.read() as session:
        a, b = session.scalars(select(LeaseLog).order_by(LeaseLog.id))
    assert (a.worker_id, b.worker_id) == ("worker-a", "worker-b")
    assert a.finished_at is None  # it crashed: its lease ended when it expired
    assert a.expires_at <= b.started_at


def _running(provider_id: str) -> Observation:
    """An instance the account has and cloudstate does not know: the ``adopt`` policy makes
    it a tracked instance (rows and events) when a page is applied."""
    return Observation(uuid.uuid4(), provider_id, InstanceState.RUNNING, "running")


def test_a_worker_whose_lease_ran_out_writes_nothing_and_its_log_ends_at_the_expiry(
    store: Store,
) -> None:
    """Fencing. Worker A's lease runs out mid-cycle and B takes the account over; A's next
    page would adopt an instance, but its transaction finds the lease gone: nothing of it is
    written (no instance, no event), A gets ``LeaseLostError``, A's release leaves B's lease
    alone, and the log ends A's lease at its last renewal, before B's began."""
    account_id = _account(store, adopt=True)
    period = timedelta(seconds=0.3)
    now = utcnow()
    assert claim_account(store, "worker-a", now=now, lease=period) is not None
    a = Lease(account_id, "worker-a", period)
    apply_page(store, a, [_running("i-1")], utcnow())  # in time: written, lease renewed
    time.sleep(0.35)
    assert claim_account(store, "worker-b", now=utcnow(), lease=timedelta(seconds=30))

    with pytest.raises(LeaseLostError):
        apply_page(store, a, [_running("i-2")], utcnow())
    release_account(store, account_id, "worker-a")

    with store.read() as session:
        adopted = session.scalars(select(Instance.provider_id)).all()
        events = session.scalars(select(Event.type)).all()
        account = session.get_one(Account, account_id)
        first, second = session.scalars(select(LeaseLog).order_by(LeaseLog.id))
    assert adopted == ["i-1"]
    assert len(events) == 2  # i-1's created and state events; nothing of i-2
    assert account.lease_owner == "worker-b"
    assert first.finished_at is not None
    assert first.finished_at <= first.expires_at <= second.started_at


def test_the_log_tells_a_completed_cycle_from_one_cut_short(store: Store) -> None:
    """A cycle that closes (``finish_cycle``) is logged ``completed``; one whose listing
    failed is released but not completed: only the first listed the whole account."""
    account_id = _account(store)
    period = timedelta(seconds=30)
    due = timedelta(0)  # the next cycle is due at once
    for ends_well in (True, False):
        assert claim_account(store, "worker-a", now=utcnow(), lease=period) is not None
        lease = Lease(account_id, "worker-a", period)
        if ends_well:
            now = utcnow()
            finish_cycle(store, lease, set(), started_at=now, grace=period, fast=due, slow=due)
        else:
            error = ProviderUnavailableError("listing failed")
            account_failed(store, lease, error, threshold=3, retry_in=timedelta(0))
        release_account(store, account_id, "worker-a")

    with store.read() as session:
        logged = [
            (e.finished_at is not None, e.completed)
            for e in session.scalars(select(LeaseLog).order_by(LeaseLog.id))
        ]
    assert logged == [(True, True), (True, False)]


def test_an_expired_lease_no_one_took_over_still_fences(store: Store) -> None:
    """An expired lease is lost even when no other worker claimed the account yet: a claim
    could happen at any moment, so the write is refused all the same."""
    account_id = _account(store, adopt=True)
    period = timedelta(seconds=0.2)
    assert claim_account(store, "worker-a", now=utcnow(), lease=period) is not None
    time.sleep(0.25)

    with pytest.raises(LeaseLostError):
        apply_page(store, Lease(account_id, "worker-a", period), [_running("i-1")], utcnow())
    with store.read() as session:
        assert session.scalars(select(Instance)).all() == []


# --- the worker registry ---------------------------------------------------------------------


def test_workers_report_themselves_and_what_they_hold(store: Store) -> None:
    """A heartbeat writes the worker's row with the accounts it leases; a clean stop clears
    it from the running list; silence past three heartbeats reads as not alive."""
    _account(store)
    beat = Heartbeat(store, "worker-a")
    claim_account(store, "worker-a", now=utcnow(), lease=timedelta(seconds=30))
    beat.tick()

    [view] = workers.list_workers(store)
    assert (view.id, view.alive, view.holds["accounts"]) == ("worker-a", True, ["sim"])
    assert view.holds["operations"] == view.holds["deliveries"] == 0

    stale = utcnow() - timedelta(seconds=workers.PRESUMED_DEAD_AFTER + 1)
    with store.unit_of_work() as uow:
        uow.session.get_one(Worker, "worker-a").heartbeat_at = stale
        uow.commit()
    assert not workers.list_workers(store)[0].alive

    beat.stopped()
    assert workers.list_workers(store) == []
    [stopped] = workers.list_workers(store, include_stopped=True)
    assert stopped.stopped_at is not None
    assert stopped.holds == {}


# --- LISTEN/NOTIFY ---------------------------------------------------------------------------


@pytest.mark.postgres
def test_a_commit_with_events_wakes_listening_workers_at_once(postgres_store: Store) -> None:
    """A worker's listener hears every commit that records events (new work) within a
    fraction of a second, so idle workers need not wait for their next poll."""
    woken = threading.Event()
    listener = WorkListener(postgres_store.database.url, woken.set)
    listener.start()
    try:
        wait_until(lambda: _listening(postgres_store), timeout=5, what="the listener's LISTEN")
        started = time.monotonic()
        with postgres_store.unit_of_work() as uow:
            uow.record(EventDraft(EventType.ORDER_COMPLETED, {"x": 1}, order_id=uuid.uuid4()))
            uow.commit()
        assert woken.wait(2.0)
        assert time.monotonic() - started < 1.0
        assert listener.notified >= 1
    finally:
        listener.stop()


def _listening(store: Store) -> bool:
    with store.read() as session:
        count = session.scalar(
            text("SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN cloudstate_work'")
        )
    return bool(count)
