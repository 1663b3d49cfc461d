"""Only the owner judges its work, under any interleaving: a stateful test against the simulator.

Hypothesis interleaves launching orders (``partial`` and ``all_or_nothing``, some with an image
no cloud has, so that orders roll back; some with a launch timeout shorter than a slow boot),
the simulator's visibility delay and boot time, single ticks of the engine's tasks (launcher,
reconciler, executor, order supervisor) in any order, rounds of a second worker (the facade's
own engine), actions and cancels through the ``CloudState`` facade, outside changes made on
the cloud's console, and worker restarts (new tasks with a new worker id; the ``CloudState``
closed and reopened on the same home). Time passes by sleeping, in steps longer than the
cloud's transitions, so what a step sees depends on the interleaving, not on the machine's load.

After every step, cloudstate's record is checked against what the simulated cloud really did
(``SimulatedCloud.instances()``, its god's view, and ``SimulatedCloud.ledger()``):

1. **Terminated means terminated.** An instance cloudstate holds ``terminated`` is, in the
   cloud, ``terminated`` or gone (never pending, running, stopping, stopped, rebooting or
   shutting down); no live instance carries its UUID tag; and each ``terminated`` it recorded
   for a provider instance came after the ledger's ``terminated`` transition of that instance.
2. **No invented states.** Every state cloudstate recorded for a provider instance in an
   ``instance.state_changed`` event, other than ``unknown`` and ``error`` (cloudstate's own
   verdicts, which no cloud reports), is one the ledger shows that instance in (its
   ``create`` entry or a ``transition``), from before the event. No exception is made for
   the transitional states recorded when the provider accepts an action (``stopping``,
   ``pending`` after a start, ``rebooting``, ``shutting_down``): the simulator enters them
   when it accepts the call, so its ledger holds them before cloudstate records them.

``CLOUDSTATE_STATEFUL_EXAMPLES`` (default 8) and ``CLOUDSTATE_STATEFUL_STEPS`` (default 30)
set how many interleavings are tried and how long each is.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)
from sqlalchemy import select

from cloudstate.domain.events import EventType
from cloudstate.domain.states import Action, InstanceState
from cloudstate.embedded import CloudState
from cloudstate.engine import Engine
from cloudstate.engine.loop import Task
from cloudstate.exceptions import ActionNotAllowedError, ConflictError, ProviderError
from cloudstate.providers.base import normalize_state
from cloudstate.providers.simulator import catalogue
from cloudstate.providers.simulator.lifecycle import LedgerEntry
from cloudstate.store.tables import Instance
from cloudstate.testing import simulated_cloud

# Wall-clock time passes; a failure's shrinking may take hypothesis' own five minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

EXAMPLES = int(os.environ.get("CLOUDSTATE_STATEFUL_EXAMPLES", "8"))
STEPS = int(os.environ.get("CLOUDSTATE_STATEFUL_STEPS", "30"))

ACCOUNT = "simulator"  # the embedded default account, one namespace of the simulated cloud
BAD_IMAGE = "no-such-image-anywhere"  # the simulator refuses it: a permanent launch failure
TASKS = ("launcher", "reconciler", "executor", "orders")
# Time scales: an engine step takes some milliseconds, a cloud transition at least 0.3 s, and
# a sleep longer than any transition. Which side of a transition a step falls on then depends
# on the interleaving far more than on the machine's load, so a failing interleaving replays
# (and shrinks) as itself.
ENGINE_SETTINGS: dict[str, Any] = {
    "simulator_fast": True,
    "pending_grace_seconds": 1.0,  # at least the longest visibility delay drawn below
    # Every reconciler tick runs a cycle: which cycles happen is up to the interleaving.
    "reconcile_fast_interval": 0.001,
    "reconcile_slow_interval": 0.001,
}
CLOUD_KNOBS: dict[str, Any] = {
    "stop_seconds": 0.3,
    "reboot_seconds": 0.3,
    "shutdown_seconds": 0.3,
    "terminated_retention_seconds": 0.6,  # then "no such instance"
}
VISIBILITY_DELAYS = (0.0, 0.6)
BOOT_SECONDS = (0.3, 1.5)  # 1.5 s misses an order's one-second launch timeout
SLEEPS = (0.7, 1.2)  # past any one transition; past the grace and a launch timeout
NOT_CLOUD_STATES = frozenset({InstanceState.UNKNOWN, InstanceState.ERROR})
"""Recorded states that are cloudstate's own verdicts, not something a cloud reports."""
CLOCK_SLACK = 0.001  # seconds: a ledger time and an event time are read from the same clock


ORDERS = st.fixed_dictionaries(
    {
        "policy": st.sampled_from(["partial", "all_or_nothing"]),
        "good": st.integers(min_value=1, max_value=3),
        "bad": st.integers(min_value=0, max_value=1),  # with the image no cloud has
        "launch_timeout": st.sampled_from([None, None, 1]),  # 1 s: a slow boot misses it
    }
)
"""The shape of a launch order (its UUIDs are made fresh when it is accepted)."""


def _held(entry: LedgerEntry) -> InstanceState | None:
    """The normalized state a ledger entry put its instance in (None: not an instance's)."""
    if entry.kind not in ("create", "transition") or entry.provider_id is None:
        return None
    return normalize_state(entry.to_state, catalogue.STATE_MAP)


class OwnerJudges(RuleBasedStateMachine):
    """One cloudstate home and one simulated cloud per example; see the module docstring."""

    instances = Bundle("instances")

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="owner-judges-"))
        self.home = self.root / "home"
        self.cs = CloudState(home=self.home, **ENGINE_SETTINGS)
        self.cloud = simulated_cloud(self.cs.settings.simulator_path, **CLOUD_KNOBS)
        self.restarts = 0
        self.worker = self._new_worker()
        self.orders: list[uuid.UUID] = []
        self.checked_seq = 0  # events up to here have passed invariant 2

    # --- plumbing ----------------------------------------------------------------------------

    def _new_worker(self) -> Engine:
        """Tasks built as ``CloudState`` builds them (one ``Engine``), with a fresh worker id."""
        self.restarts += 1
        return Engine(self.cs.store, self.cs.settings, worker_id=f"stateful-{self.restarts}")

    def _task(self, name: str) -> Task:
        return next(task for task in self.worker.tasks if task.name == name)

    def teardown(self) -> None:
        """Close the worker, the ``CloudState`` and the cloud, and remove the home."""
        self.worker.close()
        self.cs.close()
        self.cloud.close()
        shutil.rmtree(self.root, ignore_errors=True)

    # --- the world ---------------------------------------------------------------------------

    @initialize(
        target=instances,
        delay=st.sampled_from(VISIBILITY_DELAYS),
        boot=st.sampled_from(BOOT_SECONDS),
        order=ORDERS,
    )
    def start(self, delay: float, boot: float, order: dict[str, Any]) -> Any:
        """The cloud begins with some visibility delay and boot time, and a first order is
        accepted (so every interleaving has instances to act on)."""
        self.cloud.configure(visibility_delay_seconds=delay, boot_seconds=boot)
        return self._launch(order)

    @rule(delay=st.sampled_from(VISIBILITY_DELAYS), boot=st.sampled_from(BOOT_SECONDS))
    def reconfigure_cloud(self, delay: float, boot: float) -> None:
        """New instances may become visible later (or sooner) and boot slower (or faster) from
        now on: no verdict may rest on a timing the cloud does not promise."""
        self.cloud.configure(visibility_delay_seconds=delay, boot_seconds=boot)

    @rule(seconds=st.sampled_from(SLEEPS))
    def time_passes(self, seconds: float) -> None:
        """The cloud moves on its own (boots, stops, terminations, visibility) between ticks."""
        time.sleep(seconds)

    @rule(target=instances, order=ORDERS)
    def launch(self, order: dict[str, Any]) -> Any:
        """An order is accepted; a bad image makes an ``all_or_nothing`` order roll back, and a
        launch timeout shorter than the boot time fails (and destroys) what is still pending."""
        return self._launch(order)

    def _launch(self, shape: dict[str, Any]) -> Any:
        items: list[dict[str, Any]] = [{"uuid": str(uuid.uuid4())} for _ in range(shape["good"])]
        items += [{"uuid": str(uuid.uuid4()), "image": BAD_IMAGE} for _ in range(shape["bad"])]
        order = {
            "image": "img-basic",
            "hardware_profile": "small",
            "policy": shape["policy"],
            "instances": items,
        }
        if shape["launch_timeout"] is not None:
            order["launch_timeout"] = shape["launch_timeout"]
        view = self.cs.launch(order)
        self.orders.append(view.id)
        return multiple(*(uuid.UUID(item["uuid"]) for item in items))

    @precondition(lambda self: bool(self.orders))
    @rule(pick=st.integers(min_value=0, max_value=63))
    def cancel(self, pick: int) -> None:
        """An order is cancelled, maybe mid-launch: a rollback the order supervisor pushes."""
        with contextlib.suppress(ConflictError):
            self.cs.cancel(self.orders[pick % len(self.orders)])

    @rule(
        instance=instances,
        action=st.sampled_from([Action.STOP, Action.START, Action.REBOOT, Action.DESTROY]),
    )
    def act(self, instance: uuid.UUID, action: Action) -> None:
        """A caller asks for an action through the facade (refused ones change nothing)."""
        with contextlib.suppress(ActionNotAllowedError):
            self.cs.action(instance, action)

    @rule(
        change=st.sampled_from(["stop", "terminate", "start", "reboot"]),
        pick=st.integers(min_value=0, max_value=63),
    )
    def outside_change(self, change: str, pick: int) -> None:
        """Someone else stops, terminates, starts or reboots one of the cloud's instances (the
        cloud refuses what the instance's state does not allow)."""
        ours = [i for i in self.cloud.instances(ACCOUNT) if i.raw_state != catalogue.TERMINATED]
        if not ours:
            return
        target = ours[pick % len(ours)].provider_id
        with contextlib.suppress(ProviderError):
            getattr(self.cloud, f"external_{change}")(target)

    # --- the engine --------------------------------------------------------------------------

    @rule(task=st.sampled_from(TASKS))
    def tick(self, task: str) -> None:
        """One step of one task, in whatever order: each owner's verdict must hold no matter
        what the others did (or did not do) in between."""
        self._task(task).tick()

    @rule()
    def other_worker(self) -> None:
        """The facade's own engine (another worker, as far as the store is concerned) does one
        round: each of its tasks ticks once, in the order its burst loop ticks them. A round,
        not a timed burst, so that what it does depends on the interleaving alone."""
        for task in self.cs.engine.tasks:
            task.tick()

    @rule()
    def restart_worker(self) -> None:
        """The worker dies between ticks: its tasks are dropped and new ones, under a new
        worker id, take over from what the store says (leases, operations, launches)."""
        self.worker.close()
        self.worker = self._new_worker()

    @rule()
    def reopen(self) -> None:
        """The whole process restarts: the ``CloudState`` is closed and reopened on the same
        home, and a new worker is built on it."""
        self.worker.close()
        self.cs.close()
        self.cs = CloudState(home=self.home, **ENGINE_SETTINGS)
        self.worker = self._new_worker()

    # --- what must hold ----------------------------------------------------------------------

    @invariant()
    def terminated_means_terminated_in_the_cloud(self) -> None:
        """Invariant 1: cloudstate's ``terminated`` is never ahead of the cloud: the provider
        instance is terminated or gone, and no live instance carries the UUID. (That each
        recorded ``terminated`` came after the ledger's is checked with invariant 2.)"""
        with self.cs.store.read() as session:
            rows = session.execute(
                select(Instance.uuid, Instance.provider_id).where(
                    Instance.state == InstanceState.TERMINATED
                )
            ).all()
        cloud = self.cloud.instances(ACCOUNT)  # read after the store: the cloud only moves on
        by_id = {i.provider_id: i for i in cloud}
        live_uuids = {i.uuid: i for i in cloud if i.state is not InstanceState.TERMINATED}
        for instance_uuid, provider_id in rows:
            held = by_id.get(provider_id) if provider_id else None
            assert held is None or held.state is InstanceState.TERMINATED, (
                f"{instance_uuid} recorded terminated; the cloud holds {provider_id} {held.state}"
            )
            alive = live_uuids.get(instance_uuid)
            assert alive is None, (
                f"{instance_uuid} recorded terminated (provider id {provider_id}); the cloud "
                f"holds {alive.provider_id} with that UUID {alive.state}"
            )

    @invariant()
    def recorded_states_were_held_by_the_cloud(self) -> None:
        """Invariant 2 (and the event half of 1): every state recorded for a provider
        instance, but ``unknown`` and ``error``, is one the ledger showed that instance in
        before the event was committed."""
        held: dict[str, list[tuple[InstanceState, float]]] = {}
        for entry in self.cloud.ledger(ACCOUNT):
            state = _held(entry)
            if state is not None and entry.provider_id is not None:
                held.setdefault(entry.provider_id, []).append((state, entry.at))
        for event in self._new_state_changes():
            instance = event.data["instance"]
            provider_id, state = instance["provider_id"], InstanceState(instance["state"])
            if provider_id is None or state in NOT_CLOUD_STATES:
                continue
            before = event.time.timestamp() + CLOCK_SLACK
            history = held.get(provider_id, [])
            assert any(seen == state and at <= before for seen, at in history), (
                f"event {event.seq}: {instance['uuid']} recorded {state} "
                f"(reason {event.data.get('reason')!r}, from {event.data.get('previous_state')})"
                f" at {event.time.isoformat()}; the ledger shows {provider_id} in "
                f"{[(str(s), round(at - before, 3)) for s, at in history]} "
                "(seconds relative to the event)"
            )

    def _new_state_changes(self) -> list[Any]:
        """``instance.state_changed`` events committed since the last check."""
        found = []
        while page := self.cs.events(after=self.checked_seq, limit=500):
            found += [e for e in page if e.type == EventType.INSTANCE_STATE_CHANGED]
            self.checked_seq = page[-1].seq
        return found


OwnerJudges.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    database=None,  # nothing written into the working tree; a failure prints its steps
    # Not the explain phase: it traces every line, and a step that runs ten times slower
    # lets the cloud's clock run past transitions the failing run did not reach.
    phases=[Phase.explicit, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow],
)
TestOwnerJudges = OwnerJudges.TestCase
