"""The client's typed results: the API's own response models, under the names a caller uses.

These are aliases, not copies, so the client cannot drift from what the server sends.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from cloudstate.api.schemas import (
    AccountOut,
    ActionResponse,
    ActionResultOut,
    BulkActionResponse,
    DeliveryOut,
    DeliveryPage,
    EventOut,
    EventPage,
    Health,
    InstanceOut,
    InstancePage,
    OrderOut,
    OrderPage,
    Readiness,
    RealmOut,
    ReplayOut,
    RotatedSubscriptionOut,
    SubscriptionOut,
    TokenOut,
    WorkerOut,
)

Account = AccountOut
ActionOutcome = ActionResponse
ActionResult = ActionResultOut
BulkResult = BulkActionResponse
Delivery = DeliveryOut
Event = EventOut
Instance = InstanceOut
Order = OrderOut
Realm = RealmOut
Worker = WorkerOut
Replay = ReplayOut
RotatedSubscription = RotatedSubscriptionOut
Subscription = SubscriptionOut
Token = TokenOut


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


Knobs = dict[str, Any]

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
    "Order",
    "OrderPage",
    "Readiness",
    "Realm",
    "Replay",
    "RotatedSubscription",
    "SimulatedInstance",
    "Subscription",
    "Token",
]
