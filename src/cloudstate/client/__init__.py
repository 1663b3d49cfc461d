"""The cloudstate REST API from Python: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

::

    from cloudstate.client import Client

    with Client() as api:                      # CLOUDSTATE_URL / CLOUDSTATE_TOKEN / token file
        order = api.launch(image="img-web", hardware_profile="small", account="simulator",
                           instances=[{"uuid": str(uuid.uuid4())}])
        for event in api.stream(after=0):      # resumes by itself after a disconnect
            print(event.seq, event.type, event.subject)

Results are the API's own pydantic models (``cloudstate.client.models``); errors are the
exception tree of ``cloudstate.exceptions`` plus the few HTTP-only ones in
``cloudstate.client.errors``.
"""

from __future__ import annotations

from cloudstate.client.aio import AsyncClient
from cloudstate.client.calls import EventFilters, InstanceFilters
from cloudstate.client.errors import (
    AuthenticationError,
    CursorExpiredError,
    ServerError,
    UnreachableError,
)
from cloudstate.client.models import (
    Account,
    ActionOutcome,
    ActionResult,
    BulkResult,
    Delivery,
    DeliveryPage,
    Event,
    EventPage,
    ExternalActionResult,
    ExternalResult,
    Health,
    Instance,
    InstancePage,
    Order,
    OrderPage,
    Readiness,
    Realm,
    Replay,
    RotatedSubscription,
    SimulatedInstance,
    Subscription,
    Token,
    Worker,
)
from cloudstate.client.sync import Client

__all__ = [
    "Account",
    "ActionOutcome",
    "ActionResult",
    "AsyncClient",
    "AuthenticationError",
    "BulkResult",
    "Client",
    "CursorExpiredError",
    "Delivery",
    "DeliveryPage",
    "Event",
    "EventFilters",
    "EventPage",
    "ExternalActionResult",
    "ExternalResult",
    "Health",
    "Instance",
    "InstanceFilters",
    "InstancePage",
    "Order",
    "OrderPage",
    "Readiness",
    "Realm",
    "Replay",
    "RotatedSubscription",
    "ServerError",
    "SimulatedInstance",
    "Subscription",
    "Token",
    "UnreachableError",
    "Worker",
]
