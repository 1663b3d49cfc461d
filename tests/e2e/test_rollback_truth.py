"""A rollback that says ``rolled_back`` has destroyed everything it launched, every time.

The scenario an outside tester found: an ``all_or_nothing`` order of four good instances and
one with an image no cloud has, on the *default* simulator (a new instance is absent from
listings for a second). The destroys the rollback queues fall inside that window, so a
reconcile cycle that does not list the instances must not take them as gone: only the
executor, which sent (or has yet to send) each destroy, judges it, on the provider's evidence.

``CLOUDSTATE_ROLLBACK_RUNS`` sets how many runs in a row (``make rollback`` runs 50).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from cloudstate.embedded import CloudState
from cloudstate.providers.simulator import SimulatedCloud
from cloudstate.service.queries import get_order
from cloudstate.testing import simulated_cloud, wait_until

ACCOUNT = "simulator"
RUNS = int(os.environ.get("CLOUDSTATE_ROLLBACK_RUNS", "3"))
ALIVE = {"pending", "running", "stopping", "stopped", "rebooting"}


def _one_run(home: Path) -> str:
    """One rollback, in a fresh home; returns what went wrong ('' when nothing did)."""
    good = [{"uuid": str(uuid.uuid4())} for _ in range(4)]
    bad = {"uuid": str(uuid.uuid4()), "image": "no-such-image-anywhere"}
    order = {
        "image": "img-basic",
        "hardware_profile": "small",
        "policy": "all_or_nothing",
        "instances": [*good, bad],
    }
    with CloudState(home=home) as cs:  # the default simulator: visibility delay 1 s
        view = cs.launch(order)
        cs.start()
        final = wait_until(
            lambda: (o := get_order(cs.store, view.id)).state in ("rolled_back", "failed") and o,
            timeout=60,
            what="the order to finish",
        )
        cloud = simulated_cloud(cs.settings.simulator_path, fast=False)
        try:
            return _judged(final.state, {str(i.uuid): str(i.state) for i in final.instances}, cloud)
        finally:
            cloud.close()


def _judged(state: str, recorded: dict[str, str], cloud: SimulatedCloud) -> str:
    if state != "rolled_back":
        return f"order ended {state}"
    alive = [i for i in cloud.instances(ACCOUNT) if i.state in ALIVE]
    if alive:
        return f"{len(alive)} instance(s) alive in the cloud after rolled_back: {alive}"
    destroyed = {
        entry.provider_id
        for entry in cloud.ledger(ACCOUNT)
        if entry.kind == "transition" and entry.cause == "action:destroy"
    }
    created = [e for e in cloud.ledger(ACCOUNT) if e.kind == "create"]
    unsent = [e.uuid for e in created if e.provider_id not in destroyed]
    if unsent:
        return f"terminated recorded for {unsent} without a destroy reaching the cloud"
    if set(recorded.values()) != {"terminated"}:
        return f"instances recorded {recorded}"
    return ""


@pytest.mark.timeout(max(300, RUNS * 20))
def test_a_rolled_back_order_leaves_nothing_alive_run_after_run(tmp_path: Path) -> None:
    """Run after run, the order ends ``rolled_back`` only once every instance the cloud
    created has had its destroy sent and taken (the ledger shows ``action:destroy``) and
    none is still alive; no run may fail."""
    failures = [
        f"run {run}: {problem}"
        for run in range(RUNS)
        if (problem := _one_run(tmp_path / f"run{run}"))
    ]
    print(f"rollback: {RUNS} runs, {len(failures)} failed")
    assert not failures, "\n".join(failures)
