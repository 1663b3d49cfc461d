"""The seam between the driver contract tests and one driver.

A harness gives the tests a driver, launch specs valid for that driver's catalogue, and a way to
wait. What only some clouds let a test do (stop an instance behind our back, throttle, cut the
line, delay visibility, shrink pages, read the cloud's own history) is an optional capability:
a test that needs one the harness lacks is skipped with the reason, not failed.

What a driver cannot do at all (``unsupported``: "create" or an action's name) is not skipped:
the tests then check that it is refused with ``ActionNotSupportedError``. A harness whose
driver cannot create makes its instances outside the driver (``plant``), as a person would.
"""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from cloudstate.domain.states import InstanceState
from cloudstate.providers.base import Driver, LaunchSpec, ProviderInstance
from cloudstate.testing import wait_until

T = TypeVar("T")

_names = itertools.count(1)


@dataclass
class DriverHarness:
    name: str
    driver: Driver
    image: str
    hardware_profile: str
    unknown_image: str = "img-does-not-exist"
    timeout: float = 10.0
    # Optional capabilities; None means "this cloud cannot be made to do that".
    external_stop: Callable[[str], None] | None = None
    make_throttled: Callable[[], None] | None = None
    make_unreachable: Callable[[], None] | None = None
    set_visibility_delay: Callable[[float], None] | None = None
    set_page_size: Callable[[int], None] | None = None
    history: Callable[[str], list[InstanceState]] | None = None  # states the cloud went through
    plant: Callable[[LaunchSpec], None] | None = None  # create one of ours behind the driver
    tick: Callable[[], None] | None = None  # a fake cloud finishing what it was doing, per poll
    unsupported: frozenset[str] = frozenset()  # "create" and/or action names
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def require(self, capability: str) -> Any:
        """The capability, or skip the test saying which harness lacks what."""
        found = getattr(self, capability)
        if found is None:
            pytest.skip(f"the {self.name} harness has no {capability} capability")
        return found

    def supports(self, operation: str) -> bool:
        return operation not in self.unsupported

    def spec(self, **changes: Any) -> LaunchSpec:
        """A launch spec this driver accepts; ``changes`` override any field."""
        spec = LaunchSpec(
            uuid=uuid.uuid4(),
            name=f"contract-{next(_names)}",
            image=self.image,
            hardware_profile=self.hardware_profile,
            labels={"suite": "contract"},
        )
        return dataclasses.replace(spec, **changes)

    def wait_until(self, predicate: Callable[[], T | None], what: str = "") -> T:
        tick = self.tick

        def polled() -> T | None:
            if tick is not None:
                tick()
            return predicate()

        return wait_until(polled, self.timeout, what=what)

    def list_all(self, uuids: Sequence[uuid.UUID] | None = None) -> list[ProviderInstance]:
        """Every listed instance, following ``next_token`` to the last page."""
        found: list[ProviderInstance] = []
        token: str | None = None
        while True:
            page = self.driver.list_page(token, uuids=uuids)
            found.extend(page.instances)
            token = page.next_token
            if token is None:
                return found

    def find(self, instance_uuid: uuid.UUID) -> ProviderInstance | None:
        listed = self.list_all(uuids=[instance_uuid])
        return listed[0] if listed else None

    def launch(self, count: int = 1) -> list[ProviderInstance]:
        """Create ``count`` instances and wait until every one is listed."""
        specs = [self.spec() for _ in range(count)]
        if self.supports("create"):
            outcomes = self.driver.create_many(specs)
            assert [outcome.error for outcome in outcomes] == [None] * count
        else:
            for spec in specs:
                self.require("plant")(spec)
        uuids = [spec.uuid for spec in specs]
        return self.wait_until(
            lambda: listed if len(listed := self.list_all(uuids=uuids)) == count else None,
            what=f"{count} new instance(s) to be listed",
        )

    def wait_for_state(self, instance_uuid: uuid.UUID, *states: InstanceState) -> ProviderInstance:
        """Wait until the instance is listed in one of ``states``."""

        def reached() -> ProviderInstance | None:
            found = self.find(instance_uuid)
            return found if found is not None and found.state in states else None

        return self.wait_until(reached, what=f"instance {instance_uuid} to be {states}")

    def close(self) -> None:
        for cleanup in reversed(self.cleanups):
            cleanup()
