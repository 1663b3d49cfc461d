"""Several cloudstate processes on one PostgreSQL database and one simulated cloud.

Three ``cloudstate worker`` and two ``cloudstate api`` processes share a PostgreSQL database
(each its own home; they share only the database, the secret key and the simulator's file, as
hosts would). Instances are launched through both APIs on four simulator accounts, churned
(stopped in the cloud behind cloudstate's back, started, stopped and rebooted through the API)
and destroyed with bulk actions, while a real webhook receiver on loopback logs every
delivery. Then the end state is checked against the simulator's ledger, the event log, the
receiver's log and the reconcile lease log.

``make test`` runs it with 200 instances. The full run, 2,000 instances, is one command,
``make scale``, i.e.::

    CLOUDSTATE_MP_INSTANCES=2000 .venv/bin/pytest tests/e2e/test_multiprocess.py -s

(``-s`` shows the summary it prints.)
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from multiprocess_support import (
    Cluster,
    Cycle,
    Stay,
    delivery_gaps,
    duplicate_creates,
    final_state_mismatches,
    lease_log,
    lease_overlaps,
    settled,
    steady_stays,
    unperformed_actions,
)

from cloudstate.client import Client
from cloudstate.client.models import Event, Instance
from cloudstate.providers.simulator import LedgerEntry
from cloudstate.store.crypto import new_key
from cloudstate.testing import SimulatedCloud, WebhookReceiver, simulated_cloud, wait_until
from databases import truncate

INSTANCES = int(os.environ.get("CLOUDSTATE_MP_INSTANCES", "200"))
ACCOUNTS = ("mp-a", "mp-b", "mp-c", "mp-d")
WORKERS = ("worker-1", "worker-2", "worker-3")
APIS = ("api-1", "api-2")
PHASE_SECONDS = 120.0 + INSTANCES * 0.3  # the longest any one phase may take
BULK = 500  # instances per bulk action request
REQUEST_SECONDS = 120.0  # a bulk action on 500 instances can take over 30 s on a busy host
SETTINGS = {
    "CLOUDSTATE_LOG_LEVEL": "WARNING",
    "CLOUDSTATE_LOG_FORMAT": "text",
    "CLOUDSTATE_RECONCILE_FAST_INTERVAL": "0.3",
    "CLOUDSTATE_RECONCILE_SLOW_INTERVAL": "2",  # external stops are noticed within seconds
    "CLOUDSTATE_RECONCILE_LEASE_SECONDS": "15",
    "CLOUDSTATE_LAUNCH_LEASE_SECONDS": "15",  # a launch whose recording failed is looked up
    "CLOUDSTATE_PENDING_GRACE_SECONDS": "10",
    "CLOUDSTATE_WEBHOOK_ALLOW": "127.0.0.1",  # the receiver is on loopback
    "CLOUDSTATE_DELIVERY_RETRY_SCHEDULE": "0,0.5,1,2,2,2,2,2,2,2",
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.timeout(int(120 + 4 * PHASE_SECONDS)),
]


@pytest.fixture
def database(postgres_url: str, tmp_path: Path) -> str:
    """The session's PostgreSQL database, migrated by ``cloudstate db upgrade`` and emptied."""
    Cluster(tmp_path / "migrate", postgres_url, SETTINGS).run("db", "upgrade")
    truncate(postgres_url)
    return postgres_url


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


@dataclass
class Outcome:
    """What a run left behind, read once its workers have stopped."""

    account_of: dict[UUID, str]  # each launched instance's account
    timings: dict[str, float]  # seconds per phase
    events: list[Event]
    states: dict[UUID, str]  # each instance's final state in cloudstate
    cycles: list[Cycle]
    ledger: list[LedgerEntry]  # the cloud's record of our instances
    creates: dict[UUID, int]


def test_many_processes_launch_churn_and_destroy_without_breaking_an_invariant(
    database: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """Three workers and two APIs on one database launch, churn and destroy the fleet, and:
    each UUID became exactly one cloud instance, in its own account; cloudstate ends in the
    cloud's final state and recorded every steady state the cloud held while a whole reconcile
    cycle could list it (see ``steady_stays``), never inventing ``unknown`` or ``error``;
    every start, stop, reboot and destroy it reported completed was carried out by the cloud;
    every committed event reached the receiver at least once, in per-instance order and one
    at a time; no account was leased by two workers at once; and ``GET /v1/workers`` listed
    the three workers, alive, while they ran."""
    started = time.monotonic()
    run = _run(database, tmp_path, receiver)
    uuids = list(run.account_of)

    assert duplicate_creates(run.creates, uuids) == []
    assert [e for e in run.ledger if e.uuid and e.namespace != run.account_of[e.uuid]] == []
    assert set(run.states.values()) == {"terminated"}
    assert final_state_mismatches(run.ledger, run.states) == []
    stays = steady_stays(run.ledger, run.events, run.cycles, run.account_of)
    assert [str(stay) for stay in stays if stay.listed and not stay.recorded] == []
    assert [e for e in run.events if _state(e) in ("unknown", "error")] == []
    assert unperformed_actions(run.ledger, run.events) == {}
    assert delivery_gaps(run.events, receiver.events(), uuids) == []
    assert set(receiver.overlaps) & set(map(str, uuids)) == set()
    assert lease_overlaps(run.cycles) == []
    assert len({c.worker for c in run.cycles}) == len(WORKERS), "each worker reconciled"

    print(_summary(run, receiver, stays, time.monotonic() - started))


def _run(database: str, root: Path, receiver: WebhookReceiver) -> Outcome:
    """Start the processes, drive the fleet through its life, stop the workers, and read what
    happened from the API, the database and the cloud."""
    settings = {**SETTINGS, "CLOUDSTATE_SECRET_KEYS": new_key()}
    with Cluster(root, database, settings) as cluster, simulated_cloud(root / "sim.db") as cloud:
        first = cluster.start_api(APIS[0])
        token = (cluster.home(APIS[0]) / "token").read_text().strip()
        second = cluster.start_api(APIS[1])
        pids = {cluster.start_worker(name) for name in WORKERS}
        with (
            Client(first, token, timeout=REQUEST_SECONDS) as api1,
            Client(second, token, timeout=REQUEST_SECONDS) as api2,
        ):
            try:
                account_of, timings = _fleet(api1, api2, cloud, receiver.url, token, pids)
                clock = time.monotonic()
                events = list(api1.iter_events(page_size=1000))
                _drain(api2, receiver, events)
                timings["drain"] = time.monotonic() - clock
                states = {i.uuid: str(i.state) for i in api1.iter_instances(page_size=1000)}
            except BaseException:
                print(cluster.tails())
                raise
        cluster.stop(WORKERS)
        assert cluster.exited() == {}, cluster.tails()
        ledger = [entry for entry in cloud.ledger() if entry.uuid is not None]
        creates = cloud.creates_per_uuid()
    return Outcome(account_of, timings, events, states, lease_log(database), ledger, creates)


# --- the phases ------------------------------------------------------------------------------


def _fleet(
    api1: Client, api2: Client, cloud: SimulatedCloud, hook: str, token: str, pids: set[int]
) -> tuple[dict[UUID, str], dict[str, float]]:
    """Accounts and a subscription, then launch, churn and destroy; returns each launched
    instance's account, and how long each phase took."""
    for name in ACCOUNTS:
        api1.add_account(name, "simulator", config={"path": str(cloud.path), "fast": True})
    api2.subscribe(hook, description="multi-process test")
    wait_until(lambda: _alive(api2, token) == pids, PHASE_SECONDS, what="3 workers alive")
    timings: dict[str, float] = {}
    clock = time.monotonic()

    account_of = _launch(api1, api2)
    uuids = list(account_of)
    fleet = settled(api1, dict.fromkeys(uuids, "running"), PHASE_SECONDS)
    timings["launch"], clock = time.monotonic() - clock, time.monotonic()

    outside = uuids[::10]  # ~10 %: stopped behind cloudstate's back
    for instance_uuid in outside:
        cloud.external_stop(_provider_id(fleet[instance_uuid]))
    expected = dict.fromkeys(uuids, "running") | dict.fromkeys(outside, "stopped")
    settled(api2, expected, PHASE_SECONDS)
    assert _alive(api1, token) == pids, "the three workers are registered and alive"
    started, stopped, rebooted = outside[::2], uuids[5::20], uuids[3::20]
    _bulk(api2, started, "start", timings)
    _bulk(api1, stopped, "stop", timings)
    _bulk(api2, rebooted, "reboot", timings)
    expected |= dict.fromkeys(started, "running") | dict.fromkeys(stopped, "stopped")
    settled(api1, expected, PHASE_SECONDS)
    timings["churn"], clock = time.monotonic() - clock, time.monotonic()

    for n in range(0, len(uuids), BULK):
        _bulk((api1, api2)[n // BULK % 2], uuids[n : n + BULK], "destroy", timings)
    settled(api2, dict.fromkeys(uuids, "terminated"), PHASE_SECONDS)
    timings["destroy"] = time.monotonic() - clock
    return account_of, timings


def _launch(api1: Client, api2: Client) -> dict[UUID, str]:
    """Several orders, each spread over the four accounts, sent through both APIs at once;
    returns each instance's account."""
    instances = [
        {"uuid": str(uuid.uuid4()), "name": f"mp-{n}", "account": ACCOUNTS[n % len(ACCOUNTS)]}
        for n in range(INSTANCES)
    ]
    size = max(1, INSTANCES // max(8, INSTANCES // 100))
    orders = [instances[n : n + size] for n in range(0, len(instances), size)]

    def submit(n: int) -> None:
        api = (api1, api2)[n % 2]
        api.launch(image="img-basic", hardware_profile="small", instances=orders[n])

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(submit, range(len(orders))))
    return {UUID(i["uuid"]): i["account"] for i in instances}


def _bulk(api: Client, uuids: Sequence[UUID], action: str, timings: dict[str, float]) -> None:
    """One bulk action, every instance accepted; notes the slowest request in ``timings``."""
    clock = time.monotonic()
    result = api.bulk_action(uuids, action)
    took = time.monotonic() - clock
    assert result.refused == 0, [r for r in result.results if not r.accepted]
    timings["slowest bulk request"] = max(took, timings.get("slowest bulk request", 0.0))


def _drain(api: Client, receiver: WebhookReceiver, events: list[Event]) -> None:
    """Wait until every event committed so far has reached the receiver (``events`` grows with
    whatever is committed meanwhile)."""

    arrived: set[str] = set()
    read = 0

    def delivered() -> bool:
        nonlocal read
        events.extend(api.iter_events(events[-1].seq if events else 0, page_size=1000))
        new = receiver.requests[read:]
        read += len(new)
        arrived.update(received.event["id"] for received in new)
        return all(str(e.id) in arrived for e in events)

    wait_until(delivered, PHASE_SECONDS, interval=0.5, what="every event delivered")


# --- reading what happened -------------------------------------------------------------------


def _alive(api: Client, token: str) -> set[int]:
    """The pids of the workers ``GET /v1/workers`` lists as alive (the client has no call)."""
    headers = {"Authorization": f"Bearer {token}"}
    response = httpx.get(f"{api.url}/v1/workers", headers=headers, timeout=10)
    response.raise_for_status()
    return {worker["pid"] for worker in response.json() if worker["alive"]}


def _provider_id(instance: Instance) -> str:
    assert instance.provider_id is not None, instance
    return instance.provider_id


def _state(event: Event) -> str | None:
    instance = event.data.get("instance")
    return str(instance["state"]) if event.type == "instance.state_changed" and instance else None


def _summary(run: Outcome, receiver: WebhookReceiver, stays: Sequence[Stay], took: float) -> str:
    per_worker = Counter(cycle.worker for cycle in run.cycles)
    phases = ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in run.timings.items())
    return (
        f"\nmulti-process: {len(run.account_of)} instances on {len(ACCOUNTS)} accounts, "
        f"{len(WORKERS)} workers, {len(APIS)} APIs in {took:.1f} s ({phases}); "
        f"{len(run.events)} events, {len(receiver.requests)} deliveries received; "
        f"{len(stays)} steady states in the ledger, {sum(s.listed for s in stays)} listed by a "
        f"whole reconcile cycle, {sum(s.recorded for s in stays)} recorded; "
        f"{len(run.cycles)} cycles ({', '.join(map(str, sorted(per_worker.values())))} "
        "per worker)"
    )
