"""Reconcile: observations diffed per second by one worker, and one worker's memory with
100,000 tracked instances.

Setup (not timed): N instances are created on a zero-latency simulator and stored as ours,
running, exactly as the listing shows them (bulk insert, then ``VACUUM ANALYZE``; see
``_common.track_fleet``).

Measured:

* ``steady``: ``Reconciler.cycle`` over the account, in this process, as the worker runs it:
  every page listed from the simulator (its default page size, 100; then again with pages of
  1,000, EC2's largest, for information), diffed against PostgreSQL
  in one transaction per page, the lease renewed between pages, then the end-of-cycle
  judgement of what was not seen. Nothing changed, so no events: the steady state of a fleet.
  The figure is N / cycle time, median of the cycles.
* ``changing``: the same after marking a tenth of the rows ``pending``: those observations
  each record a state change and its event.
* reference: the same pages listed from the same simulator, and for each page the same rows
  fetched with a bare psycopg ``SELECT ... WHERE uuid = ANY(...)`` and compared field by field
  in a tight loop, one transaction per page: listing + diff, with no ORM and no bookkeeping.
* memory: a real ``cloudstate worker`` process runs a full cycle over the N instances; its
  peak RSS (VmHWM) is read from /proc.

Usage: ``python bench/bench_reconcile.py [--quick]``
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from _common import (
    PYTHON,
    Children,
    Fleet,
    Reporter,
    add_simulator_account,
    at_least,
    below,
    bench_main,
    env_for,
    peak_rss_mb,
    prepared_store,
    settings,
    simulator,
    track_fleet,
    wait_for,
)
from sqlalchemy import select, update

from cloudstate.config import Settings
from cloudstate.domain.states import InstanceState
from cloudstate.engine.drivers import DriverPool
from cloudstate.engine.reconciler import Reconciler
from cloudstate.providers.base import Page
from cloudstate.providers.simulator import SimulatedCloud, SimulatorDriver
from cloudstate.service import observations as service
from cloudstate.store import Store
from cloudstate.store.tables import Account, Instance

TARGET_RATE = 50_000
TARGET_RSS_MB = 600
FULL_INSTANCES = 100_000
QUICK_INSTANCES = 5_000
CHANGED_SHARE = 10  # one row in this many is made pending for the "changing" cycle
DEFAULT_PAGE = 100  # the simulator's default page size
LARGE_PAGE = 1_000  # EC2 DescribeInstances' largest page


class TimedDriver:
    """Delegates to a driver, adding up the time spent in ``list_page`` (the provider's
    share of a cycle, which no change to cloudstate can shorten)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.listing = 0.0

    def list_page(self, token: str | None = None, **kwargs: Any) -> Page:
        started = time.perf_counter()
        try:
            page: Page = self.inner.list_page(token, **kwargs)
            return page
        finally:
            self.listing += time.perf_counter() - started

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass(frozen=True)
class Cycle:
    seconds: float
    listing: float  # of which spent in the driver's list_page
    cpu: float  # CPU seconds of this process (the cycle runs in this thread only)


def timed_cycle(reconciler: Reconciler, store: Store, fleet: Fleet) -> Cycle:
    """One full cycle, timed."""
    driver = TimedDriver(reconciler.pool.for_account(fleet.account_id))
    original = reconciler.pool.for_account
    reconciler.pool.for_account = lambda _id: driver  # type: ignore[method-assign]
    try:
        started, cpu = time.perf_counter(), time.process_time()
        leased_cycle(reconciler, store, fleet)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        reconciler.pool.for_account = original  # type: ignore[method-assign]
    with store.read() as session:
        account = session.get_one(Account, fleet.account_id)
        if account.consecutive_failures:
            raise RuntimeError(f"the cycle failed: {account.status_reason}")
    return Cycle(elapsed, driver.listing, cpu)


def leased_cycle(reconciler: Reconciler, store: Store, fleet: Fleet) -> None:
    """Lease the account as a worker's tick does, run one cycle, release it."""
    with store.database.engine.begin() as conn:
        conn.execute(
            update(Account)
            .where(Account.id == fleet.account_id)
            .values(next_reconcile_at=datetime.now(UTC))
        )
    claimed = service.claim_account(
        store, reconciler.worker_id, now=datetime.now(UTC), lease=reconciler.lease
    )
    if claimed is None:
        raise RuntimeError("could not lease the account")
    try:
        reconciler.cycle(
            service.Lease(claimed[0], reconciler.worker_id, reconciler.lease), claimed[1]
        )
    finally:
        service.release_account(store, claimed[0], reconciler.worker_id)


def make_pending(store: Store, fleet: Fleet, share: int) -> int:
    """Mark every ``share``-th instance pending, as if its boot had not been seen yet."""
    chosen = sorted(fleet.provider_ids)[::share]
    with store.database.engine.begin() as conn:
        conn.execute(
            update(Instance)
            .where(Instance.uuid.in_(chosen))
            .values(state=InstanceState.PENDING, raw_state="pending")
        )
    return len(chosen)


def reference_cycle(url: str, driver: SimulatorDriver) -> tuple[Cycle, int, int]:
    """Bare listing + psycopg fetch + field-by-field compare, one transaction per page.
    Returns its time, the observations and the differences found."""
    columns = "uuid, provider_id, state, raw_state, public_addresses, private_addresses"
    columns += ", key_fingerprint, state_changed_at"
    query = f"SELECT {columns} FROM instances WHERE uuid = ANY(%s)"
    seen = differences = 0
    listing = 0.0
    started, cpu = time.perf_counter(), time.process_time()
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
        token: str | None = None
        while True:
            listed = time.perf_counter()
            page = driver.list_page(token)
            listing += time.perf_counter() - listed
            with conn.transaction():
                rows = {
                    row[0]: row for row in conn.execute(query, ([i.uuid for i in page.instances],))
                }
            for item in page.instances:
                row = rows.get(item.uuid)
                seen += 1
                if row is None or (
                    row[1] != item.provider_id
                    or row[2] != str(item.state)
                    or row[3] != item.raw_state
                    or tuple(row[4]) != tuple(item.public_addresses)
                    or tuple(row[5]) != tuple(item.private_addresses)
                    or row[6] != item.key_fingerprint
                ):
                    differences += 1
            token = page.next_token
            if token is None:
                break
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return Cycle(elapsed, listing, cpu), seen, differences


def worker_memory(
    config: Settings, store: Store, fleet: Fleet, logs: Path, timeout: float
) -> tuple[float, float, float]:
    """Run a real worker until it finished one cycle over the fleet; returns
    (peak RSS MiB, RSS after the cycle MiB, the cycle's seconds as the worker's rows say)."""
    with store.database.engine.begin() as conn:
        conn.execute(
            update(Account)
            .where(Account.id == fleet.account_id)
            .values(next_reconcile_at=datetime.now(UTC), last_cycle_at=None)
        )
    with Children(logs) as children:
        proc = children.start("worker", [PYTHON, "-m", "cloudstate", "worker"], env_for(config))

        def finished() -> Any:
            children.check()
            with store.read() as session:
                account = session.get_one(Account, fleet.account_id)
                done = account.last_cycle_at is not None and account.lease_owner is None
                return (account.last_cycle_at, account.updated_at) if done else None

        started_at, ended_at = wait_for(finished, timeout, "the worker's cycle", interval=0.2)
        time.sleep(0.5)
        current, peak = peak_rss_mb(proc.pid)
    return peak, current, (ended_at - started_at).total_seconds()


def count_instances(store: Store) -> int:
    with store.read() as session:
        return len(session.scalars(select(Instance.uuid)).all())


def run(opts: Any, reporter: Reporter, home: Path, url: str) -> None:
    count = QUICK_INSTANCES if opts.quick else FULL_INSTANCES
    config = settings(home, url, reconcile_slow_interval=600.0)
    store = prepared_store(config)
    cloud_path = home / "cloud.db"
    cloud = simulator(cloud_path)
    add_simulator_account(store, "sim", cloud_path, "sim")
    started = time.perf_counter()
    fleet = track_fleet(store, cloud, "sim", "sim", count)
    print(f"   setup: {count:,} instances tracked in {time.perf_counter() - started:.1f} s")
    pool = DriverPool(store, home)
    reconciler = Reconciler(store, config, pool, worker_id="bench")
    try:
        cycles = 3 if opts.quick else 1  # a full cycle over 100,000 instances takes a while
        for size in (DEFAULT_PAGE, LARGE_PAGE):
            first = size == DEFAULT_PAGE
            steady(
                reporter,
                reconciler,
                store,
                fleet,
                url,
                cloud,
                cycles=cycles,
                page_size=size,
                warm_up=first,
            )
        cloud.configure(page_size=DEFAULT_PAGE)
        changing(reporter, reconciler, store, fleet, count)
    finally:
        pool.close()
    timeout = 60.0 if opts.quick else 600.0
    peak, after, worker_seconds = worker_memory(config, store, fleet, home / "logs", timeout)
    target, ok = below(peak, TARGET_RSS_MB)
    note = f"{count:,} tracked instances; {after:,.0f} MiB after the cycle"
    note += f"; the worker's cycle took {worker_seconds:.1f} s"
    if opts.quick:
        target, ok = f"(< {TARGET_RSS_MB} at 100k)", None
    reporter.report("reconcile.worker_peak_rss", peak, "MiB", target, ok, note=note)
    store.close()
    cloud.close()


def steady(
    reporter: Reporter,
    reconciler: Reconciler,
    store: Store,
    fleet: Fleet,
    url: str,
    cloud: SimulatedCloud,
    *,
    cycles: int,
    page_size: int,
    warm_up: bool,
) -> None:
    """Steady-state cycles and the reference, at the simulator's ``page_size``."""
    cloud.configure(page_size=page_size)
    count = len(fleet.provider_ids)
    if warm_up:
        leased_cycle(reconciler, store, fleet)  # realms, driver, caches; also primes PostgreSQL
    runs = [timed_cycle(reconciler, store, fleet) for _ in range(cycles)]
    driver = SimulatorDriver(cloud, fleet.namespace)
    references = [reference_cycle(url, driver) for _ in range(cycles)]
    if any(seen != count or differences for _, seen, differences in references):
        raise RuntimeError(f"the reference did not see {count:,} unchanged instances")
    ours, ref = middle(runs), middle([cycle for cycle, _, _ in references])
    rate, ref_rate = count / ours.seconds, count / ref.seconds
    default = page_size == DEFAULT_PAGE
    target, ok = at_least(rate, TARGET_RATE) if default else ("", None)
    suffix = "" if default else f"_page{page_size}"
    reporter.report(
        f"reconcile.observations_per_s{suffix}",
        rate,
        "/s",
        target,
        ok,
        reference="bare listing + psycopg SELECT/compare",
        reference_figure=ref_rate,
        ratio=rate / ref_rate,
        note=f"{count:,} instances, pages of {page_size}, {ours.seconds:.2f} s per cycle, "
        f"{ours.listing / ours.seconds:.0%} of it listing; CPU {ours.cpu * 1e6 / count:.0f} "
        f"µs/observation (reference {ref.cpu * 1e6 / count:.0f})",
    )
    reporter.report(
        f"reconcile.diff_only_per_s{suffix}",
        count / (ours.seconds - ours.listing),
        "/s",
        reference="the same without listing",
        reference_figure=count / (ref.seconds - ref.listing),
        ratio=(ref.seconds - ref.listing) / (ours.seconds - ours.listing),
        note="the cycles above without the simulator's listing time",
    )


def middle(cycles: list[Cycle]) -> Cycle:
    """The cycle of median duration."""
    return sorted(cycles, key=lambda cycle: cycle.seconds)[len(cycles) // 2]


def changing(
    reporter: Reporter, reconciler: Reconciler, store: Store, fleet: Fleet, count: int
) -> None:
    changed = make_pending(store, fleet, CHANGED_SHARE)
    cycle = timed_cycle(reconciler, store, fleet)
    reporter.report(
        "reconcile.changing_observations_per_s",
        count / cycle.seconds,
        "/s",
        note=f"{changed:,} of {count:,} observations record a state change and its event "
        f"(pages of {DEFAULT_PAGE})",
    )


def main() -> None:
    bench_main("reconcile", __doc__ or "", run)


if __name__ == "__main__":
    main()
