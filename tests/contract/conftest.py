"""The ``harness`` fixture: every contract test runs once per driver listed in ``HARNESSES``."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import DriverHarness

from cloudstate.providers import registry
from cloudstate.providers.base import DriverContext, LaunchSpec, normalize_state
from cloudstate.providers.simulator import STATE_MAP, SimulatedCloud
from moto_server import CREDENTIALS, REGION, FaultProxy, shared_moto


def simulator_harness(home: Path) -> DriverHarness:
    """The simulator in fast mode, made through the registry as the engine makes it.

    The test's controls go through a second ``SimulatedCloud`` on the same file, as another
    process would: whatever they change, the driver sees only through the shared file.
    """
    driver = registry.create_driver(
        "simulator", {"fast": True}, {}, DriverContext(home=home, account="contract")
    )
    console = SimulatedCloud(home / "simulator.db")

    def history(provider_id: str) -> list:
        return [
            normalize_state(entry.to_state, STATE_MAP)
            for entry in console.ledger("contract")
            if entry.provider_id == provider_id and entry.to_state is not None
        ]

    return DriverHarness(
        name="simulator",
        driver=driver,
        image="img-basic",
        hardware_profile="small",
        external_stop=console.external_stop,
        make_throttled=lambda: console.configure(throttle_rate=0.001, throttle_burst=1),
        make_unreachable=lambda: console.configure(unreachable=True),
        set_visibility_delay=lambda seconds: console.configure(visibility_delay_seconds=seconds),
        set_page_size=lambda size: console.configure(page_size=size),
        history=history,
        cleanups=[console.close, driver.close],
    )


def ec2_harness(home: Path) -> DriverHarness:
    """The ``ec2`` driver against moto's EC2 server (reset for each test), through a fault
    proxy that can throttle or go away, made through the registry as the engine makes it.

    What moto cannot be made to do is left out (and those tests skip saying so): new
    instances are listed at once (no visibility delay), and moto keeps no history of the
    states an instance went through (its transitions are instantaneous; EC2 has no
    ``rebooting`` state to see anyway).
    """
    moto = shared_moto()
    moto.reset()
    image = moto.register_image()
    proxy = FaultProxy(moto.url)
    driver = registry.create_driver(
        "ec2",
        {"region": REGION, "endpoint_url": proxy.url, "instance_types": ["t3.micro"]},
        CREDENTIALS,
        DriverContext(home=home, account="contract"),
    )
    outside = moto.ec2  # another EC2 client, as a person in the AWS console would be

    def set_page_size(size: int) -> None:
        # Below EC2's minimum MaxResults (5), which the ec2 config refuses but moto accepts:
        # the contract's small pages exercise the driver's NextToken handling all the same.
        driver.page_size = size  # type: ignore[attr-defined]

    return DriverHarness(
        name="ec2",
        driver=driver,
        image=image,
        hardware_profile="t3.micro",
        unknown_image="ami-00000000deadbeef0",
        external_stop=lambda provider_id: outside.stop_instances(InstanceIds=[provider_id]),
        make_throttled=proxy.throttle,
        make_unreachable=proxy.stop,
        set_page_size=set_page_size,
        cleanups=[proxy.stop, driver.close],
    )


def libcloud_dummy_harness(home: Path) -> DriverHarness:
    """Libcloud's ``dummy`` driver (in memory, per driver), through the registry.

    It creates, reboots and destroys, but cannot stop or start: the contract checks those are
    refused as unsupported. Two things the harness plays itself, being the only way: the
    dummy's nodes never come back from a reboot (its documentation says so), so each poll
    finishes a reboot as a hypervisor would (``tick``); and an "external stop" sets a node's
    state as the provider's console would.
    """
    from libcloud.compute.types import NodeState

    driver = registry.create_driver(
        "libcloud",
        {"driver": "dummy", "kwargs": {"creds": 0}},
        {},
        DriverContext(home=home, account="contract"),
    )
    dummy = driver.node_driver  # type: ignore[attr-defined]

    def set_state(provider_id: str, state: NodeState, when: NodeState | None = None) -> None:
        for node in dummy.list_nodes():
            if str(node.id) == provider_id and when in (None, node.state):
                node.state = state

    def finish_reboots() -> None:
        for node in dummy.list_nodes():
            set_state(str(node.id), NodeState.RUNNING, when=NodeState.REBOOTING)

    def set_page_size(size: int) -> None:
        driver.page_size = size  # type: ignore[attr-defined]

    return DriverHarness(
        name="libcloud",
        driver=driver,
        image="1",
        hardware_profile="1",
        unsupported=frozenset({"start", "stop"}),
        tick=finish_reboots,
        external_stop=lambda provider_id: set_state(provider_id, NodeState.STOPPED),
        set_page_size=set_page_size,
        cleanups=[driver.close],
    )


def libcloud_libvirt_harness(home: Path) -> DriverHarness:
    """Libcloud's ``libvirt`` driver on libvirt's in-memory ``test:///default`` hypervisor.

    Libcloud's libvirt driver cannot create domains, so the contract checks that create is
    refused as unsupported, and the harness defines and starts domains through libvirt itself
    (named ``<name>--cs-<uuid>``, as the driver's name fallback reads them) for the rest.
    ``test:///default`` is one hypervisor per process: each test removes the domains it made.
    Skipped without the libvirt binding, except under CI=true, where it must run.
    """
    if importlib.util.find_spec("libvirt") is None:
        reason = "libvirt-python is not installed (pip install 'cloudstate[libvirt]')"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    import libvirt

    from cloudstate.providers.libcloud import name_with_uuid

    driver = registry.create_driver(
        "libcloud",
        {"driver": "libvirt", "kwargs": {"uri": "test:///default"}, "location": "test-host"}
        | {"image": "test-image", "size": "test-size"},
        {},
        DriverContext(home=home, account="contract"),
    )
    hypervisor = libvirt.open("test:///default")

    def plant(spec: LaunchSpec) -> None:
        name = name_with_uuid(spec.name, spec.uuid)
        domain = hypervisor.defineXML(
            f"<domain type='test'><name>{name}</name><memory>65536</memory><vcpu>1</vcpu>"
            "<os><type>hvm</type></os></domain>"
        )
        domain.create()

    def remove_planted() -> None:
        for domain in hypervisor.listAllDomains():
            if "--cs-" in domain.name():
                if domain.isActive():
                    domain.destroy()
                if domain.isPersistent():
                    domain.undefine()
        hypervisor.close()

    def set_page_size(size: int) -> None:
        driver.page_size = size  # type: ignore[attr-defined]

    return DriverHarness(
        name="libcloud",
        driver=driver,
        image="test-image",
        hardware_profile="test-size",
        unsupported=frozenset({"create"}),
        plant=plant,
        external_stop=lambda provider_id: hypervisor.lookupByUUIDString(provider_id).shutdown(),
        set_page_size=set_page_size,
        cleanups=[remove_planted, driver.close],
    )


HARNESSES: dict[str, Callable[[Path], DriverHarness]] = {
    "ec2": ec2_harness,
    "libcloud-dummy": libcloud_dummy_harness,
    "libcloud-libvirt": libcloud_libvirt_harness,
    "simulator": simulator_harness,
}


@pytest.fixture(params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DriverHarness]:
    made = HARNESSES[request.param](tmp_path)
    yield made
    made.close()
