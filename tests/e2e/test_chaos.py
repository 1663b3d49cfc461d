"""Chaos: workers SIGKILLed at random while a faulty cloud and a flaky receiver do their worst.

Three ``cloudstate worker`` processes and one ``cloudstate api`` share a PostgreSQL database.
The simulated cloud fails 10 % of calls, throttles, lists new instances late and has instances
stopped behind cloudstate's back; the webhook receiver answers 503 one second in four; and a
killer SIGKILLs a random worker every couple of seconds and starts a new one in its place. The
fleet is launched, churned (actions and outside stops) until the kills are done, then
destroyed. Once the faults stop, the invariants are checked against the simulator's ledger,
the event log, the lease log and the receiver's log:

- zero duplicate cloud instances (one create per UUID);
- zero lost events: every steady state the cloud held while a whole reconcile cycle could
  list it is recorded as an event, and every committed event reached the receiver;
- per-instance order at the receiver;
- zero instances stuck in a transitional state (every instance ends ``terminated``, in the
  cloud too);
- no account leased by two workers at once.

``make test`` runs a short version (150 instances, 25 kills: about 75 s); the long one, 2,000
instances and 200 kills, is ``make chaos``::

    CLOUDSTATE_CHAOS_INSTANCES=2000 CLOUDSTATE_CHAOS_KILLS=200 \\
        .venv/bin/pytest tests/e2e/test_chaos.py -s

(``-s`` shows the figures it prints: instances, kills, events, deliveries, duplicates, lost,
the longest delivery delay.)
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from multiprocess_support import (
    Cluster,
    delivery_gaps,
    duplicate_creates,
    epoch,
    final_state_mismatches,
    lease_log,
    lease_overlaps,
    settled,
    steady_stays,
)
from sqlalchemy import create_engine, text

from cloudstate.client import Client
from cloudstate.client.models import Event
from cloudstate.exceptions import ProviderPermanentError
from cloudstate.store.crypto import new_key
from cloudstate.testing import SimulatedCloud, WebhookReceiver, simulated_cloud, wait_until

INSTANCES = int(os.environ.get("CLOUDSTATE_CHAOS_INSTANCES", "150"))
KILLS = int(os.environ.get("CLOUDSTATE_CHAOS_KILLS", "25"))
KILL_EVERY = float(os.environ.get("CLOUDSTATE_CHAOS_KILL_EVERY", "2.0"))
WORKERS = 3
ACCOUNTS = ("chaos-a", "chaos-b")
SETTLE_SECONDS = 180.0 + INSTANCES * 0.2
FAULTS = {
    "call_failure_rates": {"create_many": 0.1, "list_page": 0.1, "act": 0.1},
    "throttle_rate": 200.0,
    "throttle_burst": 50,
    "visibility_delay_seconds": 0.5,
    "honor_client_token": False,  # like moto: only cloudstate's own bookkeeping prevents doubles
}
SETTINGS = {
    "CLOUDSTATE_LOG_LEVEL": "ERROR",
    "CLOUDSTATE_LOG_FORMAT": "text",
    "CLOUDSTATE_RECONCILE_FAST_INTERVAL": "0.3",
    "CLOUDSTATE_RECONCILE_SLOW_INTERVAL": "2",
    "CLOUDSTATE_RECONCILE_LEASE_SECONDS": "3",  # a killed worker's accounts return quickly
    "CLOUDSTATE_LAUNCH_LEASE_SECONDS": "2",
    "CLOUDSTATE_PENDING_GRACE_SECONDS": "2",
    "CLOUDSTATE_UNREACHABLE_AFTER_FAILURES": "50",  # 10 % failures are not an outage
    "CLOUDSTATE_WEBHOOK_ALLOW": "127.0.0.1",
    "CLOUDSTATE_DELIVERY_LEASE_SECONDS": "3",
    "CLOUDSTATE_DELIVERY_TIMEOUT_SECONDS": "2",
    # Enough attempts to outlast the receiver's outages: nothing may be dead-lettered.
    "CLOUDSTATE_DELIVERY_RETRY_SCHEDULE": ",".join(["0", "0.5", "1"] + ["2"] * 40),
    "CLOUDSTATE_DELIVERY_BREAKER_COOLDOWN_SECONDS": "0.5",
    "CLOUDSTATE_DELIVERY_BREAKER_MAX_COOLDOWN_SECONDS": "2",
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.timeout(int(300 + 2 * KILLS * KILL_EVERY + 3 * SETTLE_SECONDS)),
]


@pytest.fixture
def database(postgres_url: str, tmp_path: Path) -> Iterator[str]:
    """A PostgreSQL database of the run's own, migrated by ``cloudstate db upgrade``."""
    name = f"cs_chaos_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        postgres_url.replace("postgresql://", "postgresql+psycopg://"),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = postgres_url.rsplit("/", 1)[0] + "/" + name
    try:
        Cluster(tmp_path / "migrate", url, SETTINGS).run("db", "upgrade")
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


class Flaky:
    """The receiver's answers: 503 for one second in every four, else 200."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.healthy = False  # set once the faults are over

    def __call__(self, _request: object) -> tuple[int, float]:
        if self.healthy or (time.monotonic() - self.started) % 4.0 >= 1.0:
            return 200, 0.0
        return 503, 0.0


class Killer(threading.Thread):
    """SIGKILLs a random worker every ``KILL_EVERY`` seconds and starts a new one."""

    def __init__(self, cluster: Cluster, names: list[str]) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.names = names
        self.kills = 0
        self.stop_event = threading.Event()
        self.rng = random.Random(20121124)

    def run(self) -> None:
        while self.kills < KILLS and not self.stop_event.wait(KILL_EVERY):
            victim = self.names.pop(self.rng.randrange(len(self.names)))
            self.cluster.processes[victim].kill()
            self.cluster.processes[victim].wait()
            self.kills += 1
            replacement = f"worker-r{self.kills}"
            self.cluster.start_worker(replacement)
            self.names.append(replacement)


def test_workers_killed_at_random_under_faults_lose_and_double_nothing(
    database: str, tmp_path: Path
) -> None:
    """See the module docstring: every invariant holds after the faults stop."""
    started = time.monotonic()
    flaky = Flaky()
    settings = {**SETTINGS, "CLOUDSTATE_SECRET_KEYS": new_key()}
    with (
        WebhookReceiver(respond=flaky) as receiver,
        Cluster(tmp_path, database, settings) as cluster,
        simulated_cloud(tmp_path / "sim.db", **FAULTS) as cloud,
    ):
        url = cluster.start_api("api")
        token = (cluster.home("api") / "token").read_text().strip()
        names = [f"worker-{n}" for n in range(WORKERS)]
        for name in names:
            cluster.start_worker(name)
        killer = Killer(cluster, names)
        with Client(url, token, timeout=120) as api:
            for account in ACCOUNTS:
                api.add_account(
                    account, "simulator", config={"path": str(cloud.path), "fast": True}
                )
            api.subscribe(receiver.url, description="chaos")
            killer.start()
            try:
                uuids, account_of = _workload(api, cloud, killer)
            finally:
                killer.stop_event.set()
                killer.join(30)
            # The faults stop: a healthy cloud and receiver, no more kills.
            cloud.configure(call_failure_rates={}, throttle_rate=None, visibility_delay_seconds=0)
            flaky.healthy = True
            settled(api, dict.fromkeys(uuids, "terminated"), SETTLE_SECONDS)
            events = list(api.iter_events(page_size=1000))
            _drain(api, receiver, events)
            states = {i.uuid: str(i.state) for i in api.iter_instances(page_size=1000)}
        cluster.stop(list(names))
        ledger = [entry for entry in cloud.ledger() if entry.uuid is not None]
        creates = cloud.creates_per_uuid()
    cycles = lease_log(database)

    duplicates = duplicate_creates(creates, uuids)
    stays = steady_stays(ledger, events, cycles, account_of)
    unrecorded = [str(stay) for stay in stays if stay.listed and not stay.recorded]
    gaps = delivery_gaps(events, receiver.events(), uuids)
    print(
        f"\nchaos: {len(uuids)} instances, {killer.kills} kills, {len(events)} events, "
        f"{len(receiver.requests)} deliveries received, {len(duplicates)} duplicates, "
        f"{len(unrecorded) + len(gaps)} lost, max delivery delay "
        f"{_max_delay(events, receiver):.2f} s, {time.monotonic() - started:.0f} s"
    )
    assert killer.kills == KILLS
    assert duplicates == []
    assert set(states.values()) == {"terminated"}
    assert final_state_mismatches(ledger, {u: states[u] for u in uuids}) == []
    assert unrecorded == []
    assert gaps == []
    assert lease_overlaps(cycles) == []


def _workload(
    api: Client, cloud: SimulatedCloud, killer: Killer
) -> tuple[list[UUID], dict[UUID, str]]:
    """Launch the fleet in orders of 50, churn it until the killer is done, destroy it."""
    account_of: dict[UUID, str] = {}
    for start in range(0, INSTANCES, 50):
        batch = [
            {"uuid": str(uuid.uuid4()), "account": ACCOUNTS[n % len(ACCOUNTS)]}
            for n in range(start, min(start + 50, INSTANCES))
        ]
        api.launch(image="img-basic", hardware_profile="small", instances=batch)
        account_of |= {UUID(i["uuid"]): i["account"] for i in batch}
    uuids = list(account_of)
    settled(api, dict.fromkeys(uuids, "running"), SETTLE_SECONDS)
    rng = random.Random(7)
    while killer.kills < KILLS and killer.is_alive():
        fleet = {i.uuid: i for i in api.iter_instances(page_size=1000)}
        running = [u for u in uuids if str(fleet[u].state) == "running" and not fleet[u].operation]
        stopped = [u for u in uuids if str(fleet[u].state) == "stopped" and not fleet[u].operation]
        for instance_uuid in rng.sample(running, min(len(running) // 10, 50)):
            provider_id = fleet[instance_uuid].provider_id
            if provider_id:
                # Behind cloudstate's back; the listing we chose from may be a step behind
                # the cloud (already stopping or stopped): then there is nothing to stop.
                with contextlib.suppress(ProviderPermanentError):
                    cloud.external_stop(provider_id)
        if stopped:
            api.bulk_action(rng.sample(stopped, min(len(stopped), 50)), "start")
        if running:
            api.bulk_action(rng.sample(running, min(len(running) // 10, 20)), "reboot")
        time.sleep(1.0)
    for start in range(0, len(uuids), 500):
        api.bulk_action(uuids[start : start + 500], "destroy")
    return uuids, account_of


def _drain(api: Client, receiver: WebhookReceiver, events: list[Event]) -> None:
    """Wait until every committed event (the list grows as more commit) reached the receiver."""

    def delivered() -> bool:
        events.extend(api.iter_events(events[-1].seq if events else 0, page_size=1000))
        arrived = {body["id"] for body in receiver.events()}
        return all(str(event.id) in arrived for event in events)

    wait_until(delivered, SETTLE_SECONDS, interval=1.0, what="every event delivered")


def _max_delay(events: list[Event], receiver: WebhookReceiver) -> float:
    """The longest time from an event's commit to its first arrival (wall clock)."""
    offset = time.time() - time.monotonic()
    first: dict[str, float] = {}
    for received in receiver.requests:
        first.setdefault(received.event["id"], received.at + offset)
    delays = [first[str(e.id)] - epoch(e.time) for e in events if str(e.id) in first]
    return max(delays, default=0.0)
