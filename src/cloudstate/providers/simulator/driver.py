"""The ``simulator`` driver: the ``Driver`` interface over one namespace of a ``SimulatedCloud``.

A namespace is an account of the simulated cloud: drivers in different namespaces share the
realms and the knobs but never see each other's instances.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cloudstate.domain.hardware import HardwareProfile
from cloudstate.domain.states import Action
from cloudstate.exceptions import FieldError, ValidationError
from cloudstate.providers.base import (
    DriverContext,
    DriverFactory,
    Image,
    LaunchOutcome,
    LaunchSpec,
    Page,
    Realm,
)
from cloudstate.providers.simulator.cloud import SimulatedCloud
from cloudstate.providers.simulator.knobs import SimulatorKnobs, knob_names

DEFAULT_FILE = "simulator.db"
DEFAULT_NAMESPACE = "default"
_OPTIONS = ("path", "namespace", "fast")


class SimulatorDriver:
    """Implements ``cloudstate.providers.base.Driver``; raises only ``ProviderError``s."""

    kind = "simulator"

    def __init__(self, cloud: SimulatedCloud, namespace: str, *, owns_cloud: bool = False) -> None:
        """``owns_cloud``: ``close()`` closes the cloud too (the factory's drivers do)."""
        self.cloud = cloud
        self.namespace = namespace
        self._owns_cloud = owns_cloud

    def create_many(self, specs: Sequence[LaunchSpec]) -> list[LaunchOutcome]:
        return self.cloud.create_many(self.namespace, specs)

    def list_page(
        self, token: str | None = None, *, uuids: Sequence[uuid.UUID] | None = None
    ) -> Page:
        return self.cloud.list_page(self.namespace, token, uuids=uuids)

    def act(self, provider_id: str, action: Action) -> None:
        self.cloud.act(self.namespace, provider_id, action)

    def list_realms(self) -> list[Realm]:
        return self.cloud.list_realms(self.namespace)

    def list_images(self) -> list[Image]:
        return self.cloud.list_images(self.namespace)

    def list_hardware_profiles(self) -> list[HardwareProfile]:
        return self.cloud.list_hardware_profiles(self.namespace)

    def close(self) -> None:
        if self._owns_cloud:
            self.cloud.close()


def create_driver(
    config: Mapping[str, Any], credentials: Mapping[str, str], context: DriverContext
) -> SimulatorDriver:
    """The registry's factory for kind ``simulator``.

    Config: ``path`` (default ``<home>/simulator.db``), ``namespace`` (default: the account
    name), ``fast`` (test timings) and any knob, all of which are *initial* values used only
    when the cloud file is new, so a shared cloud's knobs are not reset by each new driver.
    The simulator needs no credentials; they are ignored.
    """
    _check_options(config)
    knob_values = {key: value for key, value in config.items() if key not in _OPTIONS}
    fast = config.get("fast", False)
    if not isinstance(fast, bool):
        raise ValidationError(f"must be true or false, got {fast!r}", field="fast")
    initial = SimulatorKnobs.fast(**knob_values) if fast else SimulatorKnobs(**knob_values)
    path = Path(config.get("path") or context.home / DEFAULT_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    namespace = str(config.get("namespace") or context.account or DEFAULT_NAMESPACE)
    return SimulatorDriver(SimulatedCloud(path, initial=initial), namespace, owns_cloud=True)


_FACTORY: DriverFactory = create_driver
"""Lets mypy prove that ``create_driver`` (and so ``SimulatorDriver``) keeps the protocol."""


def _check_options(config: Mapping[str, Any]) -> None:
    known = (*_OPTIONS, *knob_names())
    unknown = sorted(key for key in config if key not in known)
    if unknown:
        raise ValidationError(
            [
                FieldError(key, f"unknown simulator option; options: {', '.join(known)}")
                for key in unknown
            ]
        )
