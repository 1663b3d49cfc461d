"""Libcloud's shapes → cloudstate's: node states, nodes, our UUID marker, sizes. Pure.

Where our UUID lives depends on the driver (``uuid_in``): a ``cloudstate-uuid`` key in the
node's metadata (OpenStack, GCE, EC2 via ``ex_metadata``), in its tags (Azure ``ex_tags``), or,
for drivers that store neither, a ``--cs-<uuid>`` suffix on the node's name. Reading looks in
every place, so an account can change ``uuid_in`` without losing its instances.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from libcloud.compute.types import NodeState

from cloudstate.domain.hardware import HardwareProfile, ProfileProperty
from cloudstate.domain.states import InstanceState
from cloudstate.providers.base import TAG_UUID, TAG_UUID_ALT, ProviderInstance, normalize_state

STATE_MAP: dict[str, InstanceState] = {
    NodeState.RUNNING.value: InstanceState.RUNNING,
    NodeState.PENDING.value: InstanceState.PENDING,
    NodeState.STARTING.value: InstanceState.PENDING,
    NodeState.REBOOTING.value: InstanceState.REBOOTING,
    NodeState.STOPPING.value: InstanceState.STOPPING,
    NodeState.STOPPED.value: InstanceState.STOPPED,
    NodeState.SUSPENDED.value: InstanceState.STOPPED,
    NodeState.PAUSED.value: InstanceState.STOPPED,
    NodeState.TERMINATED.value: InstanceState.TERMINATED,
    NodeState.ERROR.value: InstanceState.ERROR,
}
"""Libcloud ``NodeState`` → normalized state. Suspended and paused nodes are not running and
``start`` resumes them on the drivers that support it, so they are ``stopped``. Reconfiguring,
migrating, updating, "normal" and unknown say nothing about power: ``unknown``."""

NAME_MARK = "--cs-"
MAX_NAME_BASE = 22  # with the 41-character mark, 63: the strictest common limit (GCE, DNS)
_NAME_UUID = re.compile(re.escape(NAME_MARK) + r"([0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12})$")


def name_with_uuid(name: str, instance_uuid: uuid.UUID) -> str:
    """The node name that carries our UUID, for drivers that cannot store metadata."""
    return f"{name[:MAX_NAME_BASE]}{NAME_MARK}{instance_uuid}"


def uuid_of(node: Any) -> uuid.UUID | None:
    """Our UUID from the node's metadata, tags or name; None when the node is not ours."""
    extra = node.extra if isinstance(node.extra, Mapping) else {}
    for key in ("metadata", "tags"):
        found = _from_mapping(extra.get(key))
        if found is not None:
            return found
    match = _NAME_UUID.search(str(node.name or ""))
    return uuid.UUID(match.group(1)) if match else None


def to_instance(node: Any, provider_id: str, instance_uuid: uuid.UUID | None) -> ProviderInstance:
    raw_state = str(getattr(node.state, "value", node.state) or "unknown")
    tags = {TAG_UUID: str(instance_uuid)} if instance_uuid else {}
    return ProviderInstance(
        provider_id=provider_id,
        uuid=instance_uuid,
        state=normalize_state(raw_state, STATE_MAP),
        raw_state=raw_state,
        public_addresses=tuple(str(ip) for ip in node.public_ips or ()),
        private_addresses=tuple(str(ip) for ip in node.private_ips or ()),
        image=_id_of(node.image),
        hardware_profile=_id_of(node.size),
        launched_at=getattr(node, "created_at", None),
        extra={"tags": tags, "name": str(node.name)},
    )


def to_profile(size: Any) -> HardwareProfile:
    """RAM (MiB), vCPUs (when the driver knows them) and disk (GB) are fixed for a size."""
    extra = size.extra if isinstance(size.extra, Mapping) else {}
    cpus = extra.get("vcpus", extra.get("cpu", extra.get("cpus")))
    properties: dict[str, ProfileProperty] = {}
    for name, value in (("memory", size.ram), ("cpu", cpus), ("storage", size.disk)):
        number = _positive_int(value)
        if number is not None:
            properties[name] = ProfileProperty.fixed(number)
    return HardwareProfile(str(size.id), properties)


def _from_mapping(found: object) -> uuid.UUID | None:
    values: list[object] = []
    if isinstance(found, Mapping):
        values = [found.get(TAG_UUID_ALT), found.get(TAG_UUID)]
        items = found.get("items")  # GCE: {"items": [{"key": ..., "value": ...}]}
        if isinstance(items, list):
            values += [
                item.get("value")
                for item in items
                if isinstance(item, Mapping) and item.get("key") in (TAG_UUID_ALT, TAG_UUID)
            ]
    for value in values:
        try:
            return uuid.UUID(str(value))
        except ValueError:
            continue
    return None


def _id_of(thing: Any) -> str | None:
    return None if thing is None else str(getattr(thing, "id", thing))


def _positive_int(value: object) -> int | None:
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite float
        return None
    return number if number > 0 else None
