"""The driver interface every provider implements, and the types that cross it.

The interface is deliberately small (Libcloud's lesson): create many, list a page, act, and
describe the catalogue. Everything a driver returns is normalized here: states through a
``STATE_MAP.get(raw, UNKNOWN)`` so an unmapped provider state never crashes, errors as the
``ProviderError`` tree from ``cloudstate.exceptions`` (translated at the driver, ``from exc``).
Provider-only extras are named ``ex_*``.

Idempotency: every instance a driver creates carries the cloudstate UUID as a tag/metadata
(``TAG_UUID``), and ``list_page(uuids=...)`` finds instances by it, so the launcher can look
before it retries. Drivers that have a native idempotency token (EC2 ``ClientToken``) also use
``client_token(uuid)``.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cloudstate.domain.hardware import HardwareProfile
from cloudstate.domain.states import Action, InstanceState
from cloudstate.exceptions import (
    ProviderAuthError,
    ProviderError,
    ProviderThrottledError,
    ProviderUnavailableError,
)

TAG_UUID = "cloudstate:uuid"
"""Tag (or metadata key) that marks an instance as ours and carries its cloudstate UUID."""

TAG_UUID_ALT = "cloudstate-uuid"
"""Spelling for clouds whose tag keys may not contain ':'."""


def client_token(instance_uuid: uuid.UUID) -> str:
    """A stable idempotency token for one instance (≤ 64 ASCII characters, as EC2 requires)."""
    return "cs-" + hashlib.sha256(instance_uuid.bytes).hexdigest()[:48]


def normalize_state(raw: str | None, mapping: Mapping[str, InstanceState]) -> InstanceState:
    """Map a raw provider state; anything unmapped (or missing) is ``unknown``, never an error."""
    if raw is None:
        return InstanceState.UNKNOWN
    return mapping.get(raw.lower(), InstanceState.UNKNOWN)


@dataclass(frozen=True)
class LaunchSpec:
    """One instance to create, as the launcher hands it to a driver."""

    uuid: uuid.UUID
    name: str
    image: str
    hardware_profile: str
    memory: int | None = None
    cpu: int | None = None
    storage: int | None = None
    keyname: str | None = None
    realm: str | None = None
    user_data: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderInstance:
    """One instance as the provider reports it, already normalized."""

    provider_id: str
    uuid: uuid.UUID | None  # from our tag; None when the instance is not ours
    state: InstanceState
    raw_state: str
    public_addresses: tuple[str, ...] = ()
    private_addresses: tuple[str, ...] = ()
    realm: str | None = None
    image: str | None = None
    hardware_profile: str | None = None
    launched_at: datetime | None = None
    key_fingerprint: str | None = None
    key_material: str | None = None  # a generated private key, when the provider returns one
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LaunchOutcome:
    """The result of creating one instance: the instance, or the error that refused it."""

    uuid: uuid.UUID
    instance: ProviderInstance | None = None
    error: ProviderError | None = None

    def __post_init__(self) -> None:
        if (self.instance is None) == (self.error is None):
            raise ValueError("a launch outcome has exactly one of instance and error")


@dataclass(frozen=True)
class Page:
    """One page of a listing; ``next_token`` is None on the last page."""

    instances: tuple[ProviderInstance, ...]
    next_token: str | None = None


@dataclass(frozen=True)
class Realm:
    """An availability zone / location."""

    name: str
    available: bool
    reason: str = ""


@dataclass(frozen=True)
class Image:
    id: str
    name: str = ""


WHOLE_CALL_ERRORS: tuple[type[ProviderError], ...] = (
    ProviderThrottledError,
    ProviderUnavailableError,
    ProviderAuthError,
)
"""Errors that say nothing about one instance but about the cloud: they stop a batch."""


def create_each(
    specs: Sequence[LaunchSpec], create_one: Callable[[LaunchSpec], ProviderInstance]
) -> list[LaunchOutcome]:
    """``create_many`` for clouds that create one instance per call.

    Each spec gets its outcome; a throttled, unreachable or credentials error stops the batch:
    raised when nothing was sent yet (so the caller backs off and looks up before retrying),
    otherwise given as the outcome of every spec not yet sent.
    """
    outcomes: list[LaunchOutcome] = []
    for index, spec in enumerate(specs):
        try:
            outcomes.append(LaunchOutcome(spec.uuid, instance=create_one(spec)))
        except WHOLE_CALL_ERRORS as exc:
            if index == 0:
                raise
            outcomes += [LaunchOutcome(rest.uuid, error=exc) for rest in specs[index:]]
            break
        except ProviderError as exc:
            outcomes.append(LaunchOutcome(spec.uuid, error=exc))
    return outcomes


@runtime_checkable
class Driver(Protocol):
    """What the engine needs from a cloud. Every method raises only ``ProviderError``s."""

    kind: str

    def create_many(self, specs: Sequence[LaunchSpec]) -> list[LaunchOutcome]:
        """Create instances; one outcome per spec, in order. Partial success is normal.

        Raises only when the whole call failed (throttled, unreachable, auth): then nothing
        can be assumed about which instances exist, and the caller must look them up by UUID.
        """
        ...

    def list_page(
        self, token: str | None = None, *, uuids: Sequence[uuid.UUID] | None = None
    ) -> Page:
        """One page of the instances tagged as ours (optionally only these UUIDs).

        Recently terminated instances may still be listed (as ``terminated``); instances the
        provider has forgotten are simply absent.
        """
        ...

    def act(self, provider_id: str, action: Action) -> None:
        """Start, stop, reboot or destroy one instance; returns once the provider accepted."""
        ...

    def list_realms(self) -> list[Realm]: ...

    def list_images(self) -> list[Image]: ...

    def list_hardware_profiles(self) -> list[HardwareProfile]: ...

    def close(self) -> None:
        """Release connections and files; the driver is not used afterwards."""
        ...


@dataclass(frozen=True)
class DriverContext:
    """What a driver factory gets besides the account's own settings."""

    home: Path
    account: str = ""


class DriverFactory(Protocol):
    def __call__(
        self,
        config: Mapping[str, Any],
        credentials: Mapping[str, str],
        context: DriverContext,
    ) -> Driver: ...
