"""The contract every driver keeps, whatever cloud is behind it (run once per harness)."""

from __future__ import annotations

import itertools
import time
import uuid

import pytest

from cloudstate.domain.hardware import HardwareProfile
from cloudstate.domain.states import Action, InstanceState, is_expected_transition
from cloudstate.exceptions import (
    ActionNotSupportedError,
    ProviderError,
    ProviderNotFoundError,
    ProviderPermanentError,
    ProviderThrottledError,
    ProviderUnavailableError,
)
from cloudstate.providers.base import TAG_UUID, Driver, Image, Realm

NOT_SUPPORTED = "action not supported by this provider: {}"


def refused_as_unsupported(harness, operation: str) -> bool:
    """For what the harness declares unsupported: check the driver refuses it cleanly."""
    if harness.supports(operation):
        return False
    if operation == "create":
        outcomes = harness.driver.create_many([harness.spec(), harness.spec()])
        assert all(isinstance(outcome.error, ActionNotSupportedError) for outcome in outcomes)
        assert all(str(outcome.error) == NOT_SUPPORTED.format("create") for outcome in outcomes)
        return True
    [instance] = harness.launch()
    with pytest.raises(ActionNotSupportedError, match=NOT_SUPPORTED.format(operation)):
        harness.driver.act(instance.provider_id, Action(operation))
    return True


def test_the_driver_implements_the_protocol_under_its_kind(harness):
    assert isinstance(harness.driver, Driver)
    assert harness.driver.kind == harness.name


def test_create_many_returns_one_outcome_per_spec_in_order(harness):
    if refused_as_unsupported(harness, "create"):
        return
    specs = [harness.spec(), harness.spec(image=harness.unknown_image), harness.spec()]

    outcomes = harness.driver.create_many(specs)

    assert [outcome.uuid for outcome in outcomes] == [spec.uuid for spec in specs]
    assert [outcome.instance is not None for outcome in outcomes] == [True, False, True]
    for spec, outcome in zip(specs[::2], outcomes[::2], strict=True):
        assert outcome.instance.uuid == spec.uuid
        assert outcome.instance.provider_id


def test_create_many_with_no_specs_creates_nothing(harness):
    assert harness.driver.create_many([]) == []


def test_an_unknown_image_is_a_permanent_error_outcome_naming_the_image(harness):
    if refused_as_unsupported(harness, "create"):
        return
    [outcome] = harness.driver.create_many([harness.spec(image=harness.unknown_image)])

    assert isinstance(outcome.error, ProviderPermanentError)
    assert harness.unknown_image in str(outcome.error)
    assert not outcome.error.retryable


def test_a_created_instance_is_listed_with_its_uuid_tag_and_both_states(harness):
    if refused_as_unsupported(harness, "create"):
        [planted] = harness.launch()
        assert planted.extra["tags"][TAG_UUID] == str(planted.uuid)
        return
    spec = harness.spec()
    [outcome] = harness.driver.create_many([spec])

    listed = harness.wait_until(lambda: harness.find(spec.uuid), what="the instance to be listed")

    assert listed.provider_id == outcome.instance.provider_id
    assert listed.uuid == spec.uuid
    assert isinstance(listed.state, InstanceState)
    assert listed.state not in (InstanceState.NEW, InstanceState.UNKNOWN)
    assert isinstance(listed.raw_state, str)
    assert listed.raw_state
    assert listed.extra["tags"][TAG_UUID] == str(spec.uuid)


def test_pagination_lists_every_instance_exactly_once(harness):
    harness.require("set_page_size")(3)
    launched = harness.launch(8)
    pages = []
    token = None
    while True:
        page = harness.driver.list_page(token)
        pages.append(page)
        token = page.next_token
        if token is None:
            break

    listed = [instance.uuid for page in pages for instance in page.instances]
    assert len(pages) >= 3
    assert all(len(page.instances) <= 3 for page in pages)
    assert sorted(listed) == sorted(instance.uuid for instance in launched)


def test_the_uuids_filter_returns_only_those_instances(harness):
    first, _, third = harness.launch(3)

    listed = harness.list_all(uuids=[first.uuid, third.uuid])

    assert sorted(i.uuid for i in listed) == sorted([first.uuid, third.uuid])
    assert harness.list_all(uuids=[uuid.uuid4()]) == []


def test_stop_reaches_stopped_and_start_reaches_running_again(harness):
    if refused_as_unsupported(harness, "stop") | refused_as_unsupported(harness, "start"):
        return
    [instance] = harness.launch()
    harness.wait_for_state(instance.uuid, InstanceState.RUNNING)

    harness.driver.act(instance.provider_id, Action.STOP)
    harness.wait_for_state(instance.uuid, InstanceState.STOPPED)
    harness.driver.act(instance.provider_id, Action.START)

    assert harness.wait_for_state(instance.uuid, InstanceState.RUNNING)


def test_reboot_passes_through_rebooting_and_returns_to_running(harness):
    if refused_as_unsupported(harness, "reboot"):
        return
    [instance] = harness.launch()
    harness.wait_for_state(instance.uuid, InstanceState.RUNNING)

    harness.driver.act(instance.provider_id, Action.REBOOT)

    harness.wait_for_state(instance.uuid, InstanceState.RUNNING)
    if harness.history is not None:
        assert harness.history(instance.provider_id)[-2:] == [
            InstanceState.REBOOTING,
            InstanceState.RUNNING,
        ]


def test_destroy_ends_in_terminated_or_gone_through_shutting_down(harness):
    if refused_as_unsupported(harness, "destroy"):
        return
    [instance] = harness.launch()

    harness.driver.act(instance.provider_id, Action.DESTROY)

    harness.wait_until(
        lambda: (
            (found := harness.find(instance.uuid)) is None
            or found.state is InstanceState.TERMINATED
        ),
        what="the instance to be terminated or gone",
    )
    if harness.history is not None:
        assert harness.history(instance.provider_id)[-2:] == [
            InstanceState.SHUTTING_DOWN,
            InstanceState.TERMINATED,
        ]


@pytest.mark.parametrize("action", list(Action))
def test_acting_on_an_unknown_id_is_provider_not_found(harness, action):
    """Unless the driver cannot do the action at all: that is said first, for any id."""
    expected = ProviderNotFoundError if harness.supports(action) else ActionNotSupportedError
    with pytest.raises(expected):
        harness.driver.act("i-0000000000000dead", action)


def test_the_catalogue_is_typed_and_offers_what_the_harness_launches(harness):
    realms = harness.driver.list_realms()
    images = harness.driver.list_images()
    profiles = harness.driver.list_hardware_profiles()

    assert realms
    assert all(isinstance(realm, Realm) for realm in realms)
    assert images
    assert all(isinstance(image, Image) for image in images)
    assert profiles
    assert all(isinstance(profile, HardwareProfile) for profile in profiles)
    assert harness.image in {image.id for image in images}
    assert harness.hardware_profile in {profile.id for profile in profiles}


def test_throttling_is_reported_as_throttling_and_is_retryable(harness):
    harness.require("make_throttled")()
    errors: list[ProviderError] = []
    for _ in range(5):
        try:
            harness.driver.list_realms()
        except ProviderError as exc:
            errors.append(exc)

    assert errors, "five calls in a row were never throttled"
    assert all(type(error) is ProviderThrottledError for error in errors)
    assert all(error.retryable for error in errors)


def test_a_new_instance_is_invisible_for_the_configured_delay_then_visible(harness):
    delay = 0.4
    harness.require("set_visibility_delay")(delay)
    spec = harness.spec()
    started = time.monotonic()
    [outcome] = harness.driver.create_many([spec])

    assert harness.find(spec.uuid) is None
    assert spec.uuid not in {instance.uuid for instance in harness.list_all()}
    with pytest.raises(ProviderNotFoundError):
        harness.driver.act(outcome.instance.provider_id, Action.STOP)
    harness.wait_until(lambda: harness.find(spec.uuid), what="the instance to become visible")
    assert time.monotonic() - started >= delay * 0.9


def test_an_external_stop_shows_up_as_stopped(harness):
    external_stop = harness.require("external_stop")
    [instance] = harness.launch()
    harness.wait_for_state(instance.uuid, InstanceState.RUNNING)

    external_stop(instance.provider_id)

    assert harness.wait_for_state(instance.uuid, InstanceState.STOPPED)


@pytest.mark.parametrize(
    "call",
    [
        lambda d: d.create_many([]),
        lambda d: d.list_page(),
        lambda d: d.act("i-0000000000000dead", Action.STOP),
        lambda d: d.list_realms(),
        lambda d: d.list_images(),
        lambda d: d.list_hardware_profiles(),
    ],
    ids=["create_many", "list_page", "act", "list_realms", "list_images", "profiles"],
)
def test_an_unreachable_cloud_is_provider_unavailable_on_every_call(harness, call):
    harness.require("make_unreachable")()

    with pytest.raises(ProviderUnavailableError) as caught:
        call(harness.driver)
    assert caught.value.retryable


def test_observed_states_are_instance_states_moving_along_the_lifecycle(harness):
    [instance] = harness.launch()
    observed: list[InstanceState] = []

    def watch_until(*targets: InstanceState) -> None:
        def reached() -> bool:
            found = harness.find(instance.uuid)
            state = InstanceState.TERMINATED if found is None else found.state
            if not observed or observed[-1] is not state:
                observed.append(state)
            return state in targets

        harness.wait_until(reached, what=f"one of {targets}")

    watch_until(InstanceState.RUNNING)
    for action, target in [
        (Action.STOP, InstanceState.STOPPED),
        (Action.START, InstanceState.RUNNING),
        (Action.REBOOT, InstanceState.RUNNING),
        (Action.DESTROY, InstanceState.TERMINATED),
    ]:
        if not harness.supports(action):
            with pytest.raises(ActionNotSupportedError):
                harness.driver.act(instance.provider_id, action)
            continue
        harness.driver.act(instance.provider_id, action)
        watch_until(target)

    assert all(isinstance(state, InstanceState) for state in observed)
    assert InstanceState.UNKNOWN not in observed
    steps = list(itertools.pairwise(observed))
    assert all(is_expected_transition(old, new) for old, new in steps), observed
