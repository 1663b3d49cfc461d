"""What a reconcile observation means for an instance: the pure diff.

The engine turns a provider's listing into ``Observation``s; ``observe`` compares one with the
stored ``Snapshot`` of the instance and returns the new snapshot plus the changes to record, in
the order a subscriber should see them. Nothing here touches a database or a cloud.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from cloudstate.domain.events import EventType
from cloudstate.domain.states import (
    InstanceState,
    Operation,
    UnknownReason,
    is_expected_transition,
    operation_done,
)
from cloudstate.exceptions import ValidationError


@dataclass(frozen=True)
class Observation:
    """One instance as the provider reported it in a listing."""

    uuid: uuid.UUID
    provider_id: str
    state: InstanceState
    raw_state: str
    public_addresses: tuple[str, ...] = ()
    private_addresses: tuple[str, ...] = ()
    key_fingerprint: str | None = None
    origin: Origin | None = None  # what it was launched from, if the provider says


@dataclass(frozen=True)
class Origin:
    """What a listing may tell about how an instance was launched (used to adopt one)."""

    image: str | None = None
    hardware_profile: str | None = None
    realm: str | None = None


class OrphanPolicy(StrEnum):
    """What reconciliation does with an instance tagged as ours that we have no record of.

    ``report`` records it (one ``instance.orphan_found`` event); ``adopt`` makes it a tracked
    instance when its UUID is one we do not know; ``destroy`` has the driver destroy it. A
    duplicate of a known UUID is never adopted: under ``adopt`` it is only reported.
    """

    REPORT = "report"
    ADOPT = "adopt"
    DESTROY = "destroy"


ORPHANS_OPTION = "orphans"


def orphan_policy(config: Mapping[str, Any]) -> OrphanPolicy:
    """The account's orphan policy (an engine option in its config; default ``report``)."""
    value = config.get(ORPHANS_OPTION, OrphanPolicy.REPORT)
    try:
        return OrphanPolicy(value)
    except ValueError:
        allowed = ", ".join(policy.value for policy in OrphanPolicy)
        raise ValidationError(
            f"must be one of {allowed}, not {value!r}", field=ORPHANS_OPTION
        ) from None


@dataclass(frozen=True)
class Snapshot:
    """The part of a stored instance that observation can change."""

    state: InstanceState
    raw_state: str = ""
    reason: str = ""
    operation: Operation | None = None
    public_addresses: tuple[str, ...] = ()
    private_addresses: tuple[str, ...] = ()
    key_fingerprint: str | None = None
    operation_sent: bool = True  # the provider has accepted the operation's call


class ChangeKind(StrEnum):
    STATE = "state"
    ADDRESSES = "addresses"
    KEY = "key"
    OPERATION_COMPLETED = "operation_completed"
    OPERATION_FAILED = "operation_failed"


@dataclass(frozen=True)
class Change:
    """One thing that changed; the service turns it into an event with the instance's data."""

    type: EventType
    details: dict[str, object]


def observe(current: Snapshot, seen: Observation) -> tuple[Snapshot, list[Change]]:
    """The instance after ``seen``, and the changes it brings (empty when nothing changed)."""
    changes: list[Change] = []
    after = replace(current, raw_state=seen.raw_state)
    if seen.state != current.state or (current.reason and seen.state != InstanceState.UNKNOWN):
        reason = UnknownReason.UNMAPPED_STATE if seen.state is InstanceState.UNKNOWN else ""
        after = replace(after, state=seen.state, reason=reason)
        if seen.state != current.state:
            changes.append(_state_change(current, seen.state, reason))
    addresses = (seen.public_addresses, seen.private_addresses)
    if addresses != (current.public_addresses, current.private_addresses):
        after = replace(after, public_addresses=addresses[0], private_addresses=addresses[1])
        changes.append(
            Change(
                EventType.INSTANCE_ADDRESSES_CHANGED,
                {
                    "previous_public_addresses": list(current.public_addresses),
                    "previous_private_addresses": list(current.private_addresses),
                },
            )
        )
    if seen.key_fingerprint and seen.key_fingerprint != current.key_fingerprint:
        after = replace(after, key_fingerprint=seen.key_fingerprint)
        changes.append(Change(EventType.INSTANCE_KEY_AVAILABLE, {}))
    after, finished = _finish_operation(after)
    return after, changes + finished


def unobservable(current: Snapshot, reason: UnknownReason) -> tuple[Snapshot, list[Change]]:
    """The instance cannot be observed now (provider unreachable, credentials, missing)."""
    if current.state is InstanceState.UNKNOWN and current.reason == reason:
        return current, []
    after = replace(current, state=InstanceState.UNKNOWN, reason=str(reason))
    return after, [_state_change(current, InstanceState.UNKNOWN, str(reason))]


def confirmed_gone(current: Snapshot) -> tuple[Snapshot, list[Change]]:
    """Absent from the listing after we destroyed it (or the provider said terminated)."""
    if current.state is InstanceState.TERMINATED:
        return current, []
    after = replace(
        current,
        state=InstanceState.TERMINATED,
        reason="",
        public_addresses=(),
        private_addresses=(),
    )
    changes = [_state_change(current, InstanceState.TERMINATED, "")]
    if current.public_addresses or current.private_addresses:
        changes.append(
            Change(
                EventType.INSTANCE_ADDRESSES_CHANGED,
                {
                    "previous_public_addresses": list(current.public_addresses),
                    "previous_private_addresses": list(current.private_addresses),
                },
            )
        )
    after, finished = _finish_operation(after)
    return after, changes + finished


def _state_change(current: Snapshot, new: InstanceState, reason: str) -> Change:
    return Change(
        EventType.INSTANCE_STATE_CHANGED,
        {
            "previous_state": str(current.state),
            "reason": reason,
            "expected": is_expected_transition(current.state, new),
        },
    )


def _finish_operation(after: Snapshot) -> tuple[Snapshot, list[Change]]:
    """Close the in-flight operation once the observed state settles it either way."""
    if after.operation is None:
        return after, []
    done = operation_done(after.operation, after.state)
    if done is None:
        return after, []
    if done and after.operation is Operation.REBOOTING and not after.operation_sent:
        # A reboot ends where it starts (running): seeing the instance running proves nothing
        # until the provider has accepted the reboot.
        return after, []
    if after.operation is Operation.LAUNCHING:  # the state change itself tells the story
        return replace(after, operation=None), []
    kind = EventType.INSTANCE_ACTION_COMPLETED if done else EventType.INSTANCE_ACTION_FAILED
    details: dict[str, object] = {"operation": str(after.operation)}
    if not done:
        details["error"] = f"instance became {after.state} during {after.operation}"
    return replace(after, operation=None), [Change(kind, details)]
