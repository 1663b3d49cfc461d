"""Every API call as data: method, path, query, body and how to read the answer.

``Client`` and ``AsyncClient`` differ only in how they send a ``Call``; building requests and
reading answers lives here once, so the two cannot disagree.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Generic, TypedDict, TypeVar
from urllib.parse import quote
from uuid import UUID

from cloudstate.client.models import (
    Account,
    ActionOutcome,
    BulkResult,
    Delivery,
    DeliveryPage,
    EventPage,
    ExternalActionResult,
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

T = TypeVar("T")
Params = list[tuple[str, str]]
Labels = Mapping[str, str] | Iterable[str] | None
"""``{"role": "web"}`` or ``["role=web"]``; several labels must all match."""


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    read: Callable[[Any], T]
    params: Params = field(default_factory=list)
    body: Any = None
    extra_timeout: float = 0.0  # seconds the server may legitimately take beyond the usual
    also_ok: frozenset[int] = frozenset()  # error statuses whose body is still the answer
    text: bool = False  # the answer is plain text, not JSON

    def content(self) -> bytes | None:
        if self.body is None:
            return None
        return json.dumps(self.body, default=_jsonable, separators=(",", ":")).encode()


def _jsonable(value: object) -> object:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _nothing(_: Any) -> None:
    return None


def _list_of(model: Callable[[Any], T]) -> Callable[[Any], list[T]]:
    def read(body: Any) -> list[T]:
        return [model(item) for item in body]

    return read


def _token_and_plaintext(body: Any) -> tuple[Token, str]:
    return Token.model_validate(body), str(body["token"])


def _segment(value: object) -> str:
    return quote(str(value), safe="")


def label_params(labels: Labels) -> Params:
    if labels is None:
        return []
    pairs = [f"{k}={v}" for k, v in labels.items()] if isinstance(labels, Mapping) else list(labels)
    return [("label", pair) for pair in pairs]


def _many(name: str, values: str | Iterable[object] | None) -> Params:
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [(name, str(value)) for value in values]


def _one(name: str, value: object | None) -> Params:
    return [] if value is None else [(name, str(value))]


# --- orders and instances -------------------------------------------------------------------


def launch(order: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> Call[Order]:
    return Call("POST", "/v1/orders", Order.model_validate, body={**(order or {}), **fields})


def get_order(order_id: UUID | str) -> Call[Order]:
    return Call("GET", f"/v1/orders/{_segment(order_id)}", Order.model_validate)


def list_orders(
    state: str | Iterable[str] | None, *, limit: int | None, cursor: str | None
) -> Call[OrderPage]:
    params = [*_many("state", state), *_one("limit", limit), *_one("cursor", cursor)]
    return Call("GET", "/v1/orders", OrderPage.model_validate, params)


def cancel_order(order_id: UUID | str) -> Call[Order]:
    return Call("POST", f"/v1/orders/{_segment(order_id)}/cancel", Order.model_validate)


def get_instance(uuid: UUID | str) -> Call[Instance]:
    return Call("GET", f"/v1/instances/{_segment(uuid)}", Instance.model_validate)


def list_instances(
    filters: InstanceFilters, *, limit: int | None, cursor: str | None
) -> Call[InstancePage]:
    params = [
        *_many("state", filters.get("state")),
        *_one("account", filters.get("account")),
        *_one("order", filters.get("order")),
        *label_params(filters.get("labels")),
        *_one("limit", limit),
        *_one("cursor", cursor),
    ]
    return Call("GET", "/v1/instances", InstancePage.model_validate, params)


def action(uuid: UUID | str, name: str, *, wait: bool, timeout: float) -> Call[ActionOutcome]:
    return Call(
        "POST",
        f"/v1/instances/{_segment(uuid)}/actions",
        ActionOutcome.model_validate,
        body={"action": name, "wait": wait, "timeout": timeout},
        extra_timeout=timeout if wait else 0.0,
    )


def bulk_action(uuids: Iterable[UUID | str], name: str) -> Call[BulkResult]:
    body = {"action": name, "uuids": [str(u) for u in uuids]}
    return Call("POST", "/v1/instances/actions", BulkResult.model_validate, body=body)


def destroy(uuid: UUID | str) -> Call[ActionOutcome]:
    return Call("DELETE", f"/v1/instances/{_segment(uuid)}", ActionOutcome.model_validate)


# --- accounts, subscriptions, realms, tokens ------------------------------------------------


def list_accounts() -> Call[list[Account]]:
    return Call("GET", "/v1/accounts", _list_of(Account.model_validate))


def get_account(name: str) -> Call[Account]:
    return Call("GET", f"/v1/accounts/{_segment(name)}", Account.model_validate)


def add_account(
    name: str,
    provider: str,
    config: Mapping[str, Any] | None,
    credentials: Mapping[str, str] | None,
) -> Call[Account]:
    body = {
        "name": name,
        "provider": provider,
        "config": dict(config or {}),
        "credentials": dict(credentials or {}),
    }
    return Call("POST", "/v1/accounts", Account.model_validate, body=body)


def update_account(
    name: str, config: Mapping[str, Any] | None, credentials: Mapping[str, str] | None
) -> Call[Account]:
    body = {
        key: dict(value)
        for key, value in (("config", config), ("credentials", credentials))
        if value is not None
    }
    return Call("PATCH", f"/v1/accounts/{_segment(name)}", Account.model_validate, body=body)


def verify_account(name: str) -> Call[bool]:
    return Call("POST", f"/v1/accounts/{_segment(name)}/verify", _ok)


def _ok(payload: Any) -> bool:
    return bool(payload["ok"])


def remove_account(name: str) -> Call[None]:
    return Call("DELETE", f"/v1/accounts/{_segment(name)}", _nothing)


def list_subscriptions() -> Call[list[Subscription]]:
    return Call("GET", "/v1/subscriptions", _list_of(Subscription.model_validate))


def get_subscription(subscription_id: UUID | str) -> Call[Subscription]:
    path = f"/v1/subscriptions/{_segment(subscription_id)}"
    return Call("GET", path, Subscription.model_validate)


def subscribe(body: Mapping[str, Any]) -> Call[Subscription]:
    return Call("POST", "/v1/subscriptions", Subscription.model_validate, body=dict(body))


def update_subscription(
    subscription_id: UUID | str, changes: Mapping[str, Any]
) -> Call[Subscription]:
    body = {key: value for key, value in changes.items() if value is not None}
    path = f"/v1/subscriptions/{_segment(subscription_id)}"
    return Call("PATCH", path, Subscription.model_validate, body=body)


def unsubscribe(subscription_id: UUID | str) -> Call[None]:
    return Call("DELETE", f"/v1/subscriptions/{_segment(subscription_id)}", _nothing)


def enable_subscription(subscription_id: UUID | str) -> Call[Subscription]:
    path = f"/v1/subscriptions/{_segment(subscription_id)}/enable"
    return Call("POST", path, Subscription.model_validate)


def rotate_secret(
    subscription_id: UUID | str, secret: str | None, grace_seconds: float
) -> Call[RotatedSubscription]:
    path = f"/v1/subscriptions/{_segment(subscription_id)}/rotate-secret"
    body = {"secret": secret, "grace_seconds": grace_seconds}
    return Call("POST", path, RotatedSubscription.model_validate, body=body)


def realms(account: str | None) -> Call[list[Realm]]:
    return Call("GET", "/v1/realms", _list_of(Realm.model_validate), _one("account", account))


def workers(include_stopped: bool) -> Call[list[Worker]]:
    params = _one("include_stopped", "true" if include_stopped else None)
    return Call("GET", "/v1/workers", _list_of(Worker.model_validate), params)


def list_tokens() -> Call[list[Token]]:
    return Call("GET", "/v1/tokens", _list_of(Token.model_validate))


def create_token(name: str, scopes: Iterable[str]) -> Call[tuple[Token, str]]:
    body = {"name": name, "scopes": [str(s) for s in scopes]}
    return Call("POST", "/v1/tokens", _token_and_plaintext, body=body)


def revoke_token(name: str) -> Call[Token]:
    return Call("DELETE", f"/v1/tokens/{_segment(name)}", Token.model_validate)


# --- the simulated cloud's console -----------------------------------------------------------


def simulator_instances(account: str | None) -> Call[list[SimulatedInstance]]:
    read = _list_of(SimulatedInstance.model_validate)
    return Call("GET", "/v1/simulator/instances", read, _one("account", account))


def simulator_act(body: Mapping[str, Any]) -> Call[ExternalActionResult]:
    path = "/v1/simulator/instances/actions"
    return Call("POST", path, ExternalActionResult.model_validate, body=dict(body))


def _knobs(body: Any) -> dict[str, Any]:
    return dict(body)


def simulator_knobs(changes: Mapping[str, Any], account: str | None) -> Call[dict[str, Any]]:
    method = "PATCH" if changes else "GET"
    body = dict(changes) if changes else None
    return Call(method, "/v1/simulator/knobs", _knobs, _one("account", account), body=body)


def simulator_realm(name: str, available: bool, reason: str, account: str | None) -> Call[None]:
    body = {"available": available, "reason": reason}
    path = f"/v1/simulator/realms/{_segment(name)}"
    return Call("PUT", path, _nothing, _one("account", account), body=body)


# --- deliveries -----------------------------------------------------------------------------


def deliveries(
    subscription_id: UUID | str, status: str | Iterable[str] | None, after: int, limit: int
) -> Call[DeliveryPage]:
    params = [*_many("status", status), ("after", str(after)), ("limit", str(limit))]
    path = f"/v1/subscriptions/{_segment(subscription_id)}/deliveries"
    return Call("GET", path, DeliveryPage.model_validate, params)


def retry_delivery(delivery_id: int) -> Call[Delivery]:
    return Call("POST", f"/v1/deliveries/{_segment(delivery_id)}/retry", Delivery.model_validate)


def replay(subscription_id: UUID | str, after: int, limit: int | None) -> Call[Replay]:
    body: dict[str, int] = {"after": after} | ({"limit": limit} if limit is not None else {})
    path = f"/v1/subscriptions/{_segment(subscription_id)}/replay"
    return Call("POST", path, Replay.model_validate, body=body)


# --- events and health ----------------------------------------------------------------------


class EventFilters(TypedDict, total=False):
    """What the event page and the stream can filter on (a subscription's filters)."""

    types: str | Iterable[str]
    instances: UUID | str | Iterable[UUID | str]
    order: UUID | str
    account: str
    labels: Mapping[str, str] | Iterable[str]


class InstanceFilters(TypedDict, total=False):
    """What an instance listing can filter on; several states match any, labels match all."""

    state: str | Iterable[str]
    account: str
    order: UUID | str
    labels: Mapping[str, str] | Iterable[str]


def event_filters(filters: EventFilters) -> Params:
    instances = filters.get("instances")
    return [
        *_many("type", filters.get("types")),
        *_many("instance", [instances] if isinstance(instances, UUID) else instances),
        *_one("order", filters.get("order")),
        *_one("account", filters.get("account")),
        *label_params(filters.get("labels")),
    ]


def events(after: int, limit: int, filters: Params) -> Call[EventPage]:
    params = [*filters, ("after", str(after)), ("limit", str(limit))]
    return Call("GET", "/v1/events", EventPage.model_validate, params)


def health() -> Call[Health]:
    return Call("GET", "/healthz", Health.model_validate)


def ready() -> Call[Readiness]:
    return Call("GET", "/readyz", Readiness.model_validate, also_ok=frozenset({503}))


def last_event_seq() -> Call[int]:
    """The newest event's seq (0 when there is none yet), from a one-event page."""
    return Call(
        "GET", "/v1/events", lambda body: EventPage.model_validate(body).last_seq, [("limit", "1")]
    )
