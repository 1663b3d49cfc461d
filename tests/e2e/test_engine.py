"""The engine end to end: an embedded ``CloudState`` (SQLite) on the simulated cloud.

Every test drives the real engine (``burst()``, ``start()``, or the reconciler's own ``tick``)
against the very simulator file the default ``simulator`` account uses, and checks what
cloudstate reports against what the cloud's ledger says really happened.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from cloudstate.domain.events import EventRecord, EventType
from cloudstate.domain.states import InstanceState, UnknownReason
from cloudstate.embedded import CloudState
from cloudstate.engine.loop import run_burst
from cloudstate.engine.reconciler import Reconciler
from cloudstate.exceptions import (
    ActionNotAllowedError,
    AlreadyExistsError,
    ConflictError,
    HardwareProfileError,
    NotFoundError,
    ValidationError,
)
from cloudstate.providers.simulator import SimulatedCloud
from cloudstate.store.tables import (
    Account,
    Delivery,
    Event,
    Instance,
    OperationRow,
    Order,
    utcnow,
)
from cloudstate.testing import simulated_cloud, wait_until

ACCOUNT = "simulator"  # the embedded default account, and its namespace in the simulator
RUNNING, STOPPED, ERROR = InstanceState.RUNNING, InstanceState.STOPPED, InstanceState.ERROR
STATE_CHANGED = str(EventType.INSTANCE_STATE_CHANGED)


# --- helpers ---------------------------------------------------------------------------------


class Recorder:
    """A subscriber callable that keeps every event it is handed, with the time it arrived."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: list[tuple[float, EventRecord]] = []

    def __call__(self, event: EventRecord) -> None:
        with self._lock:
            self._received.append((time.time(), event))

    @property
    def events(self) -> list[EventRecord]:
        with self._lock:
            return [event for _, event in self._received]

    def arrival(self, predicate: Callable[[EventRecord], bool]) -> float | None:
        """When the first event matching ``predicate`` arrived (None: not yet)."""
        with self._lock:
            return next((at for at, event in self._received if predicate(event)), None)


@pytest.fixture
def open_cloudstate(tmp_path: Path) -> Iterator[Callable[..., CloudState]]:
    """``open_cloudstate(**settings)``: a ``CloudState`` in a fresh home, closed after the test."""
    opened: list[CloudState] = []

    def factory(**settings: Any) -> CloudState:
        cs = CloudState(home=tmp_path / f"home{len(opened)}", simulator_fast=True, **settings)
        opened.append(cs)
        return cs

    yield factory
    for cs in reversed(opened):
        cs.close()


@pytest.fixture
def open_cloud() -> Iterator[Callable[..., SimulatedCloud]]:
    """``open_cloud(cs, **knobs)``: the simulated cloud behind ``cs``'s default account."""
    opened: list[SimulatedCloud] = []

    def factory(cs: CloudState, **knobs: Any) -> SimulatedCloud:
        cloud = simulated_cloud(cs.settings.simulator_path, **knobs)
        opened.append(cloud)
        return cloud

    yield factory
    for cloud in opened:
        cloud.close()


def new_uuids(count: int) -> list[uuid.UUID]:
    return [uuid.uuid4() for _ in range(count)]


def launch(cs: CloudState, uuids: list[uuid.UUID], **fields: Any) -> None:
    """One order for ``uuids`` on the default account (basic image, small profile)."""
    order = {"image": "img-basic", "hardware_profile": "small", **fields}
    cs.launch(order, instances=[{"uuid": str(u)} for u in uuids])


def all_events(cs: CloudState, after: int = 0) -> list[EventRecord]:
    """Every committed event after the cursor ``after``, oldest first."""
    found: list[EventRecord] = []
    while page := cs.events(after=after, limit=1000):
        found += page
        after = page[-1].seq
    return found


def by_instance(events: list[EventRecord]) -> dict[uuid.UUID, list[EventRecord]]:
    grouped: dict[uuid.UUID, list[EventRecord]] = defaultdict(list)
    for event in events:
        if event.instance_uuid is not None:
            grouped[event.instance_uuid].append(event)
    return grouped


def new_state(event: EventRecord) -> str:
    """The state an ``instance.state_changed`` event moved its instance to."""
    state: str = event.data["instance"]["state"]
    return state


def state_path(events: list[EventRecord]) -> list[str]:
    """The states an instance's ``state_changed`` events went through, in order."""
    return [new_state(e) for e in events if e.type == STATE_CHANGED]


def row_counts(cs: CloudState) -> dict[str, int]:
    """How many rows each table a request could write to holds now."""
    tables = {
        "events": Event,
        "instances": Instance,
        "orders": Order,
        "operations": OperationRow,
        "deliveries": Delivery,
    }
    with cs.store.read() as session:
        return {
            name: session.scalar(select(func.count()).select_from(table)) or 0
            for name, table in tables.items()
        }


def reconciler(cs: CloudState) -> Reconciler:
    """The engine's own reconciler task, to drive cycles one at a time."""
    return next(task for task in cs.engine.tasks if isinstance(task, Reconciler))


def cycle(cs: CloudState, times: int = 1) -> None:
    """Run ``times`` reconcile cycles of the default account now, through the reconciler's own
    tick (claim the account's lease, list every page, judge, release)."""
    for _ in range(times):
        with cs.store.unit_of_work() as uow:
            uow.accounts.get(ACCOUNT).next_reconcile_at = utcnow()  # due now
            uow.commit()
        assert reconciler(cs).tick().worked


def deliver(cs: CloudState) -> None:
    """Deliver every pending event (the deliverer alone, in burst mode: no cloud calls)."""
    assert run_burst([cs.engine.deliverer], timeout=30)


def provider_id(cs: CloudState, instance_uuid: uuid.UUID) -> str:
    found = cs.get(instance_uuid).provider_id
    assert found is not None, f"{instance_uuid} was never launched"
    return found


def last_seq(cs: CloudState) -> int:
    """The event cursor now."""
    with cs.store.unit_of_work() as uow:
        return uow.changelog.last_seq()


def account_row(cs: CloudState) -> Account:
    with cs.store.read() as session:
        return session.scalars(select(Account).where(Account.name == ACCOUNT)).one()


# --- 1. launch: every instance ends running or error, once, and every event arrives --------


LAUNCH_TROUBLE = {
    # Throttling: the engine's own pace (fast cycles every 0.05 s, launch batches of 10) is far
    # more than a bucket of 5 calls/s with no burst allows, so listings and launches are
    # refused and retried with backoff.
    "throttled": (
        {"reconcile_fast_interval": 0.05},
        {"throttle_rate": 5.0, "throttle_burst": 1},
        "RequestLimitExceeded",
    ),
    # Lost answers and no client token: only looking the UUID up before a retry prevents a
    # second instance. Reconciling only every 5 s keeps the reconciler from adopting the
    # instance before the launcher retries, so the launcher's own look-up is what is tested.
    "lost responses, no client token": (
        {"reconcile_fast_interval": 5.0},
        {"honor_client_token": False, "lost_response_rate": 0.3},
        "simulated lost response",
    ),
}


@pytest.mark.parametrize(
    ("settings", "trouble", "evidence"), LAUNCH_TROUBLE.values(), ids=LAUNCH_TROUBLE
)
def test_fifty_launches_end_running_or_failed_with_one_cloud_instance_each_and_every_event(
    open_cloudstate: Callable[..., CloudState],
    open_cloud: Callable[..., SimulatedCloud],
    caplog: pytest.LogCaptureFixture,
    settings: dict[str, Any],
    trouble: dict[str, Any],
    evidence: str,
) -> None:
    """50 instances, 10 % launch failures and throttling (or lost create answers with no
    client-token help): each ends ``running`` with exactly one cloud instance or ``error`` with
    a reason and none; a subscribed callable gets each instance's events 1, 2, 3, ... in order,
    all of them."""
    caplog.set_level(logging.WARNING, logger="cloudstate")
    cs = open_cloudstate(pending_grace_seconds=0.5, launch_batch_size=10, **settings)
    cloud = open_cloud(cs, launch_failure_rate=0.1, seed=7, visibility_delay_seconds=0.2, **trouble)
    recorder = Recorder()
    cs.subscribe(recorder, name="recorder")
    uuids = new_uuids(50)

    launch(cs, uuids)
    assert cs.burst(timeout=60)

    assert evidence in caplog.text  # the trouble really happened
    views = {u: cs.get(u) for u in uuids}
    running = {u for u, v in views.items() if v.state is RUNNING}
    failed = {u for u, v in views.items() if v.state is ERROR}
    assert running | failed == set(uuids), {v.state for v in views.values()}
    assert running
    assert failed
    assert all(views[u].state_reason and views[u].last_error for u in failed)
    creates = cloud.creates_per_uuid(ACCOUNT)
    assert {u: creates.get(u, 0) for u in uuids} == {u: int(u in running) for u in uuids}
    assert set(creates) == running  # nothing created for a UUID we never asked for

    stored = by_instance(all_events(cs))
    delivered = by_instance(recorder.events)
    for u in uuids:
        numbers = [e.instance_seq for e in stored[u]]
        assert numbers == list(range(1, len(numbers) + 1))
        assert [e.id for e in delivered[u]] == [e.id for e in stored[u]]
        assert stored[u][-1].data["instance"]["state"] == views[u].state
    assert all(state_path(stored[u])[-1] == RUNNING for u in running)
    assert all([e.type for e in stored[u]][-1] == EventType.INSTANCE_LAUNCH_FAILED for u in failed)


class HealAfterFailedListing(logging.Handler):
    """Makes the simulated cloud list again right after the reconciler logs a failed listing."""

    def __init__(self, cloud: SimulatedCloud) -> None:
        super().__init__(logging.WARNING)
        self.cloud = cloud
        self.failures = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "listing failed" in record.getMessage():
            self.failures += 1
            self.cloud.configure(call_failure_rates={})


def test_a_burst_waits_for_booting_instances_even_while_a_failed_listing_backs_off(
    open_cloudstate: Callable[..., CloudState], open_cloud: Callable[..., SimulatedCloud]
) -> None:
    """``burst()`` returns True only when the launched instances are settled: a failed listing
    backing off for longer than the fast interval does not make a booting fleet look idle."""
    cs = open_cloudstate(pending_grace_seconds=0.5, reconcile_fast_interval=0.2)
    cloud = open_cloud(cs, boot_seconds=0.3, call_failure_rates={"list_page": 1.0})
    heal = HealAfterFailedListing(cloud)
    logger = logging.getLogger("cloudstate.engine")
    logger.addHandler(heal)
    uuids = new_uuids(3)
    launch(cs, uuids)

    try:
        settled = cs.burst(timeout=30)
    finally:
        logger.removeHandler(heal)

    assert heal.failures == 1  # retried 0.5 s or more later (> 2 fast intervals), and listed
    assert settled
    assert {cs.get(u).state for u in uuids} == {RUNNING}


# --- 2. changes made by someone else, and boots, reach the subscriber in time -------------


@pytest.mark.slow
def test_an_external_stop_reaches_the_subscriber_within_two_slow_cycles(
    open_cloudstate: Callable[..., CloudState], open_cloud: Callable[..., SimulatedCloud]
) -> None:
    """With every instance steady (slow cadence, 1 s), a stop made behind cloudstate's back is
    delivered as ``state_changed`` to ``stopped`` within 2 slow cycles of the cloud's stop."""
    slow = 1.0
    cs = open_cloudstate(
        pending_grace_seconds=0.5, reconcile_fast_interval=0.25, reconcile_slow_interval=slow
    )
    cloud = open_cloud(cs, visibility_delay_seconds=0.2)
    recorder = Recorder()
    cs.subscribe(recorder, name="recorder")
    uuids = new_uuids(3)
    launch(cs, uuids)
    cs.start()
    cs.wait_for(uuids, RUNNING, timeout=10)
    time.sleep(slow)  # let a cycle see the fleet steady: slow cadence from now on
    target = uuids[0]
    acts_before = cloud.call_counts(ACCOUNT).get("act", 0)

    cloud.external_stop(provider_id(cs, target))

    (stop,) = [e for e in cloud.ledger(ACCOUNT) if e.cause == "external"]
    arrived = wait_until(
        lambda: recorder.arrival(
            lambda e: (
                e.instance_uuid == target and e.type == STATE_CHANGED and new_state(e) == STOPPED
            )
        ),
        timeout=2 * slow + 3,
        what="the stop to be delivered",
    )
    assert (stop.from_state, stop.to_state) == ("running", "stopping")
    assert arrived - stop.at <= 2 * slow + 0.5
    assert cs.get(target).state is STOPPED
    assert [cs.get(u).state for u in uuids[1:]] == [RUNNING, RUNNING]
    assert cloud.call_counts(ACCOUNT).get("act", 0) == acts_before  # not our doing


@pytest.mark.slow
def test_a_boot_is_delivered_within_two_seconds_of_the_cloud_finishing_it(
    open_cloudstate: Callable[..., CloudState], open_cloud: Callable[..., SimulatedCloud]
) -> None:
    """Default cadence (fast 1 s, slow 30 s), engine already idle when the order arrives: each
    instance's ``pending`` → ``running`` reaches the subscriber within 2 s of the cloud's
    transition (measured from the simulator's ledger)."""
    cs = open_cloudstate(pending_grace_seconds=0.5)
    cloud = open_cloud(cs, boot_seconds=0.5, visibility_delay_seconds=0.2)
    recorder = Recorder()
    cs.subscribe(recorder, name="recorder")
    cs.start()
    wait_until(lambda: account_row(cs).last_cycle_at, what="a first cycle of the empty account")
    uuids = new_uuids(3)

    launch(cs, uuids)

    def arrival(u: uuid.UUID) -> float | None:
        return recorder.arrival(
            lambda e: e.instance_uuid == u and e.type == STATE_CHANGED and new_state(e) == RUNNING
        )

    wait_until(lambda: all(arrival(u) for u in uuids), timeout=10, what="every boot delivered")
    booted = {
        e.uuid: e.at
        for e in cloud.ledger(ACCOUNT)
        if e.kind == "transition" and (e.from_state, e.to_state) == ("pending", "running")
    }
    delays = {u: (arrival(u) or math.inf) - booted[u] for u in uuids}
    assert all(0 <= delay <= 2.0 for delay in delays.values()), delays


# --- 3. a provider outage makes instances unknown, never stopped or terminated --------------


def test_an_outage_makes_instances_unknown_after_the_threshold_and_recovery_restores_them(
    open_cloudstate: Callable[..., CloudState], open_cloud: Callable[..., SimulatedCloud]
) -> None:
    """Unreachable provider: the fleet keeps its states for ``unreachable_after_failures - 1``
    failed listings, then turns ``unknown`` (``provider_unreachable``); once reachable, each
    instance is back in its real state. No ``stopped``/``terminated`` is ever invented."""
    cs = open_cloudstate(pending_grace_seconds=0.5, unreachable_after_failures=3)
    cloud = open_cloud(cs)
    recorder = Recorder()
    cs.subscribe(recorder, name="recorder")
    uuids = new_uuids(4)
    launch(cs, uuids)
    assert cs.burst(timeout=30)
    stopped, running = uuids[0], uuids[1:]
    cs.action(stopped, "stop", wait=10)
    before = {u: cs.get(u).state for u in uuids}
    cursor = last_seq(cs)
    listings = cloud.call_counts(ACCOUNT)["list_page"]

    cloud.configure(unreachable=True)
    cycle(cs, times=2)
    assert {u: cs.get(u).state for u in uuids} == before  # two blips do not flap the fleet
    cycle(cs)
    outage = {u: cs.get(u) for u in uuids}
    cycle(cs)  # still down: nothing new to say
    during = all_events(cs, after=cursor)
    cloud.configure(unreachable=False)
    cycle(cs)
    deliver(cs)

    assert cloud.call_counts(ACCOUNT)["list_page"] == listings + 5  # one listing per cycle
    assert {v.state for v in outage.values()} == {InstanceState.UNKNOWN}
    assert {v.state_reason for v in outage.values()} == {UnknownReason.PROVIDER_UNREACHABLE}
    assert (
        {u: cs.get(u).state for u in uuids}
        == before
        == {
            stopped: STOPPED,
            **dict.fromkeys(running, RUNNING),
        }
    )
    assert all(cs.get(u).state_reason == "" for u in uuids)
    assert len([e for e in during if e.type == STATE_CHANGED]) == len(uuids)
    assert all(e.data["reason"] == UnknownReason.PROVIDER_UNREACHABLE for e in during)
    received = by_instance(recorder.events)
    after = by_instance([e for e in recorder.events if e.seq > cursor])
    assert {u: state_path(after[u]) for u in uuids} == {
        u: ["unknown", str(before[u])] for u in uuids
    }
    for u in running:  # never stopped or terminated, before, during or after the outage
        assert not {"stopped", "terminated"} & set(state_path(received[u]))
    gone = [e for e in cloud.ledger(ACCOUNT) if e.kind == "transition" and e.cause != "auto"]
    assert {(e.uuid, e.to_state) for e in gone} == {(stopped, "stopping")}  # only our stop


def test_throttled_listings_back_off_without_making_instances_unknown(
    open_cloudstate: Callable[..., CloudState],
    open_cloud: Callable[..., SimulatedCloud],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A provider that only throttles is reachable: more throttled listings in a row than
    ``unreachable_after_failures`` leave every instance in its state, and no event is made."""
    caplog.set_level(logging.WARNING, logger="cloudstate")
    cs = open_cloudstate(pending_grace_seconds=0.5, unreachable_after_failures=2)
    cloud = open_cloud(cs)
    uuids = new_uuids(3)
    launch(cs, uuids)
    assert cs.burst(timeout=30)
    cursor = last_seq(cs)
    cloud.configure(throttle_rate=0.001, throttle_burst=1)
    cycle(cs)  # spends the one token

    cycle(cs, times=3)

    assert caplog.text.count("listing failed (RequestLimitExceeded") == 3
    assert {cs.get(u).state for u in uuids} == {RUNNING}
    assert all_events(cs, after=cursor) == []
    cloud.configure(throttle_rate=None)
    cycle(cs)
    assert {cs.get(u).state for u in uuids} == {RUNNING}
    assert all_events(cs, after=cursor) == []


# --- 4. what reconciling costs ---------------------------------------------------------------


def test_reconciling_a_thousand_instances_costs_one_listing_per_page_per_cycle(
    open_cloudstate: Callable[..., CloudState], open_cloud: Callable[..., SimulatedCloud]
) -> None:
    """1,000 instances on one account: N cycles make exactly N x ceil(1000 / page_size)
    provider calls (all ``list_page``), never one per instance, with the same driver."""
    cs = open_cloudstate(pending_grace_seconds=0.5, launch_batch_size=1000)
    page_size = 64
    cloud = open_cloud(cs, page_size=page_size)
    uuids = new_uuids(1000)
    launch(cs, uuids)
    assert cs.burst(timeout=60)
    assert len(cs.list(state="running", limit=1000)) == 1000
    account = account_row(cs).id
    driver = cs.engine.pool.for_account(account)
    calls_before = cloud.call_counts(ACCOUNT)
    cycles = 3

    cycle(cs, times=cycles)

    calls = cloud.call_counts(ACCOUNT)
    spent = {name: calls[name] - calls_before.get(name, 0) for name in calls}
    assert {name: n for name, n in spent.items() if n} == {
        "list_page": cycles * math.ceil(1000 / page_size)
    }
    assert len(cs.list(state="running", limit=1000)) == 1000
    assert cs.engine.pool.for_account(account) is driver


# --- 5. bad input: a clear error naming the problem, and nothing written --------------------


@pytest.fixture
def fleet(
    open_cloudstate: Callable[..., CloudState],
) -> tuple[CloudState, uuid.UUID, uuid.UUID, uuid.UUID]:
    """A subscribed CloudState with two running instances and one stopped, engine at rest."""
    cs = open_cloudstate(pending_grace_seconds=0.5, reconcile_fast_interval=0.2)
    cs.subscribe(Recorder(), name="recorder")
    running, other, stopped = new_uuids(3)
    launch(cs, [running, other, stopped])
    assert cs.burst(timeout=30)
    cs.action(stopped, "stop", wait=10)
    assert cs.burst(timeout=30)
    return cs, running, other, stopped


def test_invalid_orders_name_every_bad_field_and_write_nothing(
    fleet: tuple[CloudState, uuid.UUID, uuid.UUID, uuid.UUID],
) -> None:
    """Malformed fields, an unknown account, an impossible override, an unknown profile, a
    UUID already stored: each order is refused with the field paths at fault, whole."""
    cs, running, _, _ = fleet
    fresh = [str(u) for u in new_uuids(3)]
    counts = row_counts(cs)

    with pytest.raises(ValidationError) as malformed:
        cs.launch(
            image="img-basic",
            instances=[
                {"uuid": "not-a-uuid"},
                {"uuid": fresh[0], "hardware_profile": "small", "memory": 0},
                {"uuid": fresh[0], "hardware_profile": "small", "colour": "red"},
            ],
        )
    with pytest.raises(ValidationError) as unknown_account:
        cs.launch(
            image="img-basic",
            hardware_profile="small",
            instances=[{"uuid": fresh[0]}, {"uuid": fresh[1], "account": "nowhere"}],
        )
    with pytest.raises(HardwareProfileError) as impossible:
        cs.launch(
            image="img-basic",
            hardware_profile="large",
            instances=[{"uuid": fresh[0], "storage": 250}, {"uuid": fresh[1], "storage": 5000}],
        )
    with pytest.raises(ValidationError) as unknown_profile:
        cs.launch(image="img-basic", hardware_profile="huge", instances=[{"uuid": fresh[0]}])
    with pytest.raises(AlreadyExistsError) as taken:
        launch(cs, [uuid.UUID(fresh[2]), running])

    assert row_counts(cs) == counts
    assert {e.field for e in malformed.value.errors} == {
        "instances.0.uuid",
        "instances.0.hardware_profile",
        "instances.1.memory",
        "instances.2.colour",
        "instances.2.uuid",  # repeats instances.1
    }
    assert [e.field for e in unknown_account.value.errors] == ["instances.1.account"]
    assert "'nowhere'" in str(unknown_account.value)
    assert [e.field for e in impossible.value.errors] == ["instances.1.storage"]
    assert "5000" in str(impossible.value)
    assert "1000" in str(impossible.value)
    assert [e.field for e in unknown_profile.value.errors] == ["instances.0.hardware_profile"]
    assert "'huge'" in str(unknown_profile.value)
    assert "small" in str(unknown_profile.value)
    assert str(running) in str(taken.value)
    assert len(cs.list(limit=100)) == 3


def test_invalid_actions_are_refused_with_the_reason_and_write_nothing(
    fleet: tuple[CloudState, uuid.UUID, uuid.UUID, uuid.UUID],
) -> None:
    """A forbidden action lists the allowed ones; an unknown action, an unknown or malformed
    UUID is named; a bulk request with any bad instance is refused whole."""
    cs, running, other, stopped = fleet
    stranger = uuid.uuid4()
    counts = row_counts(cs)

    with pytest.raises(ActionNotAllowedError) as forbidden:
        cs.action(running, "start")
    with pytest.raises(ValidationError) as unknown_action:
        cs.action(running, "explode")
    with pytest.raises(NotFoundError) as missing:
        cs.action([running, stranger], "stop")
    with pytest.raises(ValidationError) as malformed:
        cs.action("not-a-uuid", "stop")
    with pytest.raises(ActionNotAllowedError) as one_of_two:
        cs.action([running, stopped], "stop")
    with pytest.raises(ConflictError) as both:
        cs.action([stopped, running, other], "start")

    assert row_counts(cs) == counts
    assert forbidden.value.allowed == ("stop", "reboot", "destroy")
    assert str(running) in str(forbidden.value)
    assert "running" in str(forbidden.value)
    assert [e.field for e in unknown_action.value.errors] == ["action"]
    assert "'explode'" in str(unknown_action.value)
    assert "reboot" in str(unknown_action.value)
    assert str(stranger) in str(missing.value)
    assert str(running) not in str(missing.value)
    assert [e.field for e in malformed.value.errors] == ["uuid"]
    assert one_of_two.value.allowed == ("start", "destroy")
    assert str(stopped) in str(one_of_two.value)
    assert str(running) in str(both.value)
    assert str(other) in str(both.value)
    assert "2 instance(s)" in str(both.value)
    assert (cs.get(running).state, cs.get(running).operation) == (RUNNING, None)
    assert (cs.get(stopped).state, cs.get(stopped).operation) == (STOPPED, None)


# --- 6. orphans, realms, destroy before launch, bulk actions --------------------------------


def test_an_instance_tagged_as_ours_but_unknown_is_reported_once_as_an_orphan(
    open_cloudstate: Callable[..., CloudState], open_cloud: Callable[..., SimulatedCloud]
) -> None:
    """A cloud instance carrying a UUID tag cloudstate never issued gives one
    ``instance.orphan_found`` event, however many cycles see it; untagged ones give none."""
    cs = open_cloudstate()
    cloud = open_cloud(cs)
    recorder = Recorder()
    cs.subscribe(recorder, name="recorder", types=["instance.orphan_found"])
    stranger = uuid.uuid4()
    orphan = cloud.external_create(ACCOUNT, uuid=stranger)
    cloud.external_create(ACCOUNT)  # someone else's, untagged: not ours at all

    cycle(cs, times=3)
    deliver(cs)

    found = [e for e in all_events(cs) if e.type == EventType.INSTANCE_ORPHAN_FOUND]
    assert len(found) == 1
    assert found[0].data["uuid"] == str(stranger)
    assert found[0].data["provider_id"] == orphan.provider_id
    assert [e.id for e in recorder.events] == [found[0].id]
    with pytest.raises(NotFoundError):
        cs.get(stranger)  # reported, not adopted


@pytest.mark.slow
def test_a_realm_going_down_and_up_is_an_event_each_time(
    open_cloudstate: Callable[..., CloudState], open_cloud: Callable[..., SimulatedCloud]
) -> None:
    """Realm availability is checked about once per slow interval; each change is one
    ``realm.availability_changed`` event with the reason, delivered to a subscriber."""
    slow = 0.1
    cs = open_cloudstate(reconcile_slow_interval=slow)
    cloud = open_cloud(cs)
    recorder = Recorder()
    cs.subscribe(recorder, name="realms", types=["realm.availability_changed"])

    def check_realms() -> list[tuple[str, bool, str]]:
        time.sleep(slow * 1.5)
        cursor = last_seq(cs)
        cycle(cs)
        return [
            (e.data["realm"], e.data["available"], e.data["reason"])
            for e in all_events(cs, after=cursor)
            if e.type == EventType.REALM_AVAILABILITY_CHANGED
        ]

    first = check_realms()
    cloud.set_realm_available("sim-b", False, "maintenance")
    down = check_realms()
    unchanged = check_realms()
    cloud.set_realm_available("sim-b", True)
    up = check_realms()
    deliver(cs)

    assert sorted(first) == [("sim-a", True, ""), ("sim-b", True, "")]
    assert down == [("sim-b", False, "maintenance")]
    assert unchanged == []
    assert up == [("sim-b", True, "")]
    assert len(recorder.events) == 4


def test_destroying_an_instance_never_launched_ends_it_without_calling_the_provider(
    open_cloudstate: Callable[..., CloudState], open_cloud: Callable[..., SimulatedCloud]
) -> None:
    """A ``new`` instance destroyed before the launcher took it is ``terminated`` at once, and
    the cloud never hears of it."""
    cs = open_cloudstate()
    cloud = open_cloud(cs)
    calls_before = cloud.call_counts(ACCOUNT)
    (doomed,) = new_uuids(1)
    launch(cs, [doomed])

    (result,) = cs.action(doomed, "destroy", wait=5)
    assert cs.burst(timeout=10)

    view = cs.get(doomed)
    assert result.accepted
    assert (view.state, view.operation, view.provider_id) == (
        InstanceState.TERMINATED,
        None,
        None,
    )
    calls = cloud.call_counts(ACCOUNT)
    assert calls.get("create_many", 0) == calls_before.get("create_many", 0)
    assert calls.get("act", 0) == calls_before.get("act", 0)
    assert doomed not in cloud.creates_per_uuid(ACCOUNT)
    assert state_path(by_instance(all_events(cs))[doomed]) == ["terminated"]


def test_a_bulk_stop_then_destroy_acts_on_every_instance_and_waits_for_all(
    open_cloudstate: Callable[..., CloudState], open_cloud: Callable[..., SimulatedCloud]
) -> None:
    """One call stops several instances and ``wait=`` returns once all are ``stopped``; one
    more destroys them all. The cloud did exactly that, once per instance."""
    cs = open_cloudstate(pending_grace_seconds=0.5, reconcile_fast_interval=0.2)
    cloud = open_cloud(cs)
    recorder = Recorder()
    cs.subscribe(recorder, name="recorder")
    uuids = new_uuids(3)
    launch(cs, uuids)
    assert cs.burst(timeout=30)

    stops = cs.action(uuids, "stop", wait=10)
    after_stop = {u: cs.get(u).state for u in uuids}
    destroys = cs.action([str(u) for u in uuids], "destroy", wait=10)
    deliver(cs)

    assert [r.uuid for r in stops] == uuids
    assert all(r.accepted for r in stops)
    assert all(r.accepted and r.operation_id for r in destroys)
    assert after_stop == dict.fromkeys(uuids, STOPPED)
    assert {cs.get(u).state for u in uuids} == {InstanceState.TERMINATED}
    acted = [
        (e.uuid, e.to_state)
        for e in cloud.ledger(ACCOUNT)
        if e.kind == "transition" and e.cause.startswith("action:")
    ]
    assert sorted(acted) == sorted(
        [(u, "stopping") for u in uuids] + [(u, "shutting-down") for u in uuids]
    )
    for u in uuids:
        types = [e.type for e in by_instance(recorder.events)[u]]
        assert types.count(EventType.INSTANCE_ACTION_REQUESTED) == 2
        assert types.count(EventType.INSTANCE_ACTION_COMPLETED) == 2
        assert state_path(by_instance(recorder.events)[u])[-3:] == [
            "stopped",
            "shutting_down",
            "terminated",
        ]
