"""EC2's shapes → cloudstate's: instance states, instances, tags, hardware profiles. Pure."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING

from cloudstate.domain.hardware import HardwareProfile, ProfileProperty
from cloudstate.domain.states import InstanceState
from cloudstate.providers.base import TAG_UUID, LaunchSpec, ProviderInstance, normalize_state

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import (
        InstanceTypeDef,
        InstanceTypeInfoTypeDef,
        TagSpecificationTypeDef,
        TagTypeDef,
    )

STATE_MAP: dict[str, InstanceState] = {
    "pending": InstanceState.PENDING,
    "running": InstanceState.RUNNING,
    "stopping": InstanceState.STOPPING,
    "stopped": InstanceState.STOPPED,
    "shutting-down": InstanceState.SHUTTING_DOWN,
    "terminated": InstanceState.TERMINATED,
}
"""EC2's ``State.Name`` → normalized state; anything else is ``unknown`` (``normalize_state``).
EC2 has no "rebooting" state: a reboot is invisible in listings."""

MAX_TAG_VALUE = 256


def key_name_for(instance_uuid: uuid.UUID) -> str:
    """The per-instance key pair's name when the caller gave no keyname."""
    return f"cs-{instance_uuid}"


def tag_specifications(
    spec: LaunchSpec, resource: str = "instance"
) -> list[TagSpecificationTypeDef]:
    """The caller's labels, then ``Name`` and our UUID tag (which a label cannot override)."""
    tags = {**spec.labels, "Name": spec.name[:MAX_TAG_VALUE], TAG_UUID: str(spec.uuid)}
    listed: list[TagTypeDef] = [{"Key": key, "Value": value} for key, value in tags.items()]
    return [{"ResourceType": resource, "Tags": listed}]  # type: ignore[typeddict-item]  # the stubs type ResourceType as a Literal


def to_instance(raw: InstanceTypeDef) -> ProviderInstance:
    # Both keys of a tag are optional in the API's shape: a tag without a value reads as "".
    tags = {tag["Key"]: tag.get("Value", "") for tag in raw.get("Tags", []) if "Key" in tag}
    raw_state = raw.get("State", {}).get("Name", "")
    public = [raw["PublicIpAddress"]] if raw.get("PublicIpAddress") else []
    private = [raw["PrivateIpAddress"]] if raw.get("PrivateIpAddress") else []
    for interface in raw.get("NetworkInterfaces", []):
        public += [
            a["Ipv6Address"] for a in interface.get("Ipv6Addresses", []) if "Ipv6Address" in a
        ]
    extra: dict[str, object] = {"tags": tags}
    if raw.get("KeyName"):
        extra["key_name"] = raw["KeyName"]
    return ProviderInstance(
        provider_id=raw.get("InstanceId", ""),
        uuid=_our_uuid(tags),
        state=normalize_state(raw_state or None, STATE_MAP),
        raw_state=raw_state or "unknown",
        public_addresses=tuple(dict.fromkeys(public)),
        private_addresses=tuple(private),
        realm=raw.get("Placement", {}).get("AvailabilityZone"),
        image=raw.get("ImageId"),
        hardware_profile=raw.get("InstanceType"),
        launched_at=raw.get("LaunchTime"),
        extra=extra,
    )


def to_profile(raw: InstanceTypeInfoTypeDef) -> HardwareProfile:
    """Memory (MiB) and vCPUs are fixed for an instance type; storage is the instance store's
    size (GiB) when the type has one, and absent otherwise (EBS volumes are not a profile's)."""
    properties: dict[str, ProfileProperty] = {}
    memory = raw.get("MemoryInfo", {}).get("SizeInMiB")
    cpus = raw.get("VCpuInfo", {}).get("DefaultVCpus")
    storage = raw.get("InstanceStorageInfo", {}).get("TotalSizeInGB")
    for name, value in (("memory", memory), ("cpu", cpus), ("storage", storage)):
        if value:
            properties[name] = ProfileProperty.fixed(int(value))
    return HardwareProfile(str(raw.get("InstanceType", "")), properties)


def _our_uuid(tags: Mapping[str, str]) -> uuid.UUID | None:
    value = tags.get(TAG_UUID)
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
