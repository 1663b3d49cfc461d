"""Accepting launch orders: validate everything, then write the order, its instances and their
``instance.created`` events in one transaction, or nothing at all."""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from cloudstate.domain.events import EventType
from cloudstate.domain.hardware import HardwareProfile
from cloudstate.domain.orders import InstanceSpec, LaunchOrder, resolve_order
from cloudstate.exceptions import (
    AlreadyExistsError,
    ConflictError,
    FieldError,
    HardwareProfileError,
    ValidationError,
)
from cloudstate.service.observations import clear_credentials_status
from cloudstate.service.recording import record
from cloudstate.service.views import OrderView, instance_view, order_view
from cloudstate.store import Store
from cloudstate.store.repositories import AccountRepository, InstanceRepository
from cloudstate.store.tables import Account, utcnow
from cloudstate.store.uow import UnitOfWork

DEFAULT_LAUNCH_TIMEOUT = 1800.0  # seconds; the service passes its setting


class Catalogue(Protocol):
    """Where the service learns an account's hardware profiles (the engine's driver pool)."""

    def hardware_profiles(self, account: str) -> Sequence[HardwareProfile] | None:
        """The account's profiles, or None when they cannot be known right now."""
        ...

    def validate(
        self,
        provider: str,
        config: Mapping[str, Any],
        credentials: Mapping[str, str],
        name: str,
        *,
        probe: bool = False,
    ) -> None:
        """Raise ``ValidationError`` unless a driver can be built from these settings."""
        ...


def accept_order(
    store: Store,
    catalogue: Catalogue,
    request: Mapping[str, Any],
    *,
    launch_timeout: float = DEFAULT_LAUNCH_TIMEOUT,
) -> OrderView:
    """Validate and store a launch order; the launcher takes it from there.

    ``launch_timeout`` (seconds) applies when the order sets none: instances not running by
    then fail (and, under ``all_or_nothing``, the order rolls back)."""
    order = resolve_order(request)
    with store.read() as session:  # cheap checks first, in a read-only session
        instances = InstanceRepository(session, store.secrets)
        found = _check(AccountRepository(session, store.secrets), instances, order)
        _require_new(instances, order)
        settings = {name: (found[name].provider, dict(found[name].config)) for name in found}
    _check_credentials(catalogue, order, settings)
    hardware = _resolve_hardware(catalogue, order)  # may ask the provider: outside any transaction
    with store.unit_of_work() as uow:  # again, now under the write lock
        accounts = _check(uow.accounts, uow.instances, order)
        _keep_credentials(uow.accounts, accounts, order)
        timeout = timedelta(seconds=order.launch_timeout or launch_timeout)
        row = uow.orders.add(order, _jsonable(request), utcnow() + timeout)
        rows = []
        for spec, granted in zip(order.instances, hardware, strict=True):
            instance = uow.instances.add(spec, accounts[spec.account], order.id)
            instance.hardware = granted
            # before any flush: the INSERT then carries the event's number (event_seq = 1)
            record(uow, instance, spec.account, EventType.INSTANCE_CREATED)
            rows.append((instance, spec.account))
        for account in accounts.values():  # instances about to change: reconcile them fast
            account.next_reconcile_at = utcnow()
        _commit(store, uow, order)
        return order_view(row, tuple(instance_view(i, name) for i, name in rows))


def _check(
    accounts: AccountRepository, instances: InstanceRepository, order: LaunchOrder
) -> dict[str, Account]:
    """The order's accounts exist and its ``after`` references are known; returns the
    accounts by name."""
    found = {name: accounts.find(name) for name in order.accounts}
    errors = [
        FieldError(f"instances.{index}.account", f"no account named {name!r}")
        for index, spec in enumerate(order.instances)
        for name in spec.candidates
        if found[name] is None
    ]
    ours = {spec.uuid for spec in order.instances}
    outside = {u for spec in order.instances for u in spec.after if u not in ours}
    known = instances.existing(list(outside)) if outside else set()
    errors += [
        FieldError(f"instances.{index}.after", f"no instance {u} in this order or known")
        for index, spec in enumerate(order.instances)
        for u in spec.after
        if u in outside and u not in known
    ]
    if errors:
        raise ValidationError(errors)
    return {name: account for name, account in found.items() if account is not None}


def _require_new(instances: InstanceRepository, order: LaunchOrder) -> None:
    """``AlreadyExistsError`` naming the order's UUIDs that are stored already."""
    taken = instances.existing([spec.uuid for spec in order.instances])
    if taken:
        raise AlreadyExistsError("instance", ", ".join(sorted(str(u) for u in taken)))


def _commit(store: Store, uow: UnitOfWork, order: LaunchOrder) -> None:
    """Commit the order. The UUIDs were checked once, before the transaction; an order that
    took one of them since is caught by the primary key, and reported as that check would."""
    try:
        uow.commit()
    except ConflictError:
        with store.read() as session:
            _require_new(InstanceRepository(session, store.secrets), order)
        raise


def _check_credentials(
    catalogue: Catalogue, order: LaunchOrder, settings: Mapping[str, tuple[str, dict[str, Any]]]
) -> None:
    """Inline credentials must suit their account's provider (checked without a call)."""
    errors: list[FieldError] = []
    for name, credentials in order.credentials.items():
        provider, config = settings[name]
        try:
            catalogue.validate(provider, config, credentials, name)
        except ValidationError as exc:
            errors += [
                FieldError(
                    f"credentials.{name}.{e.field}" if e.field else f"credentials.{name}", e.message
                )
                for e in exc.errors
            ]
    if errors:
        raise ValidationError(errors)


def _keep_credentials(
    accounts: AccountRepository, found: Mapping[str, Account], order: LaunchOrder
) -> None:
    """Store the order's inline credentials, encrypted, where ``_may_take`` allows, under the
    retention policy: until ``credentials_ttl`` passes, or else while the account has live
    instances (``service.retention.drop_order_credentials`` enforces both)."""
    now = utcnow()
    for name, credentials in order.credentials.items():
        account = found[name]
        stored = accounts.credentials(account) if account.credentials is not None else None
        if stored is not None and _same(stored, credentials):
            if account.credentials_from_order:  # the same ones again: their retention restarts
                account.credentials_expire_at = _expiry(order, now)
            continue
        if not _may_take(account, now):
            origin = (
                "from an earlier order" if account.credentials_from_order else "set by an admin"
            )
            raise ConflictError(
                f"account {name!r} holds other credentials ({origin}); "
                "an order's inline credentials may fill an account that has none, or repeat the "
                "stored ones, never replace them (an admin replaces them: PATCH /v1/accounts/"
                f"{name})"
            )
        accounts.set_credentials(account, credentials)
        account.credentials_from_order = True
        account.credentials_expire_at = _expiry(order, now)
        clear_credentials_status(account)


def _may_take(account: Account, now: datetime) -> bool:
    """Whether inline credentials may be stored on ``account`` in place of what it holds.

    An account without credentials takes them; so does one whose credentials came from an
    earlier order and no longer work (expired, or refused: status ``credentials``), which is
    the design note's flow of handing credentials over again. Credentials an operator set, and
    live ones another order brought, are never replaced by an order: a write token could
    otherwise cut every caller of the account off, or send their launches to another cloud
    account.
    """
    if account.credentials is None:
        return True
    if not account.credentials_from_order:
        return False
    expired = account.credentials_expire_at is not None and account.credentials_expire_at <= now
    return expired or account.status == "credentials"


def _same(stored: Mapping[str, str], given: Mapping[str, str]) -> bool:
    """Equal credentials, compared in constant time."""
    canonical = [json.dumps(dict(c), sort_keys=True).encode() for c in (stored, given)]
    return hmac.compare_digest(canonical[0], canonical[1])


def _expiry(order: LaunchOrder, now: datetime) -> datetime | None:
    ttl = order.credentials_ttl
    return now + timedelta(seconds=ttl) if ttl else None


def _resolve_hardware(catalogue: Catalogue, order: LaunchOrder) -> list[dict[str, int]]:
    """Apply the override rules per instance; every impossible request is reported."""
    errors: list[FieldError] = []
    granted: list[dict[str, int]] = []
    profiles_by_account: dict[str, dict[str, HardwareProfile] | None] = {}
    for index, spec in enumerate(order.instances):
        if spec.account not in profiles_by_account:
            known = catalogue.hardware_profiles(spec.account)
            profiles_by_account[spec.account] = None if known is None else {p.id: p for p in known}
        try:
            granted.append(_grant(spec, profiles_by_account[spec.account]))
        except ValidationError as exc:
            errors += [
                FieldError(
                    f"instances.{index}.{e.field}" if e.field else f"instances.{index}", e.message
                )
                for e in exc.errors
            ]
    if errors:
        raise HardwareProfileError(errors)
    return granted


def _grant(spec: InstanceSpec, profiles: dict[str, HardwareProfile] | None) -> dict[str, int]:
    if profiles is None:  # catalogue unknown right now: the launcher applies the rules later
        return dict(spec.overrides)
    profile = profiles.get(spec.hardware_profile)
    if profile is None:
        raise ValidationError(
            f"unknown hardware profile {spec.hardware_profile!r}; "
            f"available: {', '.join(sorted(profiles))}",
            field="hardware_profile",
        )
    return profile.resolve(spec.overrides).as_dict()


UNRECORDED = ("user_data", "credentials")


def _jsonable(request: Mapping[str, Any]) -> dict[str, Any]:
    """The order as given, for the record; left out: user data (it can be large) and inline
    credentials (secret: they live only encrypted on the account)."""

    def clean(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): clean(v) for k, v in value.items() if k not in UNRECORDED}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        if isinstance(value, uuid.UUID):
            return str(value)
        return value

    result: dict[str, Any] = clean(request)
    return result
