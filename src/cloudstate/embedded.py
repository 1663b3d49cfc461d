"""``CloudState``: the whole engine inside your Python program (SQLite and the simulator by
default), with Python callables as subscribers.

    with CloudState(home="/tmp/cs") as cs:
        cs.subscribe(print)
        cs.launch(image="img-basic", hardware_profile="small",
                  instances=[{"uuid": str(uuid4())}])
        cs.burst()
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from uuid import UUID

from cloudstate.config import Settings, load_settings
from cloudstate.domain.events import EventRecord
from cloudstate.domain.states import EFFECTS, Action, InstanceState
from cloudstate.engine import Engine
from cloudstate.exceptions import ConflictError, ValidationError, WaitTimeoutError
from cloudstate.service import accounts, actions, order_control, orders, queries
from cloudstate.service.actions import ActionResult
from cloudstate.service.views import AccountView, InstanceView, OrderView, SubscriptionView
from cloudstate.startup import open_store

log = logging.getLogger("cloudstate")

DEFAULT_ACCOUNT = "simulator"


class CloudState:
    """One process: the store, the engine and your callables. Use as a context manager."""

    def __init__(
        self,
        home: str | Path | None = None,
        database_url: str | None = None,
        *,
        settings: Settings | None = None,
        default_account: bool = True,
        log_events: bool = False,
        **overrides: Any,
    ) -> None:
        if settings is None:
            given = {"home": home, "database_url": database_url, **overrides}
            settings = load_settings(**{k: v for k, v in given.items() if v is not None})
        self.settings = settings
        self.store = open_store(settings)
        self.engine = Engine(self.store, settings, log_events=log_events)
        if default_account:
            self._ensure_default_account()

    # lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> CloudState:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def run(self) -> None:
        """Run every worker in the foreground until SIGTERM or SIGINT."""
        self.engine.run_forever()

    def start(self) -> None:
        """Run every worker in background threads (stop with ``close()``)."""
        self.engine.start()

    def burst(self, timeout: float = 60.0) -> bool:
        """Work until nothing is left to do; False if ``timeout`` passed first."""
        return self.engine.burst(timeout)

    def close(self) -> None:
        self.engine.close()
        self.store.close()

    # accounts -------------------------------------------------------------------------------

    def add_account(
        self,
        name: str,
        provider: str,
        *,
        config: Mapping[str, Any] | None = None,
        credentials: Mapping[str, str] | None = None,
        credentials_expire_at: datetime | None = None,
        verify: bool = False,
    ) -> AccountView:
        """Add a provider account (the driver is built once to check the settings; with
        ``verify``, the credentials are checked with the provider too, and nothing is stored
        if it refuses them: ``ProviderAuthError``)."""
        self.engine.pool.validate(provider, config or {}, credentials or {}, name, probe=verify)
        return accounts.add_account(
            self.store,
            name,
            provider,
            config=config,
            credentials=credentials,
            credentials_expire_at=credentials_expire_at,
        )

    def verify_account(self, name: str) -> None:
        """Check the account's credentials with one cheap provider call. Refused: the account's
        status becomes ``credentials`` and ``ProviderAuthError`` is raised; accepted: a
        ``credentials`` status is cleared."""
        self.engine.pool.verify(name)

    def accounts(self) -> builtins.list[AccountView]:
        return accounts.list_accounts(self.store)

    # orders and instances -------------------------------------------------------------------

    def launch(self, order: Mapping[str, Any] | None = None, /, **fields: Any) -> OrderView:
        """Accept a launch order (a mapping, or its fields as keywords); returns at once."""
        request = {**(order or {}), **fields}
        if "account" not in request and _needs_default(request):
            request["account"] = DEFAULT_ACCOUNT
        view = orders.accept_order(
            self.store,
            self.engine.pool,
            request,
            launch_timeout=self.settings.launch_timeout_seconds,
        )
        self.engine.wake()
        return view

    def order(self, order_id: UUID | str) -> OrderView:
        return queries.get_order(self.store, _uuid(order_id))

    def orders(
        self, *, state: str | Sequence[str] = (), limit: int = 100, after: UUID | str | None = None
    ) -> builtins.list[OrderView]:
        """Orders newest first; pass the last one's id as ``after`` for the next page."""
        states = [state] if isinstance(state, str) else list(state)
        cursor = _uuid(after) if after is not None else None
        return queries.list_orders(self.store, states=states, after=cursor, limit=limit)

    def cancel(self, order_id: UUID | str) -> OrderView:
        """Cancel a launching order: what was launched is destroyed, the rest never launches."""
        view = order_control.cancel_order(self.store, _uuid(order_id))
        self.engine.wake()
        return view

    def get(self, instance_uuid: UUID | str) -> InstanceView:
        return queries.get_instance(self.store, _uuid(instance_uuid))

    def list(
        self,
        *,
        state: str | Sequence[str] = (),
        account: str | None = None,
        order: UUID | str | None = None,
        labels: Mapping[str, str] | None = None,
        after: UUID | str | None = None,
        limit: int = 100,
    ) -> builtins.list[InstanceView]:
        return queries.list_instances(
            self.store,
            states=[state] if isinstance(state, str) else list(state),
            account=account,
            order_id=_uuid(order) if order else None,
            labels=labels,
            after=_uuid(after) if after else None,
            limit=limit,
        )

    def action(
        self,
        uuids: UUID | str | Iterable[UUID | str],
        action: str | Action,
        *,
        wait: bool | float = False,
    ) -> builtins.list[ActionResult]:
        """Start, stop, reboot or destroy; all or nothing. ``wait`` blocks until done
        (``True``: up to ``action_timeout_seconds``; a number: that many seconds)."""
        chosen = actions.parse_action(action)
        targets = [_uuid(u) for u in ([uuids] if isinstance(uuids, UUID | str) else uuids)]
        results = actions.request_actions(self.store, targets, chosen)
        self.engine.wake()
        if wait:
            limit = self.settings.action_timeout_seconds if wait is True else float(wait)
            self.wait_for(targets, EFFECTS[chosen].target, timeout=limit)
        return results

    def wait_for(
        self, uuids: Sequence[UUID], state: InstanceState, *, timeout: float = 60.0
    ) -> builtins.list[InstanceView]:
        """Block until every instance is in ``state`` with no operation in flight.

        Without running workers (no ``start()``/``run()``), the waiting call does the work.
        """
        if self.engine.running:
            return queries.wait_for_state(self.store, uuids, state, timeout=timeout)
        deadline = time.monotonic() + timeout
        while True:
            views = [self.get(u) for u in uuids]
            if queries.settled(views, state):
                return views
            if time.monotonic() >= deadline:
                raise WaitTimeoutError(queries.not_settled_message(views, state, timeout))
            self.engine.burst(timeout=0.5)

    # events and subscriptions ---------------------------------------------------------------

    def subscribe(
        self,
        callback: Callable[[EventRecord], object],
        *,
        name: str | None = None,
        **filters: Any,
    ) -> SubscriptionView:
        """Call ``callback`` for each matching event, in order per instance, at least once.

        ``name`` identifies the subscription across restarts: subscribe again with the same
        name and pending events resume. Filters: ``instances``, ``order``, ``account``,
        ``labels``, ``types``.
        """
        target = name or f"{getattr(callback, '__qualname__', 'callback')}-{id(callback):x}"
        existing = [s for s in accounts.list_subscriptions(self.store) if s.target == target]
        self.engine.callables.register(target, callback, replace=True)
        if existing:
            return existing[0]
        return accounts.add_subscription(self.store, "callable", target, filters)

    def unsubscribe(self, subscription: SubscriptionView | UUID | str) -> None:
        view_id = subscription.id if isinstance(subscription, SubscriptionView) else None
        subscription_id = view_id or _uuid(str(subscription))
        for view in accounts.list_subscriptions(self.store):
            if view.id == subscription_id and view.kind == "callable":
                self.engine.callables.unregister(view.target)
        accounts.remove_subscription(self.store, subscription_id)

    def events(
        self, after: int = 0, *, limit: int = 100, **filters: Any
    ) -> builtins.list[EventRecord]:
        """Committed events after the cursor ``after`` (a previous event's ``seq``)."""
        return queries.events_after(self.store, after, limit=limit, where=filters or None)

    def _ensure_default_account(self) -> None:
        if any(view.name == DEFAULT_ACCOUNT for view in self.accounts()):
            return
        config = {"fast": True} if self.settings.simulator_fast else {}
        try:
            self.add_account(DEFAULT_ACCOUNT, "simulator", config=config)
        except ConflictError as exc:  # another process created it first
            log.debug("default account: %s", exc)


def _needs_default(request: Mapping[str, Any]) -> bool:
    """No account (nor failover accounts) given for some instance: use the default one."""
    if "accounts" in request:
        return False
    items = request.get("instances")
    if not isinstance(items, list):
        return True
    return any(
        not isinstance(i, Mapping) or ("account" not in i and "accounts" not in i) for i in items
    )


def _uuid(value: UUID | str) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise ValidationError(f"{value!r} is not a UUID", field="uuid") from None
