"""What a reconcile observation means for an instance: the pure diff, and the owner's verdict.

The engine turns a provider's listing into ``Observation``s; ``observe`` compares one with the
stored ``Snapshot`` of the instance and returns the new snapshot plus the changes to record, in
the order a subscriber should see them. Observing never decides an action's outcome: that is
``settle``, which only the action's owner (the executor) calls, for an operation the provider
has accepted. Nothing here touches a database or a cloud.
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
    return _launch_settled(after), changes


def unobservable(current: Snapshot, reason: UnknownReason) -> tuple[Snapshot, list[Change]]:
    """The instance cannot be observed now (provider unreachable, credentials, missing)."""
    if current.state is InstanceState.UNKNOWN and current.reason == reason:
        return current, []
    after = replace(current, state=InstanceState.UNKNOWN, reason=str(reason))
    return after, [_state_change(current, InstanceState.UNKNOWN, str(reason))]


def confirmed_gone(current: Snapshot) -> tuple[Snapshot, list[Change]]:
    """The provider holds the instance gone: it said so after our destroy was sent, or it
    listed the instance ``shutting_down`` and then no more. The in-flight operation is not
    settled here (see ``settle``)."""
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
    return after, changes


def _state_change(current: Snapshot, new: InstanceState, reason: str) -> Change:
    return Change(
        EventType.INSTANCE_STATE_CHANGED,
        {
            "previous_state": str(current.state),
            "reason": reason,
            "expected": is_expected_transition(current.state, new),
        },
    )


def _launch_settled(after: Snapshot) -> Snapshot:
    """A launch is over once the instance settles either way; its state change tells the
    story, so no event of its own (the launcher's work ended when the create was recorded)."""
    launching = after.operation is Operation.LAUNCHING
    if launching and operation_done(Operation.LAUNCHING, after.state) is not None:
        return replace(after, operation=None)
    return after


def settle(current: Snapshot) -> tuple[Snapshot, list[Change]]:
    """The owner's verdict on its in-flight operation, which the provider has accepted: done
    once the recorded state is its target, failed once the instance ended elsewhere, else
    nothing yet (empty changes). Only the executor, which sent the call, asks this."""
    if current.operation is None or current.operation is Operation.LAUNCHING:
        return current, []
    done = operation_done(current.operation, current.state)
    if done is None:
        return current, []
    kind = EventType.INSTANCE_ACTION_COMPLETED if done else EventType.INSTANCE_ACTION_FAILED
    details: dict[str, object] = {"operation": str(current.operation)}
    if not done:
        details["error"] = f"instance became {current.state} during {current.operation}"
    return replace(current, operation=None), [Change(kind, details)]
