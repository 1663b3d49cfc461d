"""The ``ec2`` driver: the ``Driver`` interface over one boto3 EC2 client.

Launching: one ``RunInstances`` per instance (``MinCount = MaxCount = 1``), so every instance
has its own outcome and its own ``ClientToken`` (``client_token(uuid)``: EC2 itself refuses to
create a second instance for a retried token), and carries the ``cloudstate:uuid`` tag that
``list_page(uuids=...)`` finds, which is what the launcher looks up before any retry.

Pacing: every call the client sends first waits for a token from the driver's own request
buckets (``limits``), so one driver stays within EC2's published limits per request class.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from cloudstate.domain.hardware import HardwareProfile
from cloudstate.domain.states import Action
from cloudstate.exceptions import (
    ProviderError,
    ProviderPermanentError,
    ProviderUnavailableError,
)
from cloudstate.providers.base import (
    TAG_UUID,
    DriverContext,
    DriverFactory,
    Image,
    LaunchOutcome,
    LaunchSpec,
    Page,
    ProviderInstance,
    Realm,
    client_token,
    create_each,
)
from cloudstate.providers.ec2.errors import call, error_code, translate
from cloudstate.providers.ec2.limits import RequestBuckets
from cloudstate.providers.ec2.mapping import (
    key_name_for,
    tag_specifications,
    to_instance,
    to_profile,
)
from cloudstate.providers.ec2.settings import (
    Ec2Settings,
    check_credentials,
    make_client,
    parse_settings,
)

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import (
        DescribeInstancesRequestTypeDef,
        FilterTypeDef,
        RunInstancesRequestTypeDef,
    )

log = logging.getLogger("cloudstate.providers.ec2")

MAX_FILTER_VALUES = 200  # EC2's limit on the values of one filter
MAX_TYPES_PER_CALL = 100  # DescribeInstanceTypes' limit on InstanceTypes
KEY_MATERIAL_LOST = (
    "the key pair already existed (an earlier attempt created it and its answer was lost); "
    "EC2 returns a private key only once, so this one is unknown"
)


class Ec2Driver:
    """Implements ``cloudstate.providers.base.Driver``; raises only ``ProviderError``s.

    Takes over ``client``: its calls are paced by this driver's request buckets from now on.
    """

    kind = "ec2"

    def __init__(self, client: EC2Client, settings: Ec2Settings) -> None:
        self.client = client
        self.settings = settings
        self.buckets = RequestBuckets(settings.request_rates, settings.request_bursts)
        self.buckets.install(client)
        self.page_size = settings.page_size
        self._lock = threading.Lock()
        self._profiles: list[HardwareProfile] | None = None

    # launching ------------------------------------------------------------------------------

    def create_many(self, specs: Sequence[LaunchSpec]) -> list[LaunchOutcome]:
        """One outcome per spec. Throttling, an unreachable endpoint or rejected credentials
        stop the batch: raised when nothing was sent yet, else the rest get that error.
        An empty batch still asks EC2 for its zones, so it fails as a real batch would."""
        if not specs:
            self.list_realms()
            return []
        return create_each(specs, self._create_one)

    def _create_one(self, spec: LaunchSpec) -> ProviderInstance:
        if spec.hardware_profile not in self.settings.instance_types:
            offered = ", ".join(self.settings.instance_types)
            raise ProviderPermanentError(
                f"instance type {spec.hardware_profile!r} is not offered by this account "
                f"(instance_types: {offered})",
                code="InvalidInstanceType",
            )
        key: tuple[str | None, str | None] = (None, None)  # material, fingerprint
        key_name = spec.keyname
        if key_name is None:
            key_name = key_name_for(spec.uuid)
            key = self._key_pair(spec, key_name)
        try:
            response = call(lambda: self.client.run_instances(**_run_request(spec, key_name)))
        except ProviderError as exc:
            # Refused for sure (not a timeout or 5xx, after which the instance may exist with
            # this key): drop the key pair, so a retry makes a new one and gets its private key.
            if spec.keyname is None and not isinstance(exc, ProviderUnavailableError):
                self._delete_key_pair(key_name)
            raise
        created = to_instance(response["Instances"][0])
        extra = {**created.extra, "tags": _tags(spec), "key_name": key_name}
        if spec.keyname is None and key[0] is None:
            extra["key_material_note"] = KEY_MATERIAL_LOST
        return replace(
            created, uuid=spec.uuid, key_material=key[0], key_fingerprint=key[1], extra=extra
        )

    def _key_pair(self, spec: LaunchSpec, name: str) -> tuple[str | None, str | None]:
        """Create the per-instance key pair, or reuse the one a lost answer left behind."""
        try:
            created = self.client.create_key_pair(
                KeyName=name,
                TagSpecifications=tag_specifications(spec, "key-pair"),
            )
            return created["KeyMaterial"], created["KeyFingerprint"]
        except ClientError as exc:
            if error_code(exc) != "InvalidKeyPair.Duplicate":
                raise translate(exc) from exc
        except BotoCoreError as exc:
            raise translate(exc) from exc
        described = call(lambda: self.client.describe_key_pairs(KeyNames=[name]))
        pairs = described.get("KeyPairs", [])
        log.info("key pair %s already existed: reusing it, its private key is unknown", name)
        return None, pairs[0].get("KeyFingerprint") if pairs else None

    def _delete_key_pair(self, name: str) -> None:
        """Best effort: a leftover per-instance key pair costs nothing but clutter."""
        try:
            call(lambda: self.client.delete_key_pair(KeyName=name))
        except ProviderError as exc:
            log.warning("could not delete key pair %s: %s", name, exc)

    # observing ------------------------------------------------------------------------------

    def list_page(
        self, token: str | None = None, *, uuids: Sequence[uuid.UUID] | None = None
    ) -> Page:
        """``DescribeInstances`` filtered by our tag, ``MaxResults`` at a time (never with
        instance ids, which EC2 does not allow together with ``MaxResults``)."""
        if uuids is not None and not uuids:
            return Page(())
        wanted = {str(u) for u in uuids} if uuids is not None else None
        request: DescribeInstancesRequestTypeDef = {
            "Filters": _filters(wanted),
            "MaxResults": self.page_size,
        }
        if token:
            request["NextToken"] = token
        response = call(lambda: self.client.describe_instances(**request))
        listed = [
            to_instance(raw)
            for reservation in response.get("Reservations", [])
            for raw in reservation.get("Instances", [])
        ]
        if wanted is not None:
            listed = [i for i in listed if i.extra["tags"].get(TAG_UUID) in wanted]
        return Page(tuple(listed), response.get("NextToken") or None)

    # acting ---------------------------------------------------------------------------------

    def act(self, provider_id: str, action: Action) -> None:
        if action is Action.DESTROY:
            self._destroy(provider_id)
            return
        calls: dict[Action, Callable[..., object]] = {
            Action.START: self.client.start_instances,
            Action.STOP: self.client.stop_instances,
            Action.REBOOT: self.client.reboot_instances,
        }
        method = calls[action]
        call(lambda: method(InstanceIds=[provider_id]))

    def _destroy(self, provider_id: str) -> None:
        """Terminate, then delete the instance's own key pair if cloudstate generated it."""
        described = call(lambda: self.client.describe_instances(InstanceIds=[provider_id]))
        found = [to_instance(raw) for r in described["Reservations"] for raw in r["Instances"]]
        call(lambda: self.client.terminate_instances(InstanceIds=[provider_id]))
        for instance in found:
            key_name = instance.extra.get("key_name")
            if instance.uuid is not None and key_name == key_name_for(instance.uuid):
                self._delete_key_pair(key_name)

    # catalogue ------------------------------------------------------------------------------

    def list_realms(self) -> list[Realm]:
        response = call(lambda: self.client.describe_availability_zones())
        realms = []
        for zone in response.get("AvailabilityZones", []):
            state = zone.get("State", "")
            messages = "; ".join(m.get("Message", "") for m in zone.get("Messages", []))
            available = state == "available"
            reason = "" if available else (messages or state)
            realms.append(Realm(zone.get("ZoneName", ""), available, reason))
        return realms

    def list_images(self) -> list[Image]:
        """The configured ``images``, or else the account's own AMIs."""
        if self.settings.images:
            ids = list(self.settings.images)
            response = call(lambda: self.client.describe_images(ImageIds=ids))
        else:
            response = call(lambda: self.client.describe_images(Owners=["self"]))
        return [
            Image(image.get("ImageId", ""), image.get("Name", ""))
            for image in response.get("Images", [])
        ]

    def list_hardware_profiles(self) -> list[HardwareProfile]:
        """The offered instance types, described once per driver (they do not change)."""
        with self._lock:
            if self._profiles is None:
                self._profiles = self._describe_types()
            return list(self._profiles)

    def _describe_types(self) -> list[HardwareProfile]:
        types = list(self.settings.instance_types)
        found: dict[str, HardwareProfile] = {}
        for start in range(0, len(types), MAX_TYPES_PER_CALL):
            chunk = types[start : start + MAX_TYPES_PER_CALL]
            response = call(lambda c=chunk: self.client.describe_instance_types(InstanceTypes=c))  # type: ignore[misc]  # the stubs want a Literal per type name
            for raw in response.get("InstanceTypes", []):
                profile = to_profile(raw)
                found[profile.id] = profile
        return [found[name] for name in types if name in found]

    def close(self) -> None:
        self.client.close()


def _filters(wanted: set[str] | None) -> list[FilterTypeDef]:
    """By tag value when few enough UUIDs are wanted; otherwise by tag key (then filtered
    here, in ``list_page``)."""
    if wanted is not None and len(wanted) <= MAX_FILTER_VALUES:
        return [{"Name": f"tag:{TAG_UUID}", "Values": sorted(wanted)}]
    return [{"Name": "tag-key", "Values": [TAG_UUID]}]


def _tags(spec: LaunchSpec) -> dict[str, str]:
    return {
        tag["Key"]: tag["Value"]
        for specification in tag_specifications(spec)
        for tag in specification.get("Tags", [])
    }


def _run_request(spec: LaunchSpec, key_name: str) -> RunInstancesRequestTypeDef:
    request: dict[str, Any] = {
        "ImageId": spec.image,
        "InstanceType": spec.hardware_profile,
        "MinCount": 1,
        "MaxCount": 1,
        "ClientToken": client_token(spec.uuid),
        "KeyName": key_name,
        "TagSpecifications": tag_specifications(spec),
    }
    if spec.user_data is not None:
        request["UserData"] = spec.user_data  # boto3 base64-encodes it
    if spec.realm is not None:
        request["Placement"] = {"AvailabilityZone": spec.realm}
    typed: RunInstancesRequestTypeDef = request  # type: ignore[assignment]  # built field by field
    return typed


def create_driver(
    config: Mapping[str, Any], credentials: Mapping[str, str], context: DriverContext
) -> Ec2Driver:
    """The registry's factory for kind ``ec2`` (see ``settings`` for the keys)."""
    settings = parse_settings(config)
    check_credentials(credentials)
    return Ec2Driver(make_client(settings, credentials), settings)


_FACTORY: DriverFactory = create_driver
"""Lets mypy prove that ``create_driver`` (and so ``Ec2Driver``) keeps the protocol."""
