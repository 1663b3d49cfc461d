"""Infrastructure faults while work is in flight: the database restarting under a running
engine, the provider unreachable for a while, a webhook receiver down past the retry schedule.

The database restart is real for every client: each connection to the test's own PostgreSQL
database is terminated and new ones are refused for a few seconds (``ALLOW_CONNECTIONS false``),
which is what a server restart looks like from the service, without disturbing the other
databases on the shared server.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from cloudstate.domain.events import EventType
from cloudstate.domain.states import InstanceState
from cloudstate.embedded import CloudState
from cloudstate.service.accounts import add_subscription
from cloudstate.service.deliveries import list_deliveries, replay
from cloudstate.store import Database
from cloudstate.testing import WebhookReceiver, simulated_cloud, wait_until

pytestmark = pytest.mark.slow

FAST = {
    "simulator_fast": True,
    "webhook_allow": ["127.0.0.1"],
    "reconcile_fast_interval": 0.2,
    "pending_grace_seconds": 0.5,
    "launch_lease_seconds": 2,
    "delivery_lease_seconds": 3,
    "delivery_timeout_seconds": 2,
    "delivery_retry_schedule": "0,0.2,0.5,1,1,1,1,1,1,1,1,1,1,1,1",
}


@pytest.fixture
def database(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL database of the test's own, which it may take down."""
    name = f"cs_faults_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        postgres_url.replace("postgresql://", "postgresql+psycopg://"),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield postgres_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def _restart(url: str, down_seconds: float) -> None:
    """Drop every connection to the database and refuse new ones for ``down_seconds``."""
    base, name = url.rsplit("/", 1)
    admin = create_engine(
        (base + "/postgres").replace("postgresql://", "postgresql+psycopg://"),
        isolation_level="AUTOCOMMIT",
    )
    try:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
        time.sleep(down_seconds)
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
    finally:
        admin.dispose()


@pytest.mark.postgres
def test_a_database_restart_mid_run_loses_nothing_and_needs_no_restart(
    tmp_path: Path, database: str
) -> None:
    """40 instances launching and their webhooks going out when the database goes away for
    3 s: the same engine, never restarted, finishes the work once the database is back:
    every instance running, one cloud instance per UUID, every committed event received by
    the webhook receiver at least once, in order per instance."""
    home = tmp_path / "home"
    home.mkdir()
    schema = Database(database)
    schema.upgrade()
    schema.dispose()
    cloud = simulated_cloud(home / "simulator.db", honor_client_token=False, boot_seconds=1.0)
    with WebhookReceiver() as receiver, CloudState(home=home, database_url=database, **FAST) as cs:
        add_subscription(cs.store, "http", receiver.url, {})
        uuids = [uuid.uuid4() for _ in range(40)]
        cs.start()
        threads_before = {t.name for t in threading.enumerate() if t.name.startswith("cloudstate")}
        cs.launch(
            image="img-basic", hardware_profile="small", instances=[{"uuid": str(u)} for u in uuids]
        )
        wait_until(lambda: bool(cloud.creates_per_uuid("simulator")), timeout=20, what="creates")

        _restart(database, down_seconds=3.0)

        wait_until(
            lambda: {cs.get(u).state for u in uuids} == {InstanceState.RUNNING},
            timeout=60,
            what="every instance running after the restart",
        )
        committed = _instance_events(cs, set(uuids))
        wait_until(
            lambda: _received(receiver) >= {(e.instance_uuid, e.instance_seq) for e in committed},
            timeout=60,
            what="every committed event at the receiver",
        )
        threads_after = {t.name for t in threading.enumerate() if t.name.startswith("cloudstate")}
    assert threads_before <= threads_after  # the same engine threads carried on
    assert cloud.creates_per_uuid("simulator") == dict.fromkeys(uuids, 1)
    cloud.close()
    for instance_uuid in uuids:
        got = [seq for subject, seq in receiver_order(receiver) if subject == instance_uuid]
        assert got == sorted(got), f"{instance_uuid}: out of order {got}"


def _instance_events(cs: CloudState, uuids: set[uuid.UUID]) -> list[object]:
    found = []
    after = 0
    while page := cs.events(after=after, limit=1000):
        found += [e for e in page if e.instance_uuid in uuids]
        after = page[-1].seq
    return found


def _received(receiver: WebhookReceiver) -> set[tuple[uuid.UUID, int]]:
    return set(receiver_order(receiver))


def receiver_order(receiver: WebhookReceiver) -> list[tuple[uuid.UUID, int]]:
    return [
        (uuid.UUID(body["subject"]), int(body["data"]["sequence"]))
        for body in receiver.events()
        if body["type"].startswith("instance.")
    ]


def test_an_unreachable_provider_makes_instances_unknown_then_right_again(tmp_path: Path) -> None:
    """The provider stops answering for a while: after the configured failures the running
    instances are ``unknown`` (reason provider_unreachable), never an invented ``stopped`` or
    ``terminated``; when it answers again they are ``running`` again, and the only states
    recorded in between are those."""
    home = tmp_path / "home"
    settings = {**FAST, "reconcile_slow_interval": 0.5}  # steady instances: look often anyway
    with CloudState(home=home, unreachable_after_failures=2, **settings) as cs:
        cloud = simulated_cloud(cs.settings.simulator_path)
        try:
            uuids = [uuid.uuid4() for _ in range(5)]
            cs.launch(
                image="img-basic",
                hardware_profile="small",
                instances=[{"uuid": str(u)} for u in uuids],
            )
            assert cs.burst(timeout=60)
            cs.start()
            cloud.configure(unreachable=True)
            wait_until(
                lambda: {cs.get(u).state for u in uuids} == {InstanceState.UNKNOWN},
                timeout=30,
                what="unknown while unreachable",
            )
            assert {cs.get(u).state_reason for u in uuids} == {"provider_unreachable"}
            cloud.configure(unreachable=False)
            wait_until(
                lambda: {cs.get(u).state for u in uuids} == {InstanceState.RUNNING},
                timeout=30,
                what="running again",
            )
        finally:
            cs.close()
            cloud.close()
        seen = {
            e.data["instance"]["state"]
            for e in cs.events(limit=1000)
            if e.type == EventType.INSTANCE_STATE_CHANGED and e.instance_uuid in set(uuids)
        }
    assert seen <= {"pending", "running", "unknown"}


def test_a_receiver_down_past_the_retry_schedule_dead_letters_then_replay_delivers_all(
    tmp_path: Path,
) -> None:
    """A receiver answering 503 to everything until the schedule runs out: every delivery
    is dead-lettered; once it is back, a replay from cursor 0 delivers every event."""
    home = tmp_path / "home"
    settings = {
        **FAST,
        "delivery_retry_schedule": "0,0.1,0.1",
        # Not the breaker's test (test_delivery_isolation has those): let every attempt go.
        "delivery_breaker_threshold": 10_000,
    }
    with (
        WebhookReceiver(respond=lambda _request: (503, 0.0)) as receiver,
        CloudState(home=home, **settings) as cs,
    ):
        subscription = add_subscription(cs.store, "http", receiver.url, {})
        instances = [{"uuid": str(uuid.uuid4())} for _ in range(5)]
        cs.launch(image="img-basic", hardware_profile="small", instances=instances)
        cs.start()
        wait_until(
            lambda: {cs.get(i["uuid"]).state for i in instances} == {InstanceState.RUNNING},
            timeout=30,
            what="the instances running",
        )
        wait_until(lambda: _statuses(cs, subscription.id) == {"dead"}, timeout=30, what="all dead")
        committed = {e.seq for e in cs.events(limit=1000)}

        receiver.respond = lambda _request: (200, 0.0)
        result = replay(cs.store, subscription.id, after=0)
        assert result.queued == len(committed)
        cs.engine.wake()
        wait_until(
            lambda: _statuses(cs, subscription.id) == {"delivered"},
            timeout=30,
            what="all delivered after the replay",
        )
        delivered = {body["data"]["cursor"] for body in receiver.events()}
        cs.close()
    assert delivered >= committed


def _statuses(cs: CloudState, subscription_id: uuid.UUID) -> set[str]:
    return {d.status for d in list_deliveries(cs.store, subscription_id, limit=1000).items}
