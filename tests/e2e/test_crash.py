"""Crash safety: a worker process killed with SIGKILL mid-launch or mid-delivery, then restarted.

The cloud is the simulator with ``honor_client_token=False`` (like moto): nothing but
cloudstate's own bookkeeping stands between a crash and a duplicate instance. A real webhook
receiver on loopback logs every delivery, so "every event at least once, in order" is checked
against what actually arrived over HTTP.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from server import burst_worker

from cloudstate.embedded import CloudState
from cloudstate.service.accounts import add_subscription
from cloudstate.testing import WebhookReceiver, simulated_cloud

pytestmark = pytest.mark.slow

INSTANCES = 8
ENVIRONMENT = {
    "CLOUDSTATE_SIMULATOR_FAST": "true",
    "CLOUDSTATE_PENDING_GRACE_SECONDS": "0.5",
    "CLOUDSTATE_LAUNCH_LEASE_SECONDS": "1",
    "CLOUDSTATE_DELIVERY_LEASE_SECONDS": "1",
    "CLOUDSTATE_DELIVERY_TIMEOUT_SECONDS": "0.5",
    "CLOUDSTATE_DELIVERY_RETRY_SCHEDULE": "0,0.2,0.5,1,1,1,1,1,1,1",
    "CLOUDSTATE_RECONCILE_FAST_INTERVAL": "0.2",
    "CLOUDSTATE_LOG_LEVEL": "WARNING",
    "CLOUDSTATE_WEBHOOK_ALLOW": "127.0.0.1",  # the receiver is on loopback
}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


def _prepare(home: Path, hook: str) -> list[uuid.UUID]:
    """An order and a webhook subscription, written before any worker runs."""
    home.mkdir()
    cloud = simulated_cloud(home / "simulator.db", honor_client_token=False)
    cloud.close()
    uuids = [uuid.uuid4() for _ in range(INSTANCES)]
    with CloudState(home=home, simulator_fast=True) as cs:
        add_subscription(cs.store, "http", hook, {})
        cs.launch(
            image="img-basic",
            hardware_profile="small",
            instances=[{"uuid": str(u)} for u in uuids],
        )
    return uuids


@pytest.mark.parametrize(
    ("failpoint", "created_before_restart"),
    [
        ("launch.before_create", 0),  # the create was never sent
        ("launch.after_create", INSTANCES),  # sent and done, but never recorded
        ("deliver.after_send", INSTANCES),  # webhooks sent, never acknowledged
    ],
)
def test_a_killed_worker_loses_and_duplicates_nothing(
    tmp_path: Path, receiver: WebhookReceiver, failpoint: str, created_before_restart: int
) -> None:
    """Killed at the failpoint and restarted: one cloud instance per UUID, all running, and
    every committed event reached the receiver at least once, in per-instance order."""
    home = tmp_path / "home"
    uuids = _prepare(home, receiver.url)

    crashed = burst_worker(home, ENVIRONMENT, failpoint)
    assert crashed.returncode == -9, crashed.stderr  # really died at the failpoint
    cloud = simulated_cloud(home / "simulator.db", honor_client_token=False)
    assert sum(cloud.creates_per_uuid("simulator").values()) == created_before_restart
    cloud.close()
    finished = burst_worker(home, ENVIRONMENT, None)
    assert finished.returncode == 0, finished.stderr

    cloud = simulated_cloud(home / "simulator.db", honor_client_token=False)
    creates = cloud.creates_per_uuid("simulator")
    cloud.close()
    assert {u: creates.get(u, 0) for u in uuids} == dict.fromkeys(uuids, 1)

    with CloudState(home=home, simulator_fast=True) as cs:
        assert {str(cs.get(u).state) for u in uuids} == {"running"}
        committed = [e for e in cs.events(limit=1000) if e.instance_uuid in set(uuids)]

    arrived: dict[str, list[int]] = {}
    for body in receiver.events():
        arrived.setdefault(body["subject"], []).append(body["data"]["sequence"])
    for instance_uuid in uuids:
        expected = [e.instance_seq for e in committed if e.instance_uuid == instance_uuid]
        got = arrived.get(str(instance_uuid), [])
        assert sorted(set(got)) == expected, f"{instance_uuid}: lost events"
        assert got == sorted(got), f"{instance_uuid}: out of order {got}"
