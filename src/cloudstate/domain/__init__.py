"""The pure core: states, actions, hardware rules, orders and events. No I/O here."""

from __future__ import annotations

from cloudstate.domain.events import EventDraft, EventType
from cloudstate.domain.hardware import HardwareProfile, ProfileProperty, ResolvedHardware
from cloudstate.domain.orders import (
    InstanceSpec,
    LaunchOrder,
    OrderPolicy,
    OrderState,
    resolve_order,
)
from cloudstate.domain.states import (
    Action,
    InstanceState,
    Operation,
    UnknownReason,
    allowed_actions,
    check_action,
)

__all__ = [
    "Action",
    "EventDraft",
    "EventType",
    "HardwareProfile",
    "InstanceSpec",
    "InstanceState",
    "LaunchOrder",
    "Operation",
    "OrderPolicy",
    "OrderState",
    "ProfileProperty",
    "ResolvedHardware",
    "UnknownReason",
    "allowed_actions",
    "check_action",
    "resolve_order",
]
