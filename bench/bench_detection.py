"""Detection: how long after a change made on the provider (by someone else) its event is
committed, with fast cadence, against an ideal poller listing at the same cadence.

Setup: one ``cloudstate worker`` process, one simulator account with 1,000 running instances
(transitions are instant, no call latency), ``reconcile_fast_interval`` 1 s (the default) and
``reconcile_slow_interval`` also 1 s, so the account stays on the fast cadence even when nothing
is transitional (that is what "with fast cadence" means here; by default a steady account is
listed every 30 s and a change made behind cloudstate's back waits for that).

Measured: this process stops one instance on the simulator every 100 ms ("someone else");
the latency of each change is the committed ``instance.state_changed`` event's time minus
the change's time in the simulator's ledger (the same clock). Reference: a thread in this
process that lists the account through the bare driver every second and timestamps each state
it has not seen before: the floor any poller at this cadence can reach.

Usage: ``python bench/bench_detection.py [--quick]``
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from _common import (
    PYTHON,
    Children,
    Fleet,
    Reporter,
    add_simulator_account,
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
from sqlalchemy import select

from cloudstate.providers.simulator import SimulatedCloud, SimulatorDriver
from cloudstate.store import Store
from cloudstate.store.tables import Account, Event

TARGET_P99 = 2.0
INSTANCES = 1_000
INTERVAL = 1.0
CHANGE_EVERY = 0.1


class Poller(threading.Thread):
    """The reference: list everything every INTERVAL, note when each new state shows up."""

    def __init__(self, cloud: SimulatedCloud, namespace: str) -> None:
        super().__init__(daemon=True)
        self.driver = SimulatorDriver(cloud, namespace)
        self.stop = threading.Event()
        self.seen: dict[uuid.UUID, str] = {}
        self.detected: dict[uuid.UUID, float] = {}

    def run(self) -> None:
        planned = time.monotonic()
        while not self.stop.is_set():
            token: str | None = None
            while True:
                page = self.driver.list_page(token)
                now = time.time()
                for item in page.instances:
                    assert item.uuid is not None
                    before = self.seen.get(item.uuid)
                    if before is not None and before != item.raw_state:
                        self.detected.setdefault(item.uuid, now)
                    self.seen[item.uuid] = item.raw_state
                token = page.next_token
                if token is None:
                    break
            planned += INTERVAL
            self.stop.wait(max(0.0, planned - time.monotonic()))


def committed(store: Store, changed: set[uuid.UUID]) -> dict[uuid.UUID, float]:
    """The first state-change event time of each changed instance."""
    found: dict[uuid.UUID, float] = {}
    with store.read() as session:
        rows = session.execute(
            select(Event.instance_uuid, Event.time)
            .where(Event.type == "instance.state_changed")
            .order_by(Event.seq)
        )
        for instance_uuid, at in rows:
            if instance_uuid in changed and instance_uuid not in found:
                found[instance_uuid] = at.timestamp()
    return found


def make_changes(cloud: SimulatedCloud, fleet: Fleet, seconds: float) -> set[uuid.UUID]:
    chosen = random.sample(sorted(fleet.provider_ids), int(seconds / CHANGE_EVERY))
    planned = time.monotonic()
    for instance in chosen:
        cloud.external_stop(fleet.provider_ids[instance])
        planned += CHANGE_EVERY
        time.sleep(max(0.0, planned - time.monotonic()))
    return set(chosen)


def change_times(cloud: SimulatedCloud, fleet: Fleet) -> dict[uuid.UUID, float]:
    return {
        entry.uuid: entry.at
        for entry in cloud.ledger(fleet.namespace)
        if entry.cause == "external" and entry.uuid is not None and entry.kind == "transition"
    }


def first_cycle_done(store: Store, fleet: Fleet, children: Children) -> bool:
    children.check()
    with store.read() as session:
        return session.get_one(Account, fleet.account_id).last_cycle_at is not None


def run(opts: Any, reporter: Reporter, home: Path, url: str) -> None:
    seconds = 5.0 if opts.quick else 60.0
    config = settings(home, url, reconcile_fast_interval=INTERVAL, reconcile_slow_interval=INTERVAL)
    store = prepared_store(config)
    cloud_path = home / "cloud.db"
    cloud = simulator(cloud_path)
    add_simulator_account(store, "sim", cloud_path, "sim")
    fleet = track_fleet(store, cloud, "sim", "sim", INSTANCES)
    poller = Poller(cloud, fleet.namespace)
    with Children(home / "logs") as children:
        children.start("worker", [PYTHON, "-m", "cloudstate", "worker"], env_for(config))
        wait_for(lambda: first_cycle_done(store, fleet, children), 60, "the first cycle")
        poller.start()
        time.sleep(INTERVAL * 1.5)
        changed = make_changes(cloud, fleet, seconds)
        time.sleep(INTERVAL * 3 + 1)
        children.check()
        poller.stop.set()
        poller.join()
    when = change_times(cloud, fleet)
    events = committed(store, changed)
    latencies = [events[u] - when[u] for u in changed if u in events and u in when]
    reference = [poller.detected[u] - when[u] for u in changed if u in poller.detected]
    missing = len(changed) - len(latencies)
    store.close()
    cloud.close()
    p99, ref_p99 = percentile(latencies, 0.99), percentile(reference, 0.99)
    target, ok = below(p99, TARGET_P99, inclusive=True)
    reporter.report(
        "detection.change_to_event_p99_s",
        p99,
        "s",
        target,
        ok,
        reference=f"ideal poller every {INTERVAL:g} s",
        reference_figure=ref_p99,
        ratio=ref_p99 / p99,
        note=f"{len(changed)} changes, p50 {median(latencies):.2f} s, max {max(latencies):.2f} s"
        + (f", {missing} without an event" if missing else ""),
    )


def main() -> None:
    bench_main("detection", __doc__ or "", run)


if __name__ == "__main__":
    main()
