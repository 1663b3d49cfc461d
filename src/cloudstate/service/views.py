"""Read models: what callers get back. Detached, immutable, and never carrying secrets.

Credentials are write-only; generated key material is only returned by an explicit,
authorised call (``Service.instance_key``), never as part of a view or an event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from cloudstate.domain.states import InstanceState, Operation, allowed_actions
from cloudstate.store.tables import Account, Instance, Order, Subscription


@dataclass(frozen=True)
class InstanceView:
    uuid: UUID
    name: str
    account: str
    order_id: UUID | None
    state: InstanceState
    raw_state: str
    state_reason: str
    operation: Operation | None
    provider_id: str | None
    image: str
    hardware_profile: str
    hardware: dict[str, int]
    keyname: str | None
    realm: str | None
    labels: dict[str, str]
    public_addresses: tuple[str, ...]
    private_addresses: tuple[str, ...]
    key_fingerprint: str | None
    last_error: str
    launched_at: datetime | None
    state_changed_at: datetime
    last_seen_at: datetime | None
    created_at: datetime
    event_seq: int
    allowed_actions: tuple[str, ...] = field(default=())
    launch_attempts: tuple[dict[str, Any], ...] = field(default=())
    failover: tuple[str, ...] = field(default=())
    after: tuple[UUID, ...] = field(default=())

    def as_event_data(self) -> dict[str, Any]:
        """The instance as events carry it (JSON-ready; no user data, no key material)."""
        return {
            "uuid": str(self.uuid),
            "name": self.name,
            "account": self.account,
            "order_id": str(self.order_id) if self.order_id else None,
            "state": str(self.state),
            "raw_state": self.raw_state,
            "state_reason": self.state_reason,
            "operation": str(self.operation) if self.operation else None,
            "provider_id": self.provider_id,
            "public_addresses": list(self.public_addresses),
            "private_addresses": list(self.private_addresses),
            "key_fingerprint": self.key_fingerprint,
            "labels": dict(self.labels),
            "last_error": self.last_error,
            "launched_at": _iso(self.launched_at),
            "state_changed_at": _iso(self.state_changed_at),
        }


def instance_view(row: Instance, account_name: str) -> InstanceView:
    state = InstanceState(row.state)
    operation = Operation(row.operation) if row.operation else None
    return InstanceView(
        uuid=row.uuid,
        name=row.name,
        account=account_name,
        order_id=row.order_id,
        state=state,
        raw_state=row.raw_state,
        state_reason=row.state_reason,
        operation=operation,
        provider_id=row.provider_id,
        image=row.image,
        hardware_profile=row.hardware_profile,
        hardware=dict(row.hardware),
        keyname=row.keyname,
        realm=row.realm,
        labels=row.label_map,
        public_addresses=tuple(row.public_addresses),
        private_addresses=tuple(row.private_addresses),
        key_fingerprint=row.key_fingerprint,
        last_error=row.last_error,
        launched_at=row.launched_at,
        state_changed_at=row.state_changed_at,
        last_seen_at=row.last_seen_at,
        created_at=row.created_at,
        event_seq=row.event_seq,
        allowed_actions=tuple(str(a) for a in allowed_actions(state, operation)),
        launch_attempts=tuple(dict(attempt) for attempt in row.launch_history),
        failover=tuple(row.failover),
        after=tuple(UUID(u) for u in row.after),
    )


@dataclass(frozen=True)
class OrderView:
    id: UUID
    state: str
    policy: str
    created_at: datetime
    instances: tuple[InstanceView, ...]
    reason: str = ""
    launch_deadline: datetime | None = None
    finished_at: datetime | None = None

    @property
    def counts(self) -> dict[str, int]:
        """Its instances by state."""
        found: dict[str, int] = {}
        for instance in self.instances:
            found[str(instance.state)] = found.get(str(instance.state), 0) + 1
        return found


def order_view(row: Order, instances: tuple[InstanceView, ...]) -> OrderView:
    return OrderView(
        id=row.id,
        state=row.state,
        policy=row.policy,
        created_at=row.created_at,
        instances=instances,
        reason=row.reason,
        launch_deadline=row.launch_deadline,
        finished_at=row.finished_at,
    )


@dataclass(frozen=True)
class AccountView:
    """An account without its credentials (they are write-only)."""

    name: str
    provider: str
    config: dict[str, Any]
    has_credentials: bool
    credentials_expire_at: datetime | None
    credentials_from_order: bool
    status: str
    status_reason: str
    created_at: datetime


def account_view(row: Account) -> AccountView:
    return AccountView(
        name=row.name,
        provider=row.provider,
        config=dict(row.config),
        has_credentials=row.credentials is not None,
        credentials_expire_at=row.credentials_expire_at,
        credentials_from_order=row.credentials_from_order,
        status=row.status,
        status_reason=row.status_reason,
        created_at=row.created_at,
    )


@dataclass(frozen=True)
class SubscriptionView:
    id: UUID
    kind: str
    target: str
    filters: dict[str, Any]
    enabled: bool
    disabled_reason: str
    include_keys: bool
    description: str
    created_at: datetime
    secret: str | None = None  # only on creation (shown once)


def subscription_view(row: Subscription, secret: str | None = None) -> SubscriptionView:
    return SubscriptionView(
        id=row.id,
        kind=row.kind,
        target=row.target,
        filters=dict(row.filters),
        enabled=row.enabled,
        disabled_reason=row.disabled_reason,
        include_keys=row.include_keys,
        description=row.description,
        created_at=row.created_at,
        secret=secret,
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
