"""Event types and the draft of an event before the store numbers it.

Every observed change becomes exactly one event, written in the same transaction as the change.
The store gives each a global sequence (the watch cursor) and, for instance events, the next
number of that instance's own sequence, with no gaps.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    INSTANCE_CREATED = "instance.created"
    INSTANCE_STATE_CHANGED = "instance.state_changed"
    INSTANCE_ADDRESSES_CHANGED = "instance.addresses_changed"
    INSTANCE_KEY_AVAILABLE = "instance.key_available"
    INSTANCE_LAUNCH_FAILED = "instance.launch_failed"
    INSTANCE_FAILED_OVER = "instance.failed_over"
    INSTANCE_ACTION_REQUESTED = "instance.action_requested"
    INSTANCE_ACTION_COMPLETED = "instance.action_completed"
    INSTANCE_ACTION_FAILED = "instance.action_failed"
    INSTANCE_ORPHAN_FOUND = "instance.orphan_found"
    REALM_AVAILABILITY_CHANGED = "realm.availability_changed"
    ACCOUNT_CREDENTIALS_REQUIRED = "account.credentials_required"
    ORDER_STATE_CHANGED = "order.state_changed"
    ORDER_COMPLETED = "order.completed"


@dataclass(frozen=True)
class EventDraft:
    """An event as the engine or a use case describes it; the store assigns the numbers.

    ``instance_uuid`` is set for instance events (they get a per-instance sequence); ``order_id``
    and ``account`` let subscriptions filter without opening ``data``.
    """

    type: EventType
    data: dict[str, Any] = field(default_factory=dict)
    instance_uuid: uuid.UUID | None = None
    order_id: uuid.UUID | None = None
    account: str | None = None

    @property
    def subject(self) -> str:
        """The CloudEvents ``subject``: the instance uuid, else the order, account or realm."""
        if self.instance_uuid is not None:
            return str(self.instance_uuid)
        if self.order_id is not None:
            return str(self.order_id)
        return str(self.data.get("realm") or self.account or "")


@dataclass(frozen=True)
class EventRecord:
    """A committed event, as subscribers and the event stream see it.

    ``seq`` is the global cursor (resume after it); ``instance_seq`` numbers the events of one
    instance 1, 2, 3, ... with no gaps. Instance events carry the instance as it is after the
    change in ``data["instance"]``.
    """

    seq: int
    id: uuid.UUID
    type: str
    subject: str
    time: datetime
    data: dict[str, Any]
    instance_uuid: uuid.UUID | None = None
    instance_seq: int | None = None
    order_id: uuid.UUID | None = None
    account: str | None = None
