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
MAX_FAILOVER_ACCOUNTS = 8
MAX_DEPENDENCIES = 100
MAX_LAUNCH_TIMEOUT = 7 * 24 * 3600


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

    @property
    def finished(self) -> bool:
        """Nothing more will happen to the order (its instances live on by themselves)."""
        return self in FINISHED_ORDER_STATES


FINISHED_ORDER_STATES = frozenset(
    {
        OrderState.RUNNING,
        OrderState.PARTIAL,
        OrderState.FAILED,
        OrderState.ROLLED_BACK,
        OrderState.CANCELLED,
    }
)


class _Placement(BaseModel):
    """Fields an order gives as defaults and an instance may override."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    account: AccountName | None = None
    accounts: list[AccountName] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_FAILOVER_ACCOUNTS,
        description=(
            "instead of account: accounts to try in this order; a launch refused on one "
            "(permanently, or for capacity) is retried on the next"
        ),
    )
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
    after: list[uuid_module.UUID] = Field(
        default_factory=list,
        max_length=MAX_DEPENDENCIES,
        description="instances (of this order or already known) that must be running first",
    )


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
    launch_timeout: int | None = Field(
        default=None,
        gt=0,
        le=MAX_LAUNCH_TIMEOUT,
        description="seconds for every instance to be running; default: the service's setting",
    )
    max_attempts: int | None = Field(
        default=None,
        ge=1,
        le=MAX_FAILOVER_ACCOUNTS,
        description="most accounts an instance is tried on; default: every one it lists",
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
    failover: tuple[str, ...] = ()  # accounts to try next, in order
    after: tuple[uuid_module.UUID, ...] = ()

    @property
    def candidates(self) -> tuple[str, ...]:
        return (self.account, *self.failover)


@dataclass(frozen=True)
class LaunchOrder:
    id: uuid_module.UUID
    policy: OrderPolicy
    instances: tuple[InstanceSpec, ...]
    credentials: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)
    credentials_ttl: int | None = None
    launch_timeout: int | None = None

    @property
    def accounts(self) -> frozenset[str]:
        """Every account an instance may launch on, failover accounts included."""
        return frozenset(name for spec in self.instances for name in spec.candidates)


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
    attempts = request.max_attempts or MAX_FAILOVER_ACCOUNTS
    instances = tuple(_spec(_merge(request, item), attempts) for item in request.instances)
    used = {name for spec in instances for name in spec.candidates}
    errors = _credentials_errors(request, used) + dependency_errors(instances)
    if errors:
        raise ValidationError(errors)
    return LaunchOrder(
        id=request.id or uuid_module.uuid4(),
        policy=request.policy,
        instances=instances,
        credentials=request.credentials,
        credentials_ttl=request.credentials_ttl,
        launch_timeout=request.launch_timeout,
    )


def dependency_errors(instances: tuple[InstanceSpec, ...]) -> list[FieldError]:
    """``after`` names no instance itself, and the order's own dependencies form no cycle.
    (Dependencies outside the order must exist: the service checks that.)"""
    position = {spec.uuid: number for number, spec in enumerate(instances)}
    errors = [
        FieldError(f"instances.{position[spec.uuid]}.after", "an instance cannot wait for itself")
        for spec in instances
        if spec.uuid in spec.after
    ]
    if errors:
        return errors
    cycle = _find_cycle({spec.uuid: [u for u in spec.after if u in position] for spec in instances})
    if cycle:
        shown = " → ".join(str(u)[:8] for u in cycle)
        return [FieldError(f"instances.{position[cycle[0]]}.after", f"a dependency cycle: {shown}")]
    return []


def _find_cycle(graph: dict[uuid_module.UUID, list[uuid_module.UUID]]) -> list[uuid_module.UUID]:
    """A cycle in ``graph`` as a path that ends where it starts, or []. Iterative depth-first
    search, so a long chain of dependencies cannot exhaust the stack."""
    finished: set[uuid_module.UUID] = set()
    for root in graph:
        path = [root]
        branches = [iter(graph[root])]
        while branches:
            step = next(branches[-1], None)
            if step is None:
                finished.add(path.pop())
                branches.pop()
            elif step in path:
                return [*path[path.index(step) :], step]
            elif step not in finished:
                path.append(step)
                branches.append(iter(graph[step]))
    return []


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
            if not _given(item, name) and not _given(data, name)
        ]
        errors += _placement_errors(item, where + ".")
    return errors + _placement_errors(data, "")


def _given(level: dict[str, Any], name: str) -> bool:
    if name == "account":  # an account, or a failover list of them
        return level.get("account") is not None or level.get("accounts") is not None
    return level.get(name) is not None


def _placement_errors(level: dict[str, Any], where: str) -> list[FieldError]:
    errors = []
    if level.get("account") is not None and level.get("accounts") is not None:
        errors.append(FieldError(f"{where}accounts", "give account or accounts, not both"))
    accounts = level.get("accounts")
    if isinstance(accounts, list) and len(set(map(str, accounts))) != len(accounts):
        errors.append(FieldError(f"{where}accounts", "an account is listed more than once"))
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
    # account and accounts are one choice: the instance's, else the order's
    chosen = item if item.account is not None or item.accounts is not None else order
    merged["accounts"] = chosen.accounts or [chosen.account]
    merged["labels"] = {**order.labels, **item.labels}
    merged["after"] = tuple(item.after)
    merged["uuid"] = item.uuid
    merged["name"] = item.name or f"cs-{str(item.uuid)[:8]}"
    return merged


def _spec(merged: dict[str, Any], attempts: int) -> InstanceSpec:
    overrides = {k: merged[k] for k in ("memory", "cpu", "storage") if merged[k] is not None}
    first, *failover = merged["accounts"][:attempts]
    return InstanceSpec(
        uuid=merged["uuid"],
        name=merged["name"],
        account=first,
        failover=tuple(failover),
        after=merged["after"],
        image=merged["image"],
        hardware_profile=merged["hardware_profile"],
        overrides=overrides,
        keyname=merged["keyname"],
        realm=merged["realm"],
        user_data=merged["user_data"],
        labels=merged["labels"],
    )
