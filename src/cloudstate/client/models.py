"""The client's typed results: the API's own response models, under the names a caller uses.

These are aliases, not copies, so the client cannot drift from what the server sends.
"""

from __future__ import annotations

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

__all__ = [
    "Account",
    "ActionOutcome",
    "ActionResult",
    "BulkResult",
    "Delivery",
    "DeliveryPage",
    "Event",
    "EventPage",
    "Health",
    "Instance",
    "InstancePage",
    "Order",
    "OrderPage",
    "Readiness",
    "Realm",
    "Replay",
    "RotatedSubscription",
    "Subscription",
    "Token",
]
