"""The ``libcloud`` provider beyond the shared contract: config, UUID placement, states, errors.

Run against Libcloud's real ``dummy`` driver (subclassed where a test needs a driver that keeps
metadata or names, as real clouds do); the libvirt driver is covered by the contract suite.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import requests
from libcloud.common.exceptions import RateLimitReachedError
from libcloud.common.types import (
    InvalidCredsError,
    LibcloudError,
    ServiceUnavailableError,
)
from libcloud.common.types import ProviderError as LibcloudProviderError
from libcloud.compute.base import Node
from libcloud.compute.drivers.dummy import DummyNodeDriver
from libcloud.compute.types import NodeState

from cloudstate.domain.states import Action, InstanceState
from cloudstate.exceptions import (
    ActionNotSupportedError,
    ProviderAuthError,
    ProviderNotFoundError,
    ProviderPermanentError,
    ProviderThrottledError,
    ProviderUnavailableError,
    ValidationError,
)
from cloudstate.providers import registry
from cloudstate.providers.base import TAG_UUID, TAG_UUID_ALT, DriverContext, LaunchSpec
from cloudstate.providers.libcloud import (
    STATE_MAP,
    LibcloudDriver,
    name_with_uuid,
    translate,
    uuid_of,
)
from cloudstate.providers.libcloud.quirks import Quirks
from cloudstate.providers.libcloud.settings import parse_settings


def make(home: Path, config: dict | None = None, credentials: dict | None = None):
    return registry.create_driver(
        "libcloud",
        {"driver": "dummy", "kwargs": {"creds": 0}} if config is None else config,
        credentials or {},
        DriverContext(home=home, account="it"),
    )


def spec(**changes) -> LaunchSpec:
    fields = {"uuid": uuid.uuid4(), "name": "web", "image": "1", "hardware_profile": "1"}
    return LaunchSpec(**{**fields, **changes})


class KeepsMetadata(DummyNodeDriver):
    """A dummy that, like OpenStack, takes ``ex_metadata`` and reports it back."""

    def create_node(self, name, size, image, ex_metadata=None):
        node = super().create_node(name, size, image)
        node.extra = {"metadata": dict(ex_metadata or {})}
        return node


class KeepsNames(DummyNodeDriver):
    """A dummy that, like DigitalOcean, keeps the name it is given and nothing else."""

    def create_node(self, name, size, image):
        node = super().create_node(name, size, image)
        node.name = name
        return node


def wrap(node_driver, home: Path, **config) -> LibcloudDriver:
    settings = parse_settings({"driver": "dummy", **config})
    return LibcloudDriver(node_driver, settings, Quirks("dummy"), home / "side.json")


# config -------------------------------------------------------------------------------------


def test_the_registry_offers_the_libcloud_kind():
    assert "libcloud" in registry.kinds()


def test_an_unknown_driver_is_refused_naming_the_valid_ones(tmp_path):
    with pytest.raises(ValidationError) as caught:
        make(tmp_path, {"driver": "nimbus-9000"})

    [error] = caught.value.errors
    assert error.field == "driver"
    assert "openstack" in error.message
    assert "libvirt" in error.message


def test_every_bad_option_is_reported_at_once(tmp_path):
    with pytest.raises(ValidationError) as caught:
        make(tmp_path, {"driver": "dummy", "colour": 1, "uuid_in": "dns", "page_size": 0})

    assert {e.field for e in caught.value.errors} == {"colour", "uuid_in", "page_size"}


def test_credentials_are_merged_into_the_constructor_but_may_not_shadow_kwargs(tmp_path):
    driver = make(tmp_path, {"driver": "dummy"}, {"creds": "5"})
    assert driver.node_driver.creds == "5"

    with pytest.raises(ValidationError) as caught:
        make(tmp_path, {"driver": "dummy", "kwargs": {"creds": 1}}, {"creds": "s3cr3t-value"})
    assert caught.value.errors[0].field == "creds"
    assert "s3cr3t-value" not in str(caught.value)


def test_wrong_constructor_arguments_are_a_validation_error_on_kwargs(tmp_path):
    with pytest.raises(ValidationError) as caught:
        make(tmp_path, {"driver": "dummy", "kwargs": {"creds": 0, "colour": "red"}})
    assert caught.value.errors[0].field == "kwargs"


# where our uuid lives -----------------------------------------------------------------------


def test_a_driver_taking_ex_metadata_gets_the_uuid_there_and_lists_it_back(tmp_path):
    driver = wrap(KeepsMetadata(0), tmp_path)
    wanted = spec(labels={"team": "a"})

    driver.create_many([wanted])

    assert driver.uuid_in == "metadata"
    node = driver.node_driver.list_nodes()[-1]
    assert node.extra["metadata"] == {"team": "a", TAG_UUID_ALT: str(wanted.uuid)}
    assert [i.uuid for i in driver.list_page(uuids=[wanted.uuid]).instances] == [wanted.uuid]
    assert not (tmp_path / "side.json").exists()


def test_a_driver_keeping_only_names_gets_the_uuid_as_a_name_suffix(tmp_path):
    driver = wrap(KeepsNames(0), tmp_path)
    wanted = spec(name="a-rather-long-instance-name-indeed")

    driver.create_many([wanted])

    node = driver.node_driver.list_nodes()[-1]
    assert node.name == f"a-rather-long-instance--cs-{wanted.uuid}"
    assert len(node.name) <= 63
    assert driver.list_page().instances[0].uuid == wanted.uuid
    assert not (tmp_path / "side.json").exists()


def test_a_driver_dropping_name_and_metadata_keeps_the_uuid_in_the_side_file(tmp_path):
    driver = make(tmp_path)
    wanted = spec()

    [outcome] = driver.create_many([wanted])

    side = json.loads((tmp_path / "libcloud-it.uuids.json").read_text())
    assert side == {outcome.instance.provider_id: str(wanted.uuid)}
    assert [i.uuid for i in driver.list_page().instances] == [wanted.uuid]


@pytest.mark.parametrize(
    "extra",
    [
        {"metadata": {TAG_UUID_ALT: "U"}},
        {"metadata": {TAG_UUID: "U"}},
        {"tags": {TAG_UUID_ALT: "U"}},
        {"metadata": {"items": [{"key": TAG_UUID_ALT, "value": "U"}]}},
    ],
    ids=["metadata", "metadata-colon", "tags", "gce-items"],
)
def test_the_uuid_is_read_from_metadata_tags_or_gce_items(extra):
    ours = uuid.uuid4()
    filled = json.loads(json.dumps(extra).replace('"U"', f'"{ours}"'))
    node = Node("7", "plain", NodeState.RUNNING, [], [], None, extra=filled)
    assert uuid_of(node) == ours


def test_nodes_without_our_marker_are_not_ours():
    assert uuid_of(Node("1", "dummy-1", NodeState.RUNNING, [], [], None, extra={})) is None
    garbled = Node("2", "x--cs-not-a-uuid", "running", [], [], None, extra={"tags": {}})
    assert uuid_of(garbled) is None
    named = Node("3", name_with_uuid("x", ours := uuid.uuid4()), "running", [], [], None)
    assert uuid_of(named) == ours


# states -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node_state", "expected"),
    [
        (NodeState.RUNNING, InstanceState.RUNNING),
        (NodeState.PENDING, InstanceState.PENDING),
        (NodeState.STARTING, InstanceState.PENDING),
        (NodeState.REBOOTING, InstanceState.REBOOTING),
        (NodeState.STOPPING, InstanceState.STOPPING),
        (NodeState.STOPPED, InstanceState.STOPPED),
        (NodeState.SUSPENDED, InstanceState.STOPPED),
        (NodeState.PAUSED, InstanceState.STOPPED),
        (NodeState.TERMINATED, InstanceState.TERMINATED),
        (NodeState.ERROR, InstanceState.ERROR),
        (NodeState.UNKNOWN, InstanceState.UNKNOWN),
        (NodeState.MIGRATING, InstanceState.UNKNOWN),
        (NodeState.RECONFIGURING, InstanceState.UNKNOWN),
    ],
)
def test_libcloud_node_states_map_to_instance_states(tmp_path, node_state, expected):
    driver = make(tmp_path)
    driver.create_many([spec()])
    driver.node_driver.list_nodes()[-1].state = node_state

    [listed] = driver.list_page().instances

    assert listed.state is expected
    assert listed.raw_state == node_state.value


def test_an_unheard_of_raw_state_is_unknown_without_crashing(tmp_path):
    driver = make(tmp_path)
    driver.create_many([spec()])
    driver.node_driver.list_nodes()[-1].state = "hibernating-on-the-moon"

    [listed] = driver.list_page().instances

    assert listed.state is InstanceState.UNKNOWN
    assert listed.raw_state == "hibernating-on-the-moon"
    assert set(STATE_MAP.values()) <= set(InstanceState)


# errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (InvalidCredsError("bad key"), ProviderAuthError),
        (RateLimitReachedError(), ProviderThrottledError),
        (ServiceUnavailableError("down"), ProviderUnavailableError),
        (requests.exceptions.ConnectionError("refused"), ProviderUnavailableError),
        (ConnectionRefusedError("refused"), ProviderUnavailableError),
        (LibcloudProviderError("slow down", 429), ProviderThrottledError),
        (LibcloudProviderError("boom", 503), ProviderUnavailableError),
        (LibcloudProviderError("no such server", 404), ProviderNotFoundError),
        (LibcloudProviderError("forbidden", 403), ProviderAuthError),
        (LibcloudError("quota exceeded for cores"), ProviderPermanentError),
        (NotImplementedError("not here"), ActionNotSupportedError),
    ],
)
def test_libcloud_errors_are_translated_into_the_provider_error_tree(raised, expected):
    assert type(translate(raised)) is expected


def test_a_failing_cloud_fails_every_call_with_the_translated_error(tmp_path, monkeypatch):
    driver = make(tmp_path)

    def throttled(*_args, **_kwargs):
        raise RateLimitReachedError()

    monkeypatch.setattr(driver.node_driver, "list_nodes", throttled)
    monkeypatch.setattr(driver.node_driver, "list_locations", throttled)

    for call in (driver.list_page, driver.list_realms, lambda: driver.act("3", Action.REBOOT)):
        with pytest.raises(ProviderThrottledError):
            call()


def test_a_refusal_mid_batch_is_that_instance_s_outcome_only(tmp_path, monkeypatch):
    driver = make(tmp_path)
    real = driver.node_driver.create_node
    answers = iter([None, LibcloudError("quota exceeded"), None])

    def create_node(**kwargs):
        answer = next(answers)
        if answer is not None:
            raise answer
        return real(**kwargs)

    monkeypatch.setattr(driver.node_driver, "create_node", create_node)

    outcomes = driver.create_many([spec(), spec(), spec()])

    assert [o.error is None for o in outcomes] == [True, False, True]
    assert "quota exceeded" in str(outcomes[1].error)


def test_an_action_raising_not_implemented_is_reported_as_not_supported(tmp_path, monkeypatch):
    driver = make(tmp_path)
    [outcome] = driver.create_many([spec()])

    def reboot_node(_node):
        raise NotImplementedError("reboot is not implemented for this driver")

    monkeypatch.setattr(driver.node_driver, "reboot_node", reboot_node)

    with pytest.raises(
        ActionNotSupportedError, match=r"^action not supported by this provider: reboot$"
    ):
        driver.act(outcome.instance.provider_id, Action.REBOOT)


def test_an_unknown_size_is_a_permanent_outcome_naming_it(tmp_path):
    [outcome] = make(tmp_path).create_many([spec(hardware_profile="huge")])

    assert isinstance(outcome.error, ProviderPermanentError)
    assert "'huge'" in str(outcome.error)
