"""Events end to end: a change on the provider → the committed event → the signed webhook
received by a local aiohttp receiver, with two worker processes.

Setup: two simulator accounts (a cloud file each), each with P running instances tracked in
one throwaway PostgreSQL database; one HTTP subscription to ``bench/_receiver.py`` (its own
process); two ``cloudstate worker`` processes. Transitions are instant and calls have no
latency. Both reconcile intervals are 0.1 s (fast cadence always: with the defaults a steady
account is listed every 30 s, and the latency would be that); other settings are defaults.

Load: this process plays "someone else" on the clouds at a fixed rate, round-robin over the
instances: it stops a running instance or starts a stopped one. Each such change is observed
as two events (``instance.state_changed`` and ``instance.addresses_changed``: a stop releases
the public address, a start assigns one), so R changes/s offer 2R events/s. An instance is
changed again only several seconds later, long after its previous change was observed.

Measured, in two phases:

* throughput: changes offered for 1,500 events/s; the figure is the rate at which webhooks
  arrive at the receiver, from the first arrival of the phase to the last (the offered rate
  when the pipeline keeps up, its capacity when it does not), and how long the backlog took to
  drain once the offering stopped.
* latency at half that rate: per change, the time from the change to the arrival of its
  ``instance.state_changed`` webhook; p50 and p99.

Reference: the receiver's own ceiling, i.e. the same bodies POSTed to it as fast as a bare aiohttp
client with 20 connections can (``throughput`` ratio), and the reconcile interval for latency.

Usage: ``python bench/bench_events.py [--quick]``
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from _common import (
    PYTHON,
    Children,
    Fleet,
    Receiver,
    Reporter,
    add_simulator_account,
    at_least,
    below,
    bench_main,
    env_for,
    median,
    percentile,
    prepared_store,
    settings,
    simulator,
    track_fleet,
    wait_for,
)
from sqlalchemy import func, select, text, update

from cloudstate.providers.simulator import SimulatedCloud
from cloudstate.service import accounts
from cloudstate.store import Store
from cloudstate.store.tables import Account, Delivery, Event

TARGET_RATE = 1_500
TARGET_P99 = 0.5
INTERVAL = 0.1
EVENTS_PER_CHANGE = 2


@dataclass
class Change:
    uuid: str
    state: str  # the state the change leads to
    at: float  # time.time() just before the call


@dataclass
class Driver:
    """Changes instances of several clouds round-robin, at a fixed rate."""

    clouds: list[tuple[SimulatedCloud, Fleet]]
    states: dict[uuid.UUID, str] = field(default_factory=dict)
    cursors: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.order = [sorted(fleet.provider_ids) for _, fleet in self.clouds]
        self.cursors = [0] * len(self.clouds)

    def run(self, rate: float, seconds: float) -> list[Change]:
        changes: list[Change] = []
        started = time.monotonic()
        n = 0
        while (elapsed := time.monotonic() - started) < seconds:
            if n > elapsed * rate:
                time.sleep(min(0.002, n / rate - elapsed))
                continue
            changes.append(self.change(n % len(self.clouds)))
            n += 1
        return changes

    def change(self, index: int) -> Change:
        cloud, fleet = self.clouds[index]
        instances = self.order[index]
        instance = instances[self.cursors[index] % len(instances)]
        self.cursors[index] += 1
        provider_id = fleet.provider_ids[instance]
        at = time.time()
        if self.states.get(instance, "running") == "running":
            cloud.external_stop(provider_id)
            self.states[instance] = "stopped"
        else:
            cloud.external_start(provider_id)
            self.states[instance] = "running"
        return Change(str(instance), self.states[instance], at)


def latencies(changes: list[Change], records: list[tuple[float, str, str, str]]) -> list[float]:
    """Per change, its state_changed webhook's arrival minus the change's time (matched in
    order per instance, by the state reached)."""
    arrivals: dict[str, list[tuple[float, str]]] = {}
    for at, subject, kind, state in records:
        if kind == "instance.state_changed":
            arrivals.setdefault(subject, []).append((at, state))
    found: list[float] = []
    position: dict[str, int] = {}
    for change in changes:
        queue = arrivals.get(change.uuid, [])
        i = position.get(change.uuid, 0)
        while i < len(queue) and queue[i][1] != change.state:
            i += 1
        if i < len(queue):
            found.append(queue[i][0] - change.at)
            i += 1
        position[change.uuid] = i
    return found


def committed(store: Store, since: float) -> list[tuple[float, str, str, str]]:
    """The committed state-change events since ``since``, as the receiver records webhooks
    (commit time, subject, type, state): to split the latency into its two stages."""
    with store.read() as session:
        rows = session.execute(
            select(Event.time, Event.subject, Event.type, Event.data)
            .where(Event.type == "instance.state_changed")
            .where(Event.time >= datetime.fromtimestamp(since, UTC))
            .order_by(Event.seq)
        )
        return [
            (at.timestamp(), subject, kind, (data.get("instance") or {}).get("state", ""))
            for at, subject, kind, data in rows
        ]


def sustained_rate(records: list[tuple[float, str, str, str]]) -> float:
    """Webhooks per second between the first and the last arrival of a phase: the offered
    rate when the pipeline keeps up, its capacity when it does not."""
    times = sorted(at for at, *_ in records)
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


def pending(store: Store) -> int:
    with store.read() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.status.in_(["pending", "delivering"]))
            )
            or 0
        )


def drain(store: Store, children: Children, timeout: float) -> tuple[float, bool]:
    """Seconds until no delivery is open (the backlog drained), up to ``timeout``; and
    whether it did drain."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        children.check()
        if pending(store) == 0:
            return time.monotonic() - started, True
        time.sleep(0.1)
    return timeout, False


def drop_backlog(store: Store, children: Children) -> None:
    """Cancel what the pipeline could not deliver (a benchmark reset between phases), then
    wait for the deliveries in flight to finish."""
    for _ in range(2):  # the reconcilers may still be recording the last changes
        with store.database.engine.begin() as conn:
            conn.execute(
                update(Delivery)
                .where(Delivery.status == "pending")
                .values(status="cancelled", last_error="benchmark: backlog dropped")
            )
        time.sleep(1.0)

    def settled() -> bool:
        children.check()
        with store.read() as session:
            open_ = session.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.status.in_(["pending", "delivering"]))
            )
        return not open_

    wait_for(settled, 60.0, "the deliveries in flight", interval=0.1)


async def receiver_ceiling(url: str, body: bytes, count: int, connections: int = 20) -> float:
    """Requests per second a bare aiohttp client gets from the receiver."""
    queue = iter(range(count))

    async def client(http: aiohttp.ClientSession) -> None:
        for _ in queue:
            async with http.post(url, data=body) as response:
                await response.read()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(connections)))
        return count / (time.perf_counter() - started)


def ready(store: Store, children: Children) -> bool:
    """Every account had a cycle since the workers started."""
    children.check()
    with store.read() as session:
        return all(at is not None for at in session.scalars(select(Account.last_cycle_at)).all())


class LockWaits:
    """Samples, every 20 ms on a connection of its own, how many sessions of the database
    wait on a lock (``pg_stat_activity.wait_event_type = 'Lock'``), and how many of them on an
    advisory lock: what writers of events wait on each other for."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.samples: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> LockWaits:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        query = text(
            "SELECT count(*), count(*) FILTER (WHERE wait_event = 'advisory')"
            " FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        )
        with self.store.database.engine.connect() as connection:
            while not self._stop.wait(0.02):
                waiting, advisory = connection.execute(query).one()
                self.samples.append((int(waiting), int(advisory)))
                connection.rollback()

    def summary(self) -> str:
        count = len(self.samples) or 1
        any_wait = sum(1 for waiting, _ in self.samples if waiting) / count
        mean = sum(waiting for waiting, _ in self.samples) / count
        advisory = sum(adv for _, adv in self.samples) / count
        return (
            f"sessions waiting on a lock: mean {mean:.2f} (advisory {advisory:.2f}), "
            f"some waiting in {any_wait:.0%} of {len(self.samples):,} samples"
        )


def run(opts: Any, reporter: Reporter, home: Path, url: str) -> None:
    per_account = 500 if opts.quick else 3_000
    seconds = 3.0 if opts.quick else 10.0
    config = settings(
        home,
        url,
        reconcile_fast_interval=INTERVAL,
        reconcile_slow_interval=INTERVAL,
        webhook_allow=["127.0.0.1"],
    )
    store = prepared_store(config)
    clouds: list[tuple[SimulatedCloud, Fleet]] = []
    for name in ("sim-a", "sim-b"):
        cloud = simulator(home / f"{name}.db")
        add_simulator_account(store, name, home / f"{name}.db", name)
        clouds.append((cloud, track_fleet(store, cloud, name, name, per_account)))
    driver = Driver(clouds)
    with Children(home / "logs") as children:
        receiver = Receiver(children)
        accounts.add_subscription(store, "http", receiver.url, {})
        for n in (1, 2):
            children.start(f"worker-{n}", [PYTHON, "-m", "cloudstate", "worker"], env_for(config))
        wait_for(lambda: ready(store, children), 60, "the workers' first cycles")
        drain(store, children, 60)
        results = phases(driver, store, receiver, children, seconds, 5.0 if opts.quick else 60.0)
        body = b'{"subject":"x","type":"instance.state_changed","data":{"instance":{}}}' * 30
        ceiling = asyncio.run(receiver_ceiling(receiver.url, body, 3_000 if opts.quick else 20_000))
    for cloud, _ in clouds:
        cloud.close()
    store.close()
    report(reporter, results, ceiling)


def phases(
    driver: Driver,
    store: Store,
    receiver: Receiver,
    children: Children,
    seconds: float,
    max_drain: float,
) -> dict[str, Any]:
    """The throughput phase, then the latency phase at half the rate. After each, the
    backlog gets ``max_drain`` seconds; what is still undelivered then is dropped (and, in
    the latency phase, counted as never delivered)."""
    rate = TARGET_RATE / EVENTS_PER_CHANGE
    receiver.reset()
    start = time.time()
    with LockWaits(store) as waits:
        busy = driver.run(rate, seconds)
    end = time.time()
    busy_drain, drained = drain(store, children, max_drain)
    busy_records = receiver.records()
    busy_commits = committed(store, start)
    if not drained:
        drop_backlog(store, children)
    receiver.reset()
    calm_start = time.time()
    calm = driver.run(rate / 2, seconds)
    _, calm_drained = drain(store, children, max_drain)
    calm_records = receiver.records()
    calm_commits = committed(store, calm_start)
    if not calm_drained:
        drop_backlog(store, children)
    return {
        "offered": len(busy) * EVENTS_PER_CHANGE / (end - start),
        "rate": sustained_rate(busy_records),
        "drain": busy_drain,
        "drained": drained,
        "busy_latencies": latencies(busy, busy_records),
        "busy_commit_latencies": latencies(busy, busy_commits),
        "calm_commit_latencies": latencies(calm, calm_commits),
        "calm_changes": calm,
        "calm_records": calm_records,
        "calm_drained": calm_drained,
        "max_drain": max_drain,
        "lock_waits": waits.summary(),
    }


def report(reporter: Reporter, results: dict[str, Any], ceiling: float) -> None:
    rate = results["rate"]
    target, ok = at_least(rate, TARGET_RATE)
    busy = results["busy_latencies"]
    drained = (
        f"backlog drained {results['drain']:.1f} s after"
        if results["drained"]
        else f"backlog not drained {results['max_drain']:g} s after (then dropped)"
    )
    reporter.report(
        "events.end_to_end_per_s",
        rate,
        "/s",
        target,
        ok,
        reference="receiver ceiling (bare aiohttp client)",
        reference_figure=ceiling,
        ratio=rate / ceiling,
        note=f"offered {results['offered']:,.0f}/s; {drained}; latency of what arrived: p50 "
        f"{median(busy):.2f} s, p99 {percentile(busy, 0.99):.2f} s, of which change → "
        f"committed event p50 {median(results['busy_commit_latencies']):.2f} s; "
        f"{results['lock_waits']}",
    )
    calm: list[Change] = results["calm_changes"]
    measured = latencies(calm, results["calm_records"])
    missing = len(calm) - len(measured)
    # a change never delivered counts as slower than any that was
    p99 = percentile(measured + [float("inf")] * missing, 0.99)
    target, ok = below(p99, TARGET_P99)
    note = f"{len(calm):,} changes at {TARGET_RATE // 2:,} events/s offered, p50 "
    note += f"{percentile(measured + [float('inf')] * missing, 0.5):.2f} s"
    if missing:
        note += f", {missing:,} not delivered within {results['max_drain']:g} s after the phase"
    commits = results["calm_commit_latencies"]
    note += f"; change → committed event p50 {median(commits):.2f} s, p99 "
    note += f"{percentile(commits, 0.99):.2f} s"
    reporter.report(
        "events.p99_latency_at_half_rate_s",
        p99,
        "s",
        target,
        ok,
        reference=f"reconcile interval {INTERVAL:g} s",
        reference_figure=INTERVAL,
        ratio=INTERVAL / p99 if p99 else None,
        note=note,
    )


def main() -> None:
    bench_main("events", __doc__ or "", run)


if __name__ == "__main__":
    main()
