"""Subscription filters: which events a subscriber wants. Pure, so the store and the API agree.

Every given criterion must match (AND); within a list any value may match (OR). An empty
filter matches every event. Label criteria match instance events whose instance carries all
the given labels.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from cloudstate.domain.events import EventType
from cloudstate.domain.validation import AccountName, Labels


class SubscriptionFilter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    instances: frozenset[uuid.UUID] = Field(default_factory=frozenset)
    order: uuid.UUID | None = None
    account: AccountName | None = None
    labels: Labels = Field(default_factory=dict)
    types: frozenset[EventType] = Field(default_factory=frozenset)

    def matches(
        self,
        event_type: str,
        *,
        instance_uuid: uuid.UUID | None = None,
        order_id: uuid.UUID | None = None,
        account: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> bool:
        if self.types and event_type not in self.types:
            return False
        if self.instances and instance_uuid not in self.instances:
            return False
        if self.order is not None and order_id != self.order:
            return False
        if self.account is not None and account != self.account:
            return False
        have = labels or {}
        return all(have.get(key) == value for key, value in self.labels.items())

    def to_json(self) -> dict[str, object]:
        """The stored form (lists sorted, so equal filters store equally)."""
        return {
            "instances": sorted(str(u) for u in self.instances),
            "order": str(self.order) if self.order else None,
            "account": self.account,
            "labels": dict(sorted(self.labels.items())),
            "types": sorted(str(t) for t in self.types),
        }
