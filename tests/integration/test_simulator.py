"""The simulator behaves like a real cloud: shared, durable, slow, flaky, and honest about it.

Timing tests use an injected clock so they are exact and instant; the cross-process tests run
real second processes against the same file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_ssh_private_key

from cloudstate.domain.states import Action, InstanceState
from cloudstate.exceptions import (
    ActionNotSupportedError,
    ProviderAuthError,
    ProviderCapacityError,
    ProviderNotFoundError,
    ProviderPermanentError,
    ProviderThrottledError,
    ProviderUnavailableError,
    ValidationError,
)
from cloudstate.providers import registry
from cloudstate.providers.base import DriverContext, LaunchSpec
from cloudstate.providers.simulator import SimulatedCloud, SimulatorDriver, SimulatorKnobs
from cloudstate.providers.simulator.catalogue import generate_key_pair
from cloudstate.testing import simulated_cloud, wait_until


class FakeClock:
    """Time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "cloud.db"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cloud(path: Path, clock: FakeClock):
    """A cloud with the default (realistic) timings on a fake clock, seeded dice."""
    with SimulatedCloud(path, initial=SimulatorKnobs(seed=7), clock=clock) as made:
        yield made


@pytest.fixture
def driver(cloud: SimulatedCloud) -> SimulatorDriver:
    return SimulatorDriver(cloud, "acct")


def spec(**changes) -> LaunchSpec:
    fields = {
        "uuid": uuid.uuid4(),
        "name": "web",
        "image": "img-basic",
        "hardware_profile": "small",
    }
    return LaunchSpec(**{**fields, **changes})


def launch(driver: SimulatorDriver, **changes):
    [outcome] = driver.create_many([spec(**changes)])
    assert outcome.error is None, outcome.error
    return outcome.instance


def listed(driver: SimulatorDriver, instance_uuid: uuid.UUID):
    found = driver.list_page(uuids=[instance_uuid]).instances
    return found[0] if found else None


def run_python(source: str, *args: str) -> str:
    """Run ``source`` in a fresh Python process and return what it printed."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# ------------------------------------------------------------------ lifecycle and time


def test_pending_becomes_running_after_the_boot_time(driver, clock):
    instance = launch(driver)
    clock.advance(1.0)  # the default visibility delay
    assert listed(driver, instance.uuid).state is InstanceState.PENDING

    clock.advance(2.0)  # boot_seconds = 3 from creation

    assert listed(driver, instance.uuid).state is InstanceState.RUNNING


def test_the_ledger_stamps_each_transition_with_the_time_it_happened(driver, cloud, clock):
    created_at = clock.now
    instance = launch(driver)
    clock.advance(10)

    entries = [e for e in cloud.ledger("acct") if e.provider_id == instance.provider_id]

    assert [(e.kind, e.from_state, e.to_state, e.cause) for e in entries] == [
        ("create", None, "pending", "launch"),
        ("transition", "pending", "running", "auto"),
    ]
    assert [e.at for e in entries] == [created_at, created_at + 3.0]
    assert entries[0].uuid == instance.uuid


def test_stop_start_reboot_and_destroy_take_their_configured_time(driver, cloud, clock):
    instance = launch(driver)
    clock.advance(3)
    steps = [
        (Action.STOP, "stopping", 2, "stopped"),
        (Action.START, "pending", 3, "running"),
        (Action.REBOOT, "rebooting", 2, "running"),
        (Action.DESTROY, "shutting-down", 2, "terminated"),
    ]
    for action, transitional, seconds, final in steps:
        driver.act(instance.provider_id, action)
        clock.advance(seconds - 0.5)
        assert listed(driver, instance.uuid).raw_state == transitional
        clock.advance(0.5)
        assert listed(driver, instance.uuid).raw_state == final

    causes = [e.cause for e in cloud.ledger("acct") if e.kind == "transition"]
    assert causes == ["auto", *(c for step in steps for c in (f"action:{step[0]}", "auto"))]


def test_terminated_stays_listed_for_the_retention_then_disappears(driver, clock):
    instance = launch(driver)
    clock.advance(3)
    driver.act(instance.provider_id, Action.DESTROY)
    clock.advance(2)  # shutting-down → terminated

    clock.advance(59.5)
    assert listed(driver, instance.uuid).state is InstanceState.TERMINATED
    clock.advance(0.5)

    assert listed(driver, instance.uuid) is None
    with pytest.raises(ProviderNotFoundError):
        driver.act(instance.provider_id, Action.DESTROY)


def test_destroy_is_idempotent_while_shutting_down_and_once_terminated(driver, cloud, clock):
    instance = launch(driver)
    clock.advance(1)
    driver.act(instance.provider_id, Action.DESTROY)
    driver.act(instance.provider_id, Action.DESTROY)
    clock.advance(5)
    driver.act(instance.provider_id, Action.DESTROY)

    to_states = [e.to_state for e in cloud.ledger("acct") if e.kind == "transition"]
    assert to_states == ["shutting-down", "terminated"]


@pytest.mark.parametrize(("action", "state"), [(Action.STOP, "stopped"), (Action.START, "running")])
def test_an_action_the_state_forbids_is_refused_as_incorrect_instance_state(
    driver, clock, action, state
):
    instance = launch(driver)
    clock.advance(3)
    if state == "stopped":
        driver.act(instance.provider_id, Action.STOP)
        clock.advance(2)

    with pytest.raises(ProviderPermanentError) as caught:
        driver.act(instance.provider_id, action)

    assert caught.value.code == "IncorrectInstanceState"
    assert instance.provider_id in str(caught.value)
    assert f"in state {state}" in str(caught.value)


def test_an_unknown_action_is_not_supported(driver, clock):
    instance = launch(driver)
    with pytest.raises(ActionNotSupportedError, match="hibernate"):
        driver.act(instance.provider_id, "hibernate")


# ------------------------------------------------------------------ eventual consistency, paging


def test_a_new_instance_is_invisible_to_lists_and_actions_until_the_delay_passes(driver, clock):
    instance = launch(driver)

    assert listed(driver, instance.uuid) is None
    assert driver.list_page().instances == ()
    with pytest.raises(ProviderNotFoundError):
        driver.act(instance.provider_id, Action.DESTROY)

    clock.advance(1.0)
    assert listed(driver, instance.uuid).provider_id == instance.provider_id


def test_a_page_costs_one_list_call_and_pages_follow_creation_order(driver, cloud, clock):
    cloud.configure(page_size=10)
    created = [o.instance.uuid for o in driver.create_many([spec() for _ in range(25)])]
    clock.advance(1)
    before = cloud.call_counts("acct").get("list_page", 0)

    pages, token = [], None
    while True:
        page = driver.list_page(token)
        pages.append(page)
        if (token := page.next_token) is None:
            break

    assert [len(page.instances) for page in pages] == [10, 10, 5]
    assert [i.uuid for page in pages for i in page.instances] == created
    assert cloud.call_counts("acct")["list_page"] - before == 3


def test_a_malformed_page_token_is_a_permanent_error(driver):
    with pytest.raises(ProviderPermanentError, match="malformed next_token"):
        driver.list_page("garbage")


# ------------------------------------------------------------------ launch checks and the catalogue


@pytest.mark.parametrize(
    ("changes", "named", "valid"),
    [
        ({"image": "img-nope"}, "img-nope", "img-basic, img-web"),
        ({"hardware_profile": "huge"}, "huge", "small, medium, large"),
        ({"realm": "sim-z"}, "sim-z", "sim-a, sim-b"),
        ({"hardware_profile": "large", "storage": 5000}, "storage", "100, 250, 500, 1000"),
        ({"user_data": "x" * 16385}, "16385 bytes", "16384"),
    ],
)
def test_a_bad_launch_is_a_permanent_error_outcome_naming_the_value_and_the_valid_ones(
    driver, cloud, changes, named, valid
):
    [outcome] = driver.create_many([spec(**changes)])

    assert isinstance(outcome.error, ProviderPermanentError)
    assert named in outcome.error.reason
    assert valid in outcome.error.reason
    assert cloud.creates_per_uuid("acct") == {}


def test_hardware_overrides_follow_the_profile_rules(driver):
    medium = launch(driver, hardware_profile="medium", memory=100_000, cpu=3)
    large = launch(driver, hardware_profile="large", storage=300, memory=1)
    small = launch(driver, hardware_profile="small", cpu=64)

    assert (medium.extra["memory"], medium.extra["cpu"], medium.extra["storage"]) == (8192, 3, 40)
    assert (large.extra["memory"], large.extra["storage"]) == (16384, 500)
    assert small.extra["cpu"] == 1


def test_the_default_catalogue_is_as_documented(driver):
    assert [image.id for image in driver.list_images()] == ["img-basic", "img-web"]
    assert [realm.name for realm in driver.list_realms()] == ["sim-a", "sim-b"]
    kinds = {
        profile.id: {name: str(prop.kind) for name, prop in profile.properties.items()}
        for profile in driver.list_hardware_profiles()
    }
    assert kinds["small"] == {"memory": "fixed", "cpu": "fixed", "storage": "fixed"}
    assert kinds["medium"] == {"memory": "range", "cpu": "range", "storage": "fixed"}
    assert kinds["large"]["storage"] == "enum"


# ------------------------------------------------------------------ keys, addresses, tags


def test_a_generated_private_key_is_only_in_the_create_outcome(driver, clock):
    created = launch(driver)
    clock.advance(1)
    seen = listed(driver, created.uuid)

    assert created.key_material.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert load_ssh_private_key(created.key_material.encode(), password=None)
    assert seen.key_material is None
    assert seen.key_fingerprint == created.key_fingerprint
    assert created.key_fingerprint.startswith("SHA256:")


def test_a_named_key_has_no_material_and_a_fingerprint_derived_from_its_name(driver):
    first = launch(driver, keyname="ops")
    second = launch(driver, keyname="ops")

    assert first.key_material is None
    assert first.key_fingerprint == second.key_fingerprint
    assert first.key_fingerprint != generate_key_pair().fingerprint


def test_addresses_change_on_stop_and_start_and_go_on_termination(driver, clock):
    instance = launch(driver)
    assert instance.public_addresses == ()
    assert instance.private_addresses[0].startswith("10.")
    clock.advance(3)
    first = listed(driver, instance.uuid).public_addresses

    driver.act(instance.provider_id, Action.STOP)
    clock.advance(2)
    stopped = listed(driver, instance.uuid)
    driver.act(instance.provider_id, Action.START)
    clock.advance(3)
    second = listed(driver, instance.uuid).public_addresses
    driver.act(instance.provider_id, Action.DESTROY)
    clock.advance(2)
    gone = listed(driver, instance.uuid)

    assert first
    assert second
    assert first != second
    assert stopped.public_addresses == ()
    assert stopped.private_addresses == instance.private_addresses
    assert (gone.public_addresses, gone.private_addresses) == ((), ())


def test_instances_carry_the_uuid_tag_name_and_labels(driver, clock):
    instance = launch(driver, name="db-1", labels={"team": "core"})

    assert instance.extra["tags"] == {
        "cloudstate:uuid": str(instance.uuid),
        "Name": "db-1",
        "team": "core",
    }


# ------------------------------------------------------------------ outside changes, namespaces


def test_external_changes_show_up_and_are_recorded_as_external(driver, cloud, clock):
    instance = launch(driver)
    clock.advance(3)

    cloud.external_stop(instance.provider_id)
    clock.advance(2)
    assert listed(driver, instance.uuid).state is InstanceState.STOPPED
    cloud.external_start(instance.provider_id)
    clock.advance(3)
    assert listed(driver, instance.uuid).state is InstanceState.RUNNING
    cloud.external_terminate(instance.provider_id)
    clock.advance(2)
    assert listed(driver, instance.uuid).state is InstanceState.TERMINATED

    causes = [e.cause for e in cloud.ledger("acct") if e.kind == "transition"]
    assert causes.count("external") == 3


def test_an_external_create_with_our_tag_is_listed_but_one_without_is_not(driver, cloud, clock):
    orphan_uuid = uuid.uuid4()
    orphan = cloud.external_create("acct", uuid=orphan_uuid, name="orphan")
    stranger = cloud.external_create("acct", name="someone-elses")
    clock.advance(1)

    page = driver.list_page()

    assert [i.provider_id for i in page.instances] == [orphan.provider_id]
    assert page.instances[0].uuid == orphan_uuid
    assert stranger.uuid is None
    assert {i.provider_id for i in cloud.instances("acct")} == {
        orphan.provider_id,
        stranger.provider_id,
    }


def test_namespaces_are_separate_accounts_of_one_cloud(cloud, clock):
    first, second = SimulatorDriver(cloud, "first"), SimulatorDriver(cloud, "second")
    instance = launch(first)
    clock.advance(1)

    assert second.list_page().instances == ()
    with pytest.raises(ProviderNotFoundError):
        second.act(instance.provider_id, Action.DESTROY)
    assert len(first.list_page().instances) == 1


# ------------------------------------------------------------------ injected trouble


def test_call_failure_rates_fail_that_call_only_and_repeat_with_the_seed(driver, cloud):
    def pattern() -> list[str]:
        outcomes = []
        for _ in range(40):
            try:
                driver.list_realms()
            except ProviderUnavailableError as exc:
                outcomes.append(exc.reason)
            else:
                outcomes.append("ok")
        return outcomes

    cloud.configure(seed=11, call_failure_rates={"list_realms": 0.5})
    first = pattern()
    driver.list_images()  # another call is untouched
    cloud.configure(seed=11)

    assert pattern() == first
    assert "ok" in first
    assert set(first) - {"ok"} == {
        "simulated failure of list_realms (call_failure_rates['list_realms'] = 0.5)"
    }


def test_the_launch_failure_rate_fails_single_instances_permanently(driver, cloud):
    cloud.configure(seed=3, launch_failure_rate=0.5)

    outcomes = driver.create_many([spec() for _ in range(40)])

    failed = [o for o in outcomes if o.error is not None]
    assert 5 < len(failed) < 35
    assert all(isinstance(o.error, ProviderPermanentError) for o in failed)
    assert all("simulated launch failure" in o.error.reason for o in failed)
    assert set(cloud.creates_per_uuid("acct")) == {o.uuid for o in outcomes if o.error is None}


def test_a_lost_response_raises_although_the_instances_exist(driver, cloud, clock):
    cloud.configure(lost_response_rate=1.0)
    wanted = spec()

    with pytest.raises(ProviderUnavailableError, match="lost response"):
        driver.create_many([wanted])

    clock.advance(1)
    assert listed(driver, wanted.uuid) is not None


def test_the_token_bucket_throttles_bursts_and_refills_with_time(driver, cloud, clock):
    cloud.configure(throttle_rate=2.0, throttle_burst=3)
    for _ in range(3):
        driver.list_realms()

    with pytest.raises(ProviderThrottledError) as caught:
        driver.list_realms()
    clock.advance(0.5)  # one token back

    driver.list_realms()
    assert caught.value.code == "RequestLimitExceeded"
    assert cloud.call_counts("acct")["list_realms"] == 5


def test_throttling_is_shared_by_every_handle_on_the_cloud(path, cloud, clock):
    cloud.configure(throttle_rate=0.001, throttle_burst=2)
    with SimulatedCloud(path, clock=clock) as other:
        SimulatorDriver(cloud, "acct").list_images()
        SimulatorDriver(other, "acct").list_images()

        with pytest.raises(ProviderThrottledError):
            SimulatorDriver(other, "acct").list_images()
        SimulatorDriver(other, "another-account").list_images()


def test_an_unreachable_cloud_fails_every_call_until_it_is_back(driver, cloud):
    cloud.configure(unreachable=True)
    with pytest.raises(ProviderUnavailableError, match="unreachable"):
        driver.list_page()

    cloud.configure(unreachable=False)
    assert driver.list_page().instances == ()


def test_a_rejected_namespace_gets_auth_errors_and_others_do_not(cloud):
    cloud.configure(rejected_namespaces=["expired"])

    with pytest.raises(ProviderAuthError) as caught:
        SimulatorDriver(cloud, "expired").list_page()
    assert SimulatorDriver(cloud, "fine").list_page().instances == ()
    assert not caught.value.retryable


def test_latency_is_added_to_every_call(tmp_path):
    with simulated_cloud(tmp_path / "slow.db", latency_seconds=0.05) as cloud:
        started = time.monotonic()
        SimulatorDriver(cloud, "acct").list_images()
        assert time.monotonic() - started >= 0.05


def test_capacity_limits_live_instances_per_namespace(cloud, clock):
    cloud.configure(capacity=2)
    driver = SimulatorDriver(cloud, "acct")

    outcomes = driver.create_many([spec(), spec(), spec()])
    other = SimulatorDriver(cloud, "other").create_many([spec()])

    assert isinstance(outcomes[2].error, ProviderCapacityError)
    assert "limit of 2" in outcomes[2].error.reason
    assert other[0].error is None
    clock.advance(1)
    driver.act(outcomes[0].instance.provider_id, Action.DESTROY)
    assert isinstance(driver.create_many([spec()])[0].error, ProviderCapacityError)
    clock.advance(2)  # terminated instances no longer count
    assert driver.create_many([spec()])[0].error is None


def test_an_unavailable_realm_is_listed_with_its_reason_and_refuses_launches(driver, cloud):
    cloud.set_realm_available("sim-a", False, "power failure")

    realms = {realm.name: realm for realm in driver.list_realms()}
    [there] = driver.create_many([spec(realm="sim-a")])
    anywhere = launch(driver)
    cloud.set_realm_available("sim-b", False)
    [nowhere] = driver.create_many([spec()])

    assert (realms["sim-a"].available, realms["sim-a"].reason) == (False, "power failure")
    assert realms["sim-b"].available
    assert isinstance(there.error, ProviderCapacityError)
    assert "power failure" in there.error.reason
    assert anywhere.realm == "sim-b"
    assert isinstance(nowhere.error, ProviderCapacityError)
    with pytest.raises(ValidationError, match="sim-z"):
        cloud.set_realm_available("sim-z", True)


def test_honoring_the_client_token_returns_the_live_instance_for_a_repeated_uuid(driver, cloud):
    wanted = spec()
    [first] = driver.create_many([wanted])
    [again] = driver.create_many([wanted])

    assert again.instance.provider_id == first.instance.provider_id
    assert again.instance.key_material is None  # a private key is handed out once
    assert cloud.creates_per_uuid("acct") == {wanted.uuid: 1}


def test_without_the_client_token_a_repeated_uuid_creates_a_duplicate(driver, cloud):
    cloud.configure(honor_client_token=False)
    wanted = spec()

    [first] = driver.create_many([wanted])
    [again] = driver.create_many([wanted])

    assert again.instance.provider_id != first.instance.provider_id
    assert cloud.creates_per_uuid("acct") == {wanted.uuid: 2}


def test_call_counts_include_failed_and_throttled_calls(driver, cloud):
    cloud.configure(unreachable=True)
    for call in (driver.list_page, driver.list_realms, lambda: driver.create_many([])):
        with pytest.raises(ProviderUnavailableError):
            call()

    assert cloud.call_counts("acct") == {"list_page": 1, "list_realms": 1, "create_many": 1}
    assert cloud.call_counts("elsewhere") == {}


# ------------------------------------------------------------------ knobs and factories


def test_an_unknown_knob_is_a_validation_error_naming_it_and_the_real_ones(cloud):
    with pytest.raises(ValidationError) as caught:
        cloud.configure(boot_secs=1)

    [error] = caught.value.errors
    assert error.field == "boot_secs"
    assert "boot_seconds" in error.message


def test_bad_knob_values_are_all_reported_and_change_nothing(cloud):
    with pytest.raises(ValidationError) as caught:
        cloud.configure(page_size=0, launch_failure_rate=1.5, call_failure_rates={"reboot": 1})

    fields = {error.field for error in caught.value.errors}
    assert fields == {"page_size", "launch_failure_rate", "call_failure_rates.reboot"}
    assert cloud.knobs() == SimulatorKnobs(seed=7)


def test_a_configure_is_recorded_in_the_ledger(cloud):
    cloud.configure(capacity=5)

    [entry] = [e for e in cloud.ledger() if e.kind == "configure"]
    assert (entry.cause, json.loads(entry.detail)) == ("external", {"capacity": 5})


def test_the_factory_rejects_unknown_options_naming_them(tmp_path):
    context = DriverContext(home=tmp_path, account="acct")
    with pytest.raises(ValidationError) as caught:
        registry.create_driver("simulator", {"fast": True, "regoin": "x"}, {}, context)
    assert [error.field for error in caught.value.errors] == ["regoin"]


def test_the_factory_sets_knobs_only_when_it_creates_the_cloud(tmp_path):
    context = DriverContext(home=tmp_path, account="acct")
    first = registry.create_driver("simulator", {"fast": True, "page_size": 7}, {}, context)
    first.cloud.configure(page_size=9)
    second = registry.create_driver("simulator", {"page_size": 3}, {"secret": "x"}, context)
    try:
        assert second.cloud.path == tmp_path / "simulator.db"
        assert second.namespace == "acct"
        assert second.cloud.knobs().page_size == 9
        assert second.cloud.knobs().boot_seconds == SimulatorKnobs.fast().boot_seconds
    finally:
        first.close()
        second.close()


def test_the_testing_factory_applies_its_knobs_even_to_an_existing_cloud(path):
    with simulated_cloud(path, capacity=1):
        pass
    with simulated_cloud(path, fast=False, page_size=5) as cloud:
        knobs = cloud.knobs()

    assert knobs == SimulatorKnobs(page_size=5)


# ------------------------------------------------------------------ durability and sharing


def test_a_restart_keeps_instances_ledger_and_knobs(path, clock):
    with SimulatedCloud(path, clock=clock) as before:
        before.configure(page_size=4)
        instance = launch(SimulatorDriver(before, "acct"))
        ledger = before.ledger()
    clock.advance(5)

    with SimulatedCloud(path, clock=clock) as after:
        assert not after.created
        assert listed(SimulatorDriver(after, "acct"), instance.uuid).state is InstanceState.RUNNING
        assert after.ledger()[: len(ledger)] == ledger
        assert after.knobs().page_size == 4


def test_threads_sharing_one_cloud_each_get_their_instances(cloud):
    def create(_: int) -> list:
        return SimulatorDriver(cloud, "acct").create_many([spec() for _ in range(10)])

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = [o for batch in pool.map(create, range(8)) for o in batch]

    assert all(outcome.error is None for outcome in outcomes)
    assert len({outcome.instance.provider_id for outcome in outcomes}) == 80
    assert len(cloud.creates_per_uuid("acct")) == 80


@pytest.mark.slow
def test_a_second_process_sees_and_changes_the_same_cloud(path):
    with simulated_cloud(path) as cloud:
        driver = SimulatorDriver(cloud, "acct")
        mine = launch(driver)
        wait_until(lambda: (found := listed(driver, mine.uuid)) and found.raw_state == "running")
        theirs = uuid.uuid4()

        run_python(
            """
            import sys, uuid
            from cloudstate.providers.base import LaunchSpec
            from cloudstate.testing import SimulatedCloud, SimulatorDriver
            with SimulatedCloud(sys.argv[1]) as cloud:
                spec = LaunchSpec(uuid.UUID(sys.argv[2]), "theirs", "img-web", "small")
                [outcome] = SimulatorDriver(cloud, "acct").create_many([spec])
                assert outcome.error is None, outcome.error
                cloud.external_stop(sys.argv[3])
            """,
            str(path),
            str(theirs),
            mine.provider_id,
        )

        assert wait_until(lambda: listed(driver, theirs), what="the other process's instance")
        assert wait_until(lambda: listed(driver, mine.uuid).state is InstanceState.STOPPED)
        assert cloud.creates_per_uuid("acct") == {mine.uuid: 1, theirs: 1}


@pytest.mark.slow
def test_knobs_changed_in_one_process_apply_in_another(path):
    with simulated_cloud(path) as cloud:
        cloud.configure(unreachable=True)

        printed = run_python(
            """
            import sys
            from cloudstate.exceptions import ProviderError
            from cloudstate.testing import SimulatedCloud, SimulatorDriver
            with SimulatedCloud(sys.argv[1]) as cloud:
                try:
                    SimulatorDriver(cloud, "acct").list_realms()
                except ProviderError as exc:
                    print(type(exc).__name__)
            """,
            str(path),
        )

    assert printed.strip() == "ProviderUnavailableError"


@pytest.mark.slow
def test_processes_racing_to_create_the_same_uuids_create_each_exactly_once(path):
    uuids = [str(uuid.uuid4()) for _ in range(20)]
    source = textwrap.dedent(
        """
        import sys, uuid
        from cloudstate.providers.base import LaunchSpec
        from cloudstate.testing import SimulatedCloud, SimulatorDriver
        with SimulatedCloud(sys.argv[1]) as cloud:
            driver = SimulatorDriver(cloud, "acct")
            for value in sys.argv[2:]:
                spec = LaunchSpec(uuid.UUID(value), "race", "img-basic", "small")
                [outcome] = driver.create_many([spec])
                assert outcome.error is None, outcome.error
        """
    )
    simulated_cloud(path).close()
    racers = [
        subprocess.Popen([sys.executable, "-c", source, str(path), *uuids], stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    errors = [racer.communicate(timeout=60)[1] for racer in racers]

    assert [racer.returncode for racer in racers] == [0, 0, 0], errors
    with SimulatedCloud(path) as cloud:
        assert cloud.creates_per_uuid("acct") == {uuid.UUID(value): 1 for value in uuids}
        assert cloud.call_counts("acct") == {"create_many": 60}
