"""Launch orders: what a caller asks for, checked and resolved before anything is written.

An order carries defaults (account, image, hardware profile, ...) and a list of instances that
may override any of them. ``resolve_order`` merges the two and checks that every instance ends up
with what a launch needs; every problem is reported with its path (``instances.3.image``).
"""

from __future__ import annotations

import uuid as uuid_module
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from cloudstate.domain.validation import (
    AccountName,
    Labels,
    Name,
    ResourceId,
    UserData,
    parse,
)
from cloudstate.exceptions import FieldError, ValidationError

MAX_INSTANCES_PER_ORDER = 1000
MAX_CREDENTIAL_LENGTH = 16 * 1024
MAX_CREDENTIALS_TTL = 366 * 24 * 3600


class OrderPolicy(StrEnum):
    PARTIAL = "partial"  # each instance stands alone
    ALL_OR_NOTHING = "all_or_nothing"  # any failure rolls the whole order back


class OrderState(StrEnum):
    ACCEPTED = "accepted"
    LAUNCHING = "launching"
    RUNNING = "running"
    PARTIAL = "partial"
    FAILED = "failed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"


class _Placement(BaseModel):
    """Fields an order gives as defaults and an instance may override."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    account: AccountName | None = None
    image: ResourceId | None = None
    hardware_profile: ResourceId | None = None
    memory: int | None = Field(default=None, gt=0, description="MiB")
    cpu: int | None = Field(default=None, gt=0)
    storage: int | None = Field(default=None, gt=0, description="GiB")
    keyname: ResourceId | None = None
    realm: ResourceId | None = None
    user_data: UserData | None = None
    labels: Labels = Field(default_factory=dict)


class InstanceRequest(_Placement):
    uuid: uuid_module.UUID = Field(description="caller-chosen; the instance's idempotency key")
    name: Name | None = None


CredentialFields = dict[
    Annotated[str, StringConstraints(min_length=1, max_length=63)],
    Annotated[str, StringConstraints(max_length=MAX_CREDENTIAL_LENGTH)],
]


class LaunchOrderRequest(_Placement):
    id: uuid_module.UUID | None = None
    policy: OrderPolicy = OrderPolicy.PARTIAL
    instances: list[InstanceRequest] = Field(min_length=1, max_length=MAX_INSTANCES_PER_ORDER)
    credentials: dict[AccountName, CredentialFields] = Field(
        default_factory=dict,
        repr=False,
        description=(
            "write-only: credentials for accounts this order launches on, by account name; "
            "they replace the account's stored ones and are kept under the retention policy"
        ),
    )
    credentials_ttl: int | None = Field(
        default=None,
        gt=0,
        le=MAX_CREDENTIALS_TTL,
        description=(
            "seconds to keep inline credentials; default: while the account has live instances"
        ),
    )


@dataclass(frozen=True)
class InstanceSpec:
    """One instance of an order, fully resolved: everything the launcher needs."""

    uuid: uuid_module.UUID
    name: str
    account: str
    image: str
    hardware_profile: str
    overrides: dict[str, int] = field(default_factory=dict)
    keyname: str | None = None
    realm: str | None = None
    user_data: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LaunchOrder:
    id: uuid_module.UUID
    policy: OrderPolicy
    instances: tuple[InstanceSpec, ...]
    credentials: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)
    credentials_ttl: int | None = None

    @property
    def accounts(self) -> frozenset[str]:
        return frozenset(spec.account for spec in self.instances)


_REQUIRED = ("account", "image", "hardware_profile")


def resolve_order(data: Any) -> LaunchOrder:
    """Parse and resolve a launch order, or raise ``ValidationError`` listing every problem.

    The cross-field checks (required fields given somewhere, UUIDs unique) also run when some
    field failed to parse, so one typo does not hide the other problems.
    """
    try:
        request = parse(LaunchOrderRequest, data)
    except ValidationError as exc:
        reported = {error.field for error in exc.errors}
        extra = [e for e in cross_field_errors(data) if e.field not in reported]
        raise ValidationError([*exc.errors, *extra]) from None
    errors = cross_field_errors(request.model_dump(mode="json"))
    if errors:
        raise ValidationError(errors)
    instances = tuple(_spec(_merge(request, item)) for item in request.instances)
    errors = _credentials_errors(request, {spec.account for spec in instances})
    if errors:
        raise ValidationError(errors)
    return LaunchOrder(
        id=request.id or uuid_module.uuid4(),
        policy=request.policy,
        instances=instances,
        credentials=request.credentials,
        credentials_ttl=request.credentials_ttl,
    )


def _credentials_errors(request: LaunchOrderRequest, used: set[str]) -> list[FieldError]:
    """Inline credentials name accounts the order launches on, and carry something."""
    errors = [
        FieldError(f"credentials.{name}", "no instance of this order launches on this account")
        for name in request.credentials
        if name not in used
    ]
    errors += [
        FieldError(f"credentials.{name}", "must not be empty")
        for name, fields in request.credentials.items()
        if not fields
    ]
    if request.credentials_ttl is not None and not request.credentials:
        errors.append(FieldError("credentials_ttl", "given without inline credentials"))
    return errors


def cross_field_errors(data: Any) -> list[FieldError]:
    """Required-somewhere fields and duplicate UUIDs, checked on the plain (JSON-like) order."""
    if not isinstance(data, dict) or not isinstance(data.get("instances"), list):
        return []
    errors: list[FieldError] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(data["instances"]):
        if not isinstance(item, dict):
            continue
        where = f"instances.{index}"
        key = _uuid_key(item.get("uuid"))
        if key is not None and key in seen:
            errors.append(FieldError(f"{where}.uuid", f"{key} repeats instances.{seen[key]}"))
        if key is not None:
            seen.setdefault(key, index)
        errors += [
            FieldError(f"{where}.{name}", "required (give it on the instance or the order)")
            for name in _REQUIRED
            if item.get(name) is None and data.get(name) is None
        ]
    return errors


def _uuid_key(value: Any) -> str | None:
    try:
        return str(uuid_module.UUID(str(value)))
    except ValueError:
        return None


def _merge(order: LaunchOrderRequest, item: InstanceRequest) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for name in _Placement.model_fields:
        own = getattr(item, name)
        merged[name] = own if own is not None else getattr(order, name)
    merged["labels"] = {**order.labels, **item.labels}
    merged["uuid"] = item.uuid
    merged["name"] = item.name or f"cs-{str(item.uuid)[:8]}"
    return merged


def _spec(merged: dict[str, Any]) -> InstanceSpec:
    overrides = {k: merged[k] for k in ("memory", "cpu", "storage") if merged[k] is not None}
    return InstanceSpec(
        uuid=merged["uuid"],
        name=merged["name"],
        account=merged["account"],
        image=merged["image"],
        hardware_profile=merged["hardware_profile"],
        overrides=overrides,
        keyname=merged["keyname"],
        realm=merged["realm"],
        user_data=merged["user_data"],
        labels=merged["labels"],
    )
