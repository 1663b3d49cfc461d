"""Request and response bodies of the REST API (Create / Update / Public models).

Requests forbid unknown fields, so a typo is a 422 naming it rather than a silently ignored
setting. Public models never carry credentials; a subscription's secret and a token's plaintext
appear only in the response that created them.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from cloudstate.domain.auth import Scope
from cloudstate.domain.events import EventRecord, EventType
from cloudstate.domain.orders import LaunchOrderRequest, OrderPolicy, OrderState
from cloudstate.domain.states import Action, InstanceState, Operation
from cloudstate.domain.validation import AccountName, Labels, Name, UtcDatetime
from cloudstate.webhooks.signing import SECRET_PATTERN

WEBHOOK_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#@\s]+"
"""What the URL check asks first (http or https, with a host); it then refuses addresses
inside the network, which no pattern can say."""

if TYPE_CHECKING:  # only the ``of`` constructors name them; keeps the client's import light
    from cloudstate.service.actions import ActionResult
    from cloudstate.service.deliveries import DeliveryView, ReplayResult
    from cloudstate.service.tokens import TokenView
    from cloudstate.service.views import AccountView, InstanceView, OrderView, SubscriptionView
    from cloudstate.service.workers import WorkerView


MAX_SEQ = 2**63 - 1  # the largest sequence the database can hold
MAX_GRACE_SECONDS = 30 * 86400


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(BaseModel):
    """RFC 9457 problem details, with cloudstate's extensions."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    instance: str = ""
    errors: list[dict[str, str]] | None = Field(
        default=None, description="validation errors: one {field, message} per bad field"
    )
    allowed_actions: list[str] | None = Field(
        default=None, description="409 for a forbidden action: what the state allows"
    )


# --- orders and instances -------------------------------------------------------------------


class OrderCreate(LaunchOrderRequest):
    """A launch order: defaults for every instance, and the instances (each may override)."""


class InstanceOut(BaseModel):
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
    event_seq: int = Field(description="the instance's latest per-instance event number")
    launch_attempts: list[LaunchAttemptOut] = Field(
        default_factory=list, description="each launch attempt, oldest first"
    )
    failover: list[str] = Field(
        default_factory=list, description="accounts still to try if a launch is refused"
    )
    after: list[UUID] = Field(
        default_factory=list, description="instances that must be running before it launches"
    )

    @classmethod
    def of(cls, view: InstanceView) -> InstanceOut:
        lists = {"allowed_actions", "public_addresses", "private_addresses", "launch_attempts"}
        return cls(
            **{
                name: getattr(view, name)
                for name in cls.model_fields
                if name not in lists and name not in {"failover", "after"}
            },
            allowed_actions=[Action(a) for a in view.allowed_actions],
            public_addresses=list(view.public_addresses),
            private_addresses=list(view.private_addresses),
            launch_attempts=[LaunchAttemptOut(**attempt) for attempt in view.launch_attempts],
            failover=list(view.failover),
            after=list(view.after),
        )


class LaunchAttemptOut(BaseModel):
    account: str
    error: str | None = Field(description="why it was refused; null: launched there")
    at: datetime


class InstancePage(BaseModel):
    items: list[InstanceOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null at end")


class OrderOut(BaseModel):
    id: UUID
    state: OrderState
    policy: OrderPolicy
    reason: str = Field(description="why it is rolling back, rolled back, cancelled or failed")
    created_at: datetime
    launch_deadline: datetime | None = Field(description="instances not running by then fail")
    finished_at: datetime | None
    counts: dict[str, int] = Field(description="its instances by state")
    instances: list[InstanceOut]

    @classmethod
    def of(cls, view: OrderView) -> OrderOut:
        return cls(
            id=view.id,
            state=OrderState(view.state),
            policy=OrderPolicy(view.policy),
            reason=view.reason,
            created_at=view.created_at,
            launch_deadline=view.launch_deadline,
            finished_at=view.finished_at,
            counts=view.counts,
            instances=[InstanceOut.of(i) for i in view.instances],
        )


class OrderPage(BaseModel):
    items: list[OrderOut] = Field(description="newest first")
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null at end")


class ActionRequest(_Request):
    action: Action
    wait: bool = Field(default=False, description="block until the target state (or timeout)")
    timeout: float = Field(default=60.0, gt=0, le=600, description="seconds, with wait")


class BulkActionRequest(_Request):
    action: Action
    uuids: list[UUID] = Field(min_length=1, max_length=1000)


class ActionResultOut(BaseModel):
    uuid: UUID
    accepted: bool
    operation_id: UUID | None = None
    error: str = ""
    allowed_actions: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, result: ActionResult) -> ActionResultOut:
        return cls(
            uuid=result.uuid,
            accepted=result.accepted,
            operation_id=result.operation_id,
            error=result.error,
            allowed_actions=list(result.allowed),
        )


class ActionResponse(BaseModel):
    result: ActionResultOut
    instance: InstanceOut


class BulkActionResponse(BaseModel):
    accepted: int
    refused: int
    results: list[ActionResultOut]


# --- accounts ---------------------------------------------------------------------------------


class AccountCreate(_Request):
    name: AccountName
    provider: str = Field(min_length=1, max_length=32)
    config: dict[str, Any] = Field(default_factory=dict, description="driver settings (not secret)")
    credentials: dict[str, str] = Field(
        default_factory=dict, description="write-only; encrypted at rest, never returned"
    )
    credentials_expire_at: UtcDatetime | None = Field(
        default=None, description="after this, the account is treated as refusing its credentials"
    )
    verify: bool = Field(
        default=False,
        description="check the credentials with the provider first; store nothing if refused",
    )


class AccountUpdate(_Request):
    config: dict[str, Any] | None = None
    credentials: dict[str, str] | None = Field(
        default=None, description="write-only; replacing them clears a credentials status"
    )
    credentials_expire_at: UtcDatetime | None = Field(
        default=None, description="set with new credentials; omitted there: they never expire"
    )


class AccountVerified(BaseModel):
    ok: bool = Field(description="the provider accepted the credentials")


class AccountOut(BaseModel):
    name: str
    provider: str
    config: dict[str, Any]
    has_credentials: bool
    credentials_expire_at: datetime | None
    credentials_from_order: bool = Field(
        description="given inline by a launch order, so dropped under its retention policy"
    )
    status: str
    status_reason: str
    created_at: datetime

    @classmethod
    def of(cls, view: AccountView) -> AccountOut:
        return cls(**{name: getattr(view, name) for name in cls.model_fields})


# --- subscriptions ----------------------------------------------------------------------------


class SubscriptionFilterIn(_Request):
    instances: list[UUID] = Field(default_factory=list)
    order: UUID | None = None
    account: AccountName | None = None
    labels: Labels = Field(default_factory=dict)
    types: list[EventType] = Field(default_factory=list)


class SubscriptionCreate(_Request):
    url: str = Field(
        min_length=1,
        max_length=2048,
        description="http(s) callback URL",
        json_schema_extra={"pattern": WEBHOOK_URL_PATTERN},
    )
    filters: SubscriptionFilterIn = Field(default_factory=SubscriptionFilterIn)
    secret: str | None = Field(
        default=None,
        pattern=SECRET_PATTERN,
        description="whsec_… signing secret, base64 of at least 24 bytes; generated (and shown "
        "once) if omitted",
    )
    include_keys: bool = False
    description: str = Field(default="", max_length=1000)


class SubscriptionUpdate(_Request):
    url: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        json_schema_extra={"pattern": WEBHOOK_URL_PATTERN},
    )
    filters: SubscriptionFilterIn | None = None
    enabled: bool | None = None
    description: str | None = Field(default=None, max_length=1000)


class SubscriptionOut(BaseModel):
    id: UUID
    kind: Literal["http", "callable"]
    url: str
    filters: dict[str, Any]
    enabled: bool
    disabled_reason: str
    include_keys: bool
    description: str
    created_at: datetime
    secret: str | None = Field(default=None, description="only in the response that created it")

    @classmethod
    def of(cls, view: SubscriptionView) -> SubscriptionOut:
        return cls(
            id=view.id,
            kind="http" if view.kind == "http" else "callable",
            url=view.target,
            filters=view.filters,
            enabled=view.enabled,
            disabled_reason=view.disabled_reason,
            include_keys=view.include_keys,
            description=view.description,
            created_at=view.created_at,
            secret=view.secret,
        )


class SecretRotation(_Request):
    secret: str | None = Field(
        default=None,
        pattern=SECRET_PATTERN,
        description="the new whsec_… secret, base64 of at least 24 bytes; generated (and shown "
        "once) if omitted",
    )
    grace_seconds: float = Field(
        default=86400.0,
        ge=0,
        le=MAX_GRACE_SECONDS,
        description="how long the old secret keeps signing beside the new one (0: stop at once)",
    )


class RotatedSubscriptionOut(SubscriptionOut):
    previous_secret_expires_at: datetime | None = Field(
        description="until when the old secret also signs; null if it stopped at once"
    )

    @classmethod
    def rotated(cls, view: SubscriptionView, expires: datetime | None) -> RotatedSubscriptionOut:
        return cls(**SubscriptionOut.of(view).model_dump(), previous_secret_expires_at=expires)


# --- deliveries -------------------------------------------------------------------------------


DeliveryState = Literal["pending", "delivering", "delivered", "dead", "cancelled"]


class DeliveryOut(BaseModel):
    id: int
    subscription_id: UUID
    event_seq: int = Field(description="the event's global sequence (the cursor)")
    event_id: UUID = Field(description="the event id: the webhook-id header")
    event_type: str
    subject: str
    instance_seq: int | None = Field(description="the per-instance sequence (data.sequence)")
    event_time: datetime = Field(description="when the event was recorded and first queued")
    status: DeliveryState
    attempts: int
    last_status_code: int | None = Field(description="the receiver's answer to the last attempt")
    last_error: str
    next_attempt_at: datetime | None = Field(description="while pending: when it is due")
    last_attempt_at: datetime | None
    delivered_at: datetime | None

    @classmethod
    def of(cls, view: DeliveryView) -> DeliveryOut:
        return cls(**{name: getattr(view, name) for name in cls.model_fields})


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_after: int | None = Field(description="pass as ?after= for the next page; null at end")


class ReplayRequest(_Request):
    after: int = Field(ge=0, le=MAX_SEQ, description="replay the events after this seq")
    limit: int = Field(default=10_000, ge=1, le=10_000, description="at most this many events")


class ReplayOut(BaseModel):
    after: int
    through: int = Field(description="the last event seq considered; continue from here")
    queued: int = Field(description="deliveries now pending: reset + created")
    reset: int = Field(description="existing deliveries restarted with a fresh schedule")
    created: int = Field(description="deliveries of events the subscription never had")
    in_flight: int = Field(description="left alone: an attempt was under way")
    more: bool = Field(description="matching events remain after 'through'")

    @classmethod
    def of(cls, result: ReplayResult) -> ReplayOut:
        return cls(**{name: getattr(result, name) for name in cls.model_fields})


# --- events and realms ------------------------------------------------------------------------


class EventOut(BaseModel):
    seq: int = Field(description="global sequence: the cursor to resume after")
    id: UUID
    type: str
    subject: str
    time: datetime
    instance_uuid: UUID | None
    instance_seq: int | None
    order_id: UUID | None
    account: str | None
    data: dict[str, Any]

    @classmethod
    def of(cls, record: EventRecord) -> EventOut:
        return cls(**{name: getattr(record, name) for name in cls.model_fields})


class EventPage(BaseModel):
    items: list[EventOut]
    next_after: int = Field(description="pass as ?after= to continue")
    last_seq: int = Field(description="the newest event's seq: start watching from here")


class RealmOut(BaseModel):
    account: str
    name: str
    available: bool
    reason: str
    updated_at: datetime


# --- workers --------------------------------------------------------------------------------


class WorkerOut(BaseModel):
    id: str
    host: str
    pid: int
    version: str
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    alive: bool = Field(description="heartbeat within the last three intervals, not stopped")
    holds: dict[str, Any] = Field(
        description="at its last heartbeat: leased accounts, operations and deliveries in hand"
    )

    @classmethod
    def of(cls, view: WorkerView) -> WorkerOut:
        return cls(**{name: getattr(view, name) for name in cls.model_fields})


# --- tokens ---------------------------------------------------------------------------------


class TokenCreate(_Request):
    name: Name
    scopes: list[Scope] = Field(min_length=1)


class TokenOut(BaseModel):
    id: UUID
    name: str
    prefix: str
    scopes: list[Scope]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    token: str | None = Field(default=None, description="only in the response that created it")

    @classmethod
    def of(cls, view: TokenView, plaintext: str | None = None) -> TokenOut:
        return cls(
            id=view.id,
            name=view.name,
            prefix=view.prefix,
            scopes=list(view.scopes),
            created_at=view.created_at,
            last_used_at=view.last_used_at,
            revoked_at=view.revoked_at,
            token=plaintext,
        )


# --- health -----------------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    database: bool
    migrations: str
