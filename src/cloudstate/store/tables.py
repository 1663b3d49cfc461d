"""The schema: SQLAlchemy 2 models, identical on SQLite and PostgreSQL.

Alembic migrations under ``store/migrations`` create exactly this; a test compares the two.
Timestamps are timezone-aware UTC on both databases (``UTCDateTime``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy import (
    false as sa_false,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC; always returns aware datetimes (SQLite would otherwise drop the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use datetime.now(UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {  # noqa: RUF012 (SQLAlchemy reads this class attribute)
        datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
        float: Double(),
        list[Any]: JSONType,
        UUID: Uuid(),
        bytes: LargeBinary(),
    }


class Account(Base):
    """A provider account: kind, region/endpoint and encrypted credentials."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    provider: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    credentials: Mapped[bytes | None] = mapped_column(comment="Fernet token; never plaintext")
    credentials_expire_at: Mapped[datetime | None]
    credentials_from_order: Mapped[bool] = mapped_column(
        Boolean,
        default=False,
        server_default=sa_false(),
        comment="given inline by a launch order: dropped under the retention policy",
    )
    status: Mapped[str] = mapped_column(String(32), default="ok")
    status_reason: Mapped[str] = mapped_column(Text, default="")
    next_reconcile_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_cycle_at: Mapped[datetime | None] = mapped_column(comment="last complete listing")
    realms_checked_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_accounts_next_reconcile_at", "next_reconcile_at"),)


class Orphan(Base):
    """A cloud instance tagged as ours that we have no record of (or a duplicate of one)."""

    __tablename__ = "orphans"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    provider_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    uuid: Mapped[UUID | None]
    raw_state: Mapped[str] = mapped_column(String(64), default="")
    reason: Mapped[str] = mapped_column(String(32), comment="unknown | duplicate")
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class Realm(Base):
    """Availability of one realm (zone) of one account, as last observed."""

    __tablename__ = "realms"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    available: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Order(Base):
    """A launch order: many instances launched together under one policy."""

    __tablename__ = "orders"

    id: Mapped[UUID] = mapped_column(primary_key=True)
    state: Mapped[str] = mapped_column(String(32))
    policy: Mapped[str] = mapped_column(String(32))
    request: Mapped[dict[str, Any]] = mapped_column(default=dict, comment="the order as given")
    reason: Mapped[str] = mapped_column(
        Text, default="", comment="why it is rolling back, rolled back, cancelled or failed"
    )
    launch_deadline: Mapped[datetime | None] = mapped_column(
        comment="instances not running by then fail (launch timeout)"
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None]

    instances: Mapped[list[Instance]] = relationship(back_populates="order")

    __table_args__ = (
        Index("ix_orders_state", "state"),
        Index("ix_orders_created_at_id", "created_at", "id"),  # the newest-first listing
    )


class Instance(Base):
    """One instance, requested and observed. The caller's UUID is the key."""

    __tablename__ = "instances"

    uuid: Mapped[UUID] = mapped_column(primary_key=True)
    order_id: Mapped[UUID | None] = mapped_column(ForeignKey("orders.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    name: Mapped[str] = mapped_column(String(63))
    # requested
    image: Mapped[str] = mapped_column(String(255))
    hardware_profile: Mapped[str] = mapped_column(String(255))
    hardware: Mapped[dict[str, Any]] = mapped_column(default=dict, comment="resolved overrides")
    keyname: Mapped[str | None] = mapped_column(String(255))
    realm: Mapped[str | None] = mapped_column(String(255))
    user_data: Mapped[str | None] = mapped_column(Text)
    # observed
    state: Mapped[str] = mapped_column(String(32))
    raw_state: Mapped[str] = mapped_column(String(64), default="")
    state_reason: Mapped[str] = mapped_column(Text, default="")
    operation: Mapped[str | None] = mapped_column(String(32))
    provider_id: Mapped[str | None] = mapped_column(String(255))
    public_addresses: Mapped[list[Any]] = mapped_column(default=list)
    private_addresses: Mapped[list[Any]] = mapped_column(default=list)
    key_fingerprint: Mapped[str | None] = mapped_column(String(255))
    key_material: Mapped[bytes | None] = mapped_column(comment="Fernet token; never plaintext")
    last_error: Mapped[str] = mapped_column(Text, default="")
    launched_at: Mapped[datetime | None]
    state_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime | None]
    # launcher bookkeeping
    launch_attempts: Mapped[int] = mapped_column(Integer, default=0)
    launch_requested_at: Mapped[datetime | None] = mapped_column(
        comment="when a create call was last sent; before any retry we look the UUID up"
    )
    next_attempt_at: Mapped[datetime | None]
    failover: Mapped[list[Any]] = mapped_column(
        default=list, comment="accounts still to try, in order, if a launch is refused here"
    )
    launch_history: Mapped[list[Any]] = mapped_column(
        default=list, comment="each launch attempt: account, error (null: launched), when"
    )
    after: Mapped[list[Any]] = mapped_column(
        default=list, comment="instance UUIDs that must be running before this one launches"
    )
    blocked: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=sa_false(), comment="waiting for ``after``"
    )
    # outbox
    event_seq: Mapped[int] = mapped_column(Integer, default=0, comment="last per-instance seq")
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    order: Mapped[Order | None] = relationship(back_populates="instances")
    account: Mapped[Account] = relationship()
    labels: Mapped[list[InstanceLabel]] = relationship(
        cascade="all, delete-orphan", lazy="selectin"
    )

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 (SQLAlchemy's API)
    __table_args__ = (
        UniqueConstraint("account_id", "provider_id", name="uq_instances_account_provider_id"),
        Index("ix_instances_account_state", "account_id", "state"),
        Index("ix_instances_state_next_attempt", "state", "next_attempt_at"),
        Index("ix_instances_order_id", "order_id"),
        # The launcher's claim: due `new` instances, oldest first per account.
        Index(
            "ix_instances_new_by_account",
            "account_id",
            "created_at",
            postgresql_where=text("state = 'new'"),
            sqlite_where=text("state = 'new'"),
        ),
    )

    @property
    def label_map(self) -> dict[str, str]:
        return {label.key: label.value for label in self.labels}


class InstanceLabel(Base):
    """Labels as rows, so that a label filter is an indexed join on both databases."""

    __tablename__ = "instance_labels"

    instance_uuid: Mapped[UUID] = mapped_column(
        ForeignKey("instances.uuid", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))

    __table_args__ = (Index("ix_instance_labels_key_value", "key", "value"),)


class OperationRow(Base):
    """An accepted action: queued, then claimed and executed by a worker."""

    __tablename__ = "operations"

    id: Mapped[UUID] = mapped_column(primary_key=True, default=uuid4)
    instance_uuid: Mapped[UUID] = mapped_column(ForeignKey("instances.uuid"))
    action: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_until: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_operations_status_next_attempt", "status", "next_attempt_at"),
        Index("ix_operations_instance_uuid", "instance_uuid"),
    )


class Event(Base):
    """The change log (transactional outbox). Append-only.

    ``number`` orders inserts only (an identity, handed out before commit, so not in commit
    order on PostgreSQL); ``seq`` is the public cursor: gap-free and in commit order, given to
    an event once it has committed (``store.eventlog``). Null until then: readers never see
    an event without one.
    """

    __tablename__ = "events"

    number: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    seq: Mapped[int | None] = mapped_column(BigInteger)
    id: Mapped[UUID] = mapped_column(unique=True, default=uuid4)
    type: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255))
    instance_uuid: Mapped[UUID | None]
    instance_seq: Mapped[int | None] = mapped_column(Integer)
    order_id: Mapped[UUID | None]
    account: Mapped[str | None] = mapped_column(String(63))
    time: Mapped[datetime] = mapped_column(default=utcnow)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (
        UniqueConstraint("instance_uuid", "instance_seq", name="uq_events_instance_seq"),
        Index("uq_events_seq", "seq", unique=True),
        # The sequencer's work list: committed events still waiting for their ``seq``.
        Index(
            "ix_events_unnumbered",
            "number",
            postgresql_where=text("seq IS NULL"),
            sqlite_where=text("seq IS NULL"),
        ),
        Index("ix_events_time", "time"),
        Index("ix_events_order_id", "order_id"),
    )


class EventCounter(Base):
    """One row: the last ``seq`` handed out. Only the sequencer writes it (never a writer of
    events), so holding it never makes an event-writing transaction wait."""

    __tablename__ = "event_counter"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)


class Subscription(Base):
    """Who wants which events: a URL (service) or a registered callable name (embedded)."""

    __tablename__ = "subscriptions"

    id: Mapped[UUID] = mapped_column(primary_key=True, default=uuid4)
    kind: Mapped[str] = mapped_column(String(16), comment="http | callable")
    target: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    filters: Mapped[dict[str, Any]] = mapped_column(
        default=dict, comment="instances, order, account, labels, types"
    )
    secret: Mapped[bytes | None] = mapped_column(comment="Fernet token of the signing secret")
    previous_secret: Mapped[bytes | None] = mapped_column(comment="still signs until expiry")
    previous_secret_expires_at: Mapped[datetime | None]
    include_keys: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str] = mapped_column(Text, default="")
    start_seq: Mapped[int] = mapped_column(BigId, default=0, comment="events after this only")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Delivery(Base):
    """One event for one subscription: attempts, schedule and outcome."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    subscription_id: Mapped[UUID] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="CASCADE")
    )
    event_number: Mapped[int] = mapped_column(BigId, ForeignKey("events.number"))
    ordering_key: Mapped[str] = mapped_column(
        String(255), comment="instance uuid (or subject): one in flight per key"
    )
    head: Mapped[bool] = mapped_column(
        Boolean,
        default=False,
        server_default=sa_false(),
        comment="the one open delivery of its (subscription, key) that may be sent now",
    )
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str] = mapped_column(Text, default="")
    delivered_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_until: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint(
            "subscription_id", "event_number", name="uq_deliveries_subscription_event"
        ),
        Index("ix_deliveries_status_next_attempt", "status", "next_attempt_at"),
        Index(
            "ix_deliveries_subscription_key_seq", "subscription_id", "ordering_key", "event_number"
        ),
        # The next head of a key, once the current one is finished: unfinished rows only.
        Index(
            "ix_deliveries_open_by_key",
            "subscription_id",
            "ordering_key",
            "event_number",
            postgresql_where=text("status IN ('pending', 'delivering')"),
            sqlite_where=text("status IN ('pending', 'delivering')"),
        ),
        # The claim walks pending heads in event order and stops after its window: its cost
        # is that of the window, however many deliveries wait behind one head.
        Index(
            "ix_deliveries_pending_heads",
            "event_number",
            "id",
            postgresql_where=text("status = 'pending' AND head"),
            sqlite_where=text("status = 'pending' AND head"),
        ),
    )


class ApiToken(Base):
    """A bearer token for the REST API. Only its SHA-256 digest is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[UUID] = mapped_column(primary_key=True, default=uuid4)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    prefix: Mapped[str] = mapped_column(String(16), comment="first characters, for recognition")
    digest: Mapped[str] = mapped_column(String(64), unique=True, comment="sha256 hex")
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Worker(Base):
    """A worker process, as it last reported itself (``GET /v1/workers``)."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(32), default="")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[datetime | None]
    holds: Mapped[dict[str, Any]] = mapped_column(
        default=dict, comment="what it held at its last heartbeat"
    )

    __table_args__ = (Index("ix_workers_heartbeat_at", "heartbeat_at"),)


class LeaseLog(Base):
    """Every account lease a worker took for a reconcile cycle, and when it ended: the record
    that no account was ever reconciled by two workers at once."""

    __tablename__ = "lease_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    worker_id: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(comment="renewed with the lease")
    finished_at: Mapped[datetime | None] = mapped_column(comment="null: crashed or still held")
    completed: Mapped[bool] = mapped_column(
        Boolean,
        default=False,
        server_default=sa_false(),
        comment="the cycle listed every page and judged what it did not see",
    )

    __table_args__ = (
        Index("ix_lease_log_account_started", "account_id", "started_at"),
        Index("ix_lease_log_open", "account_id", "worker_id", "finished_at"),
    )


class CallBudgetRow(Base):
    """An account's provider call budget, shared by every worker (a token bucket)."""

    __tablename__ = "call_budgets"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    rate: Mapped[float | None] = mapped_column(comment="calls per second now; null: unlimited")
    burst: Mapped[float] = mapped_column(default=1.0)
    tokens: Mapped[float] = mapped_column(default=1.0)
    refilled_at: Mapped[datetime] = mapped_column(default=utcnow)
    throttled_at: Mapped[datetime | None]
