"""The client's typed results: the API's response bodies, as a client of its own declares them.

The client stands alone: it imports nothing from ``cloudstate.api``, ``cloudstate.store`` or
``cloudstate.config``, so these are its own models, not aliases of the server's. A contract test
(``tests/unit/test_client_standalone.py``) holds each to the API's schema of the same body:
the same fields, the same ones required.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel

from cloudstate.domain.auth import Scope
from cloudstate.domain.orders import OrderPolicy, OrderState
from cloudstate.domain.states import Action, InstanceState, Operation


class LaunchAttempt(BaseModel):
    """One launch attempt of an instance: where, when, and why it was refused (None: it
    launched there)."""

    account: str
    error: str | None
    at: datetime


class Instance(BaseModel):
    uuid: UUID
    name: str
    account: str
    order_id: UUID | None
    state: InstanceState
    raw_state: str
    state_reason: str
    operation: Operation | None
    allowed_actions: list[Action]
    provider_id: str | None
    image: str
    hardware_profile: str
    hardware: dict[str, int]
    keyname: str | None
    realm: str | None
    labels: dict[str, str]
    public_addresses: list[str]
    private_addresses: list[str]
    key_fingerprint: str | None
    last_error: str
    launched_at: datetime | None
    state_changed_at: datetime
    last_seen_at: datetime | None
    created_at: datetime
    event_seq: int
    launch_attempts: list[LaunchAttempt] = []
    failover: list[str] = []
    after: list[UUID] = []


class InstancePage(BaseModel):
    items: list[Instance]
    next_cursor: str | None


class Order(BaseModel):
    id: UUID
    state: OrderState
    policy: OrderPolicy
    reason: str
    created_at: datetime
    launch_deadline: datetime | None
    finished_at: datetime | None
    counts: dict[str, int]
    instances: list[Instance]


class OrderPage(BaseModel):
    items: list[Order]
    next_cursor: str | None


class ActionResult(BaseModel):
    uuid: UUID
    accepted: bool
    operation_id: UUID | None = None
    error: str = ""
    allowed_actions: list[str] = []


class ActionOutcome(BaseModel):
    result: ActionResult
    instance: Instance


class BulkResult(BaseModel):
    accepted: int
    refused: int
    results: list[ActionResult]


class Account(BaseModel):
    name: str
    provider: str
    config: dict[str, Any]
    has_credentials: bool
    credentials_expire_at: datetime | None
    credentials_from_order: bool
    status: str
    status_reason: str
    created_at: datetime


class Subscription(BaseModel):
    id: UUID
    kind: Literal["http", "callable"]
    url: str
    filters: dict[str, Any]
    enabled: bool
    disabled_reason: str
    include_keys: bool
    description: str
    created_at: datetime
    secret: str | None = None


class RotatedSubscription(Subscription):
    previous_secret_expires_at: datetime | None


DeliveryState = Literal["pending", "delivering", "delivered", "dead", "cancelled"]


class Delivery(BaseModel):
    id: int
    subscription_id: UUID
    event_seq: int
    event_id: UUID
    event_type: str
    subject: str
    instance_seq: int | None
    event_time: datetime
    status: DeliveryState
    attempts: int
    last_status_code: int | None
    last_error: str
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    delivered_at: datetime | None


class DeliveryPage(BaseModel):
    items: list[Delivery]
    next_after: int | None


class Replay(BaseModel):
    after: int
    through: int
    queued: int
    reset: int
    created: int
    in_flight: int
    more: bool


class Event(BaseModel):
    seq: int
    id: UUID
    type: str
    subject: str
    time: datetime
    instance_uuid: UUID | None
    instance_seq: int | None
    order_id: UUID | None
    account: str | None
    data: dict[str, Any]


class EventPage(BaseModel):
    items: list[Event]
    next_after: int
    last_seq: int


class Realm(BaseModel):
    account: str
    name: str
    available: bool
    reason: str
    updated_at: datetime


class Worker(BaseModel):
    id: str
    host: str
    pid: int
    version: str
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    alive: bool
    holds: dict[str, Any]


class Token(BaseModel):
    id: UUID
    name: str
    prefix: str
    scopes: list[Scope]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    token: str | None = None


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    database: bool
    migrations: str


class SimulatedInstance(BaseModel):
    """An instance as the simulated cloud holds it (``GET /v1/simulator/instances``)."""

    account: str
    provider_id: str
    name: str
    state: str
    uuid: str | None
    realm: str | None
    public_addresses: list[str]
    private_addresses: list[str]
    labels: dict[str, str]


class ExternalResult(BaseModel):
    """What one change "by someone else" did: ``ok`` and the raw state now, or the error."""

    provider_id: str
    account: str
    name: str
    ok: bool
    state: str
    error: str


class ExternalActionResult(BaseModel):
    """The answer of ``POST /v1/simulator/instances/actions``."""

    done: int
    refused: int
    results: list[ExternalResult]


__all__ = [
    "Account",
    "ActionOutcome",
    "ActionResult",
    "BulkResult",
    "Delivery",
    "DeliveryPage",
    "Event",
    "EventPage",
    "ExternalActionResult",
    "ExternalResult",
    "Health",
    "Instance",
    "InstancePage",
    "LaunchAttempt",
    "Order",
    "OrderPage",
    "Readiness",
    "Realm",
    "Replay",
    "RotatedSubscription",
    "SimulatedInstance",
    "Subscription",
    "Token",
    "Worker",
]
