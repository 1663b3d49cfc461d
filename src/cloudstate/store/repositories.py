"""Repositories: queries and row changes for one aggregate each. They never commit.

A repository works inside the session it is given; the unit of work (``store.uow``) owns the
transaction, so a change and the event describing it always commit together or not at all.
Foreign database errors are translated into the ``CloudStateError`` tree here.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from cloudstate.domain.events import EventRecord
from cloudstate.domain.orders import InstanceSpec, LaunchOrder, OrderState
from cloudstate.domain.states import InstanceState
from cloudstate.domain.subscriptions import SubscriptionFilter
from cloudstate.domain.validation import AccountName, parse, parse_field
from cloudstate.exceptions import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    StoreError,
    ValidationError,
)
from cloudstate.store.crypto import SecretBox
from cloudstate.store.tables import (
    Account,
    Event,
    Instance,
    InstanceLabel,
    Order,
    Subscription,
    utcnow,
)

MAX_PAGE = 1000


class _Repository:
    def __init__(self, session: Session, secrets: SecretBox) -> None:
        self.session = session
        self.secrets = secrets


class AccountRepository(_Repository):
    def add(
        self,
        name: str,
        provider: str,
        *,
        config: Mapping[str, Any] | None = None,
        credentials: Mapping[str, str] | None = None,
        credentials_expire_at: datetime | None = None,
    ) -> Account:
        parse_field(AccountName, name, "name")
        if self.find(name) is not None:
            raise AlreadyExistsError("account", name)
        account = Account(
            name=name,
            provider=provider,
            config=dict(config or {}),
            credentials=self.secrets.encrypt_json(credentials) if credentials else None,
            credentials_expire_at=credentials_expire_at,
        )
        self.session.add(account)
        self.session.flush()
        return account

    def find(self, name: str) -> Account | None:
        return self.session.scalar(select(Account).where(Account.name == name))

    def get(self, name: str) -> Account:
        account = self.find(name)
        if account is None:
            raise NotFoundError("account", name)
        return account

    def by_ids(self, ids: Sequence[int]) -> dict[int, Account]:
        rows = self.session.scalars(select(Account).where(Account.id.in_(ids)))
        return {row.id: row for row in rows}

    def list(self) -> list[Account]:
        return list(self.session.scalars(select(Account).order_by(Account.name)))

    def names(self) -> dict[int, str]:
        """Account names by id (small; views and events need the name, rows hold the id)."""
        return dict(self.session.execute(select(Account.id, Account.name)).all())

    def credentials(self, account: Account) -> dict[str, str]:
        """Decrypted credentials, for the driver only: never log or return them."""
        return self.secrets.decrypt_json(account.credentials) if account.credentials else {}

    def set_credentials(self, account: Account, credentials: Mapping[str, str] | None) -> None:
        account.credentials = self.secrets.encrypt_json(credentials) if credentials else None

    def rotate_secrets(self) -> int:
        """Re-encrypt every account's credentials under the newest key; returns how many."""
        count = 0
        for account in self.session.scalars(
            select(Account).where(Account.credentials.is_not(None))
        ):
            assert account.credentials is not None
            account.credentials = self.secrets.rotate(account.credentials)
            count += 1
        return count

    def remove(self, account: Account) -> None:
        live = self.session.scalar(
            select(func.count())
            .select_from(Instance)
            .where(Instance.account_id == account.id, Instance.state != InstanceState.TERMINATED)
        )
        if live:
            raise ConflictError(
                f"account {account.name!r} still has {live} instance(s) that are not terminated; "
                "destroy them first"
            )
        self.session.delete(account)


@dataclass(frozen=True)
class InstanceQuery:
    """Filters for listing instances; every given criterion must match."""

    states: Sequence[InstanceState] = ()
    account: str | None = None
    order_id: uuid.UUID | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    uuids: Sequence[uuid.UUID] = ()


class InstanceRepository(_Repository):
    def add(self, spec: InstanceSpec, account: Account, order_id: uuid.UUID | None) -> Instance:
        """A new instance row, complete before any flush: every column an event or a view
        reads is set here rather than by a column default at INSERT, so the caller can record
        ``instance.created`` first and the INSERT carries its ``event_seq`` (no second write
        of the row)."""
        now = utcnow()
        instance = Instance(
            uuid=spec.uuid,
            order_id=order_id,
            account_id=account.id,
            name=spec.name,
            image=spec.image,
            hardware_profile=spec.hardware_profile,
            hardware=dict(spec.overrides),
            keyname=spec.keyname,
            realm=spec.realm,
            user_data=spec.user_data,
            state=InstanceState.NEW,
            failover=list(spec.failover),
            after=[str(u) for u in spec.after],
            blocked=bool(spec.after),
            labels=[InstanceLabel(key=k, value=v) for k, v in spec.labels.items()],
            raw_state="",
            state_reason="",
            public_addresses=[],
            private_addresses=[],
            last_error="",
            launch_attempts=0,
            launch_history=[],
            event_seq=0,
            created_at=now,
            updated_at=now,
            state_changed_at=now,
        )
        self.session.add(instance)
        return instance

    def find(self, instance_uuid: uuid.UUID) -> Instance | None:
        return self.session.get(Instance, instance_uuid)

    def get(self, instance_uuid: uuid.UUID) -> Instance:
        instance = self.find(instance_uuid)
        if instance is None:
            raise NotFoundError("instance", instance_uuid)
        return instance

    def locked(self, uuids: Sequence[uuid.UUID]) -> list[Instance]:
        """The stored instances among ``uuids``, row-locked until the commit (PostgreSQL;
        SQLite serializes writers anyway) and in uuid order: the order every writer that
        changes several instances locks them in, so two such writers never deadlock."""
        statement = (
            select(Instance)
            .where(Instance.uuid.in_(uuids))
            .order_by(Instance.uuid)
            .with_for_update()
        )
        return list(self.session.scalars(statement))

    def find_many(self, uuids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Instance]:
        """The stored instances among ``uuids``, by uuid (the missing ones are absent): one
        query (and one for their labels) however many, where ``find`` costs two each."""
        if not uuids:
            return {}
        statement = select(Instance).where(Instance.uuid.in_(uuids))
        return {row.uuid: row for row in self.session.scalars(statement)}

    def get_many(self, uuids: Sequence[uuid.UUID]) -> list[Instance]:
        """The instances in the order asked; raises ``NotFoundError`` naming the missing ones."""
        found = self.find_many(uuids)
        missing = [str(u) for u in uuids if u not in found]
        if missing:
            raise NotFoundError("instance", ", ".join(missing))
        return [found[u] for u in uuids]

    def existing(self, uuids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        rows = self.session.scalars(select(Instance.uuid).where(Instance.uuid.in_(uuids)))
        return set(rows)

    def list(
        self, query: InstanceQuery, *, after: uuid.UUID | None = None, limit: int = 100
    ) -> list[Instance]:
        """One page in uuid order; pass the last uuid as ``after`` for the next page."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationError(f"must be between 1 and {MAX_PAGE}", field="limit")
        statement = self._filtered(query).order_by(Instance.uuid).limit(limit)
        if after is not None:
            statement = statement.where(Instance.uuid > after)
        return list(self.session.scalars(statement))

    def count_by_state(self, account_id: int | None = None) -> dict[str, int]:
        statement = select(Instance.state, func.count()).group_by(Instance.state)
        if account_id is not None:
            statement = statement.where(Instance.account_id == account_id)
        return {state: count for state, count in self.session.execute(statement)}

    def _filtered(self, query: InstanceQuery) -> Select[Instance]:
        statement = select(Instance)
        if query.states:
            statement = statement.where(Instance.state.in_([str(s) for s in query.states]))
        if query.account is not None:
            statement = statement.join(Account).where(Account.name == query.account)
        if query.order_id is not None:
            statement = statement.where(Instance.order_id == query.order_id)
        if query.uuids:
            statement = statement.where(Instance.uuid.in_(query.uuids))
        for key, value in query.labels.items():
            statement = statement.where(
                select(InstanceLabel.instance_uuid)
                .where(
                    InstanceLabel.instance_uuid == Instance.uuid,
                    InstanceLabel.key == key,
                    InstanceLabel.value == value,
                )
                .exists()
            )
        return statement

    def key_material(self, instance: Instance) -> str | None:
        """The generated private key, decrypted: only for authorised readers."""
        if instance.key_material is None:
            return None
        return self.secrets.decrypt(instance.key_material).decode()

    def set_key_material(self, instance: Instance, material: str | None) -> None:
        instance.key_material = self.secrets.encrypt(material.encode()) if material else None


class OrderRepository(_Repository):
    def add(
        self,
        order: LaunchOrder,
        request: Mapping[str, Any],
        launch_deadline: datetime | None = None,
    ) -> Order:
        if self.session.get(Order, order.id) is not None:
            raise AlreadyExistsError("order", order.id)
        row = Order(
            id=order.id,
            state=OrderState.ACCEPTED,
            policy=order.policy,
            request=dict(request),
            launch_deadline=launch_deadline,
        )
        self.session.add(row)
        return row

    def get(self, order_id: uuid.UUID) -> Order:
        row = self.session.get(Order, order_id)
        if row is None:
            raise NotFoundError("order", order_id)
        return row


class EventRepository(_Repository):
    def after(
        self,
        seq: int = 0,
        *,
        limit: int = 100,
        where: SubscriptionFilter | None = None,
    ) -> list[Event]:
        """Events with ``seq`` greater than the cursor, oldest first."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationError(f"must be between 1 and {MAX_PAGE}", field="limit")
        statement = select(Event).where(Event.seq > seq).order_by(Event.seq).limit(limit)
        if where is not None:
            statement = _event_filter(statement, where)
        return list(self.session.scalars(statement))

    def for_instance(self, instance_uuid: uuid.UUID) -> list[Event]:
        statement = (
            select(Event)
            .where(Event.instance_uuid == instance_uuid, Event.seq.is_not(None))
            .order_by(Event.instance_seq)
        )
        return list(self.session.scalars(statement))


def _event_filter(statement: Select[Event], where: SubscriptionFilter) -> Select[Event]:
    if where.types:
        statement = statement.where(Event.type.in_([str(t) for t in where.types]))
    if where.instances:
        statement = statement.where(Event.instance_uuid.in_(where.instances))
    if where.order is not None:
        statement = statement.where(Event.order_id == where.order)
    if where.account is not None:
        statement = statement.where(Event.account == where.account)
    for key, value in where.labels.items():
        statement = statement.where(
            select(InstanceLabel.instance_uuid)
            .where(
                InstanceLabel.instance_uuid == Event.instance_uuid,
                InstanceLabel.key == key,
                InstanceLabel.value == value,
            )
            .exists()
        )
    return statement


class SubscriptionRepository(_Repository):
    def add(
        self,
        kind: str,
        target: str,
        where: SubscriptionFilter,
        *,
        secret: str | None = None,
        include_keys: bool = False,
        description: str = "",
        start_seq: int = 0,
    ) -> Subscription:
        row = Subscription(
            kind=kind,
            target=target,
            filters=where.to_json(),
            secret=self.secrets.encrypt(secret.encode()) if secret else None,
            include_keys=include_keys,
            description=description,
            start_seq=start_seq,
        )
        self.session.add(row)
        self.session.flush()
        return row

    def get(self, subscription_id: uuid.UUID) -> Subscription:
        row = self.session.get(Subscription, subscription_id)
        if row is None:
            raise NotFoundError("subscription", subscription_id)
        return row

    def list(self, *, enabled_only: bool = False) -> list[Subscription]:
        statement = select(Subscription).order_by(Subscription.created_at, Subscription.id)
        if enabled_only:
            statement = statement.where(Subscription.enabled.is_(True))
        return list(self.session.scalars(statement))

    def secret(self, row: Subscription) -> str | None:
        return self.secrets.decrypt(row.secret).decode() if row.secret else None

    def remove(self, row: Subscription) -> None:
        self.session.delete(row)


def subscription_filter(row: Subscription) -> SubscriptionFilter:
    return parse(SubscriptionFilter, row.filters)


def event_record(row: Event) -> EventRecord:
    """A committed, numbered event row as the public, detached ``EventRecord`` (readers never
    see an event before its cursor is given: ``store.eventlog``)."""
    if row.seq is None:
        raise StoreError(f"event {row.id} has no cursor yet; it is not readable")
    return EventRecord(
        seq=row.seq,
        id=row.id,
        type=row.type,
        subject=row.subject,
        time=row.time,
        data=dict(row.data),
        instance_uuid=row.instance_uuid,
        instance_seq=row.instance_seq,
        order_id=row.order_id,
        account=row.account,
    )
