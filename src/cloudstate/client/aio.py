"""``AsyncClient``: the same API as ``Client``, for asyncio (httpx.AsyncClient)."""

from __future__ import annotations

import asyncio
import builtins
import os
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, TypeVar, Unpack
from uuid import UUID

import httpx
from httpx_sse import EventSource

from cloudstate.client import base, calls, errors, sse
from cloudstate.client.calls import Call, EventFilters, InstanceFilters, Params
from cloudstate.client.models import (
    Account,
    ActionOutcome,
    BulkResult,
    Delivery,
    DeliveryPage,
    Event,
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


class AsyncClient:
    """``Client``'s twin for asyncio: the same methods, awaited, and async iterators.

    Close it with ``await client.aclose()`` or ``async with``. Wrap an iterator you may leave
    early in ``contextlib.aclosing`` so its connection closes at once.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        home: str | os.PathLike[str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._endpoint = base.Endpoint.resolve(url, token, home)
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=self._endpoint.headers(),
            timeout=timeout,
            transport=transport,
        )

    @property
    def url(self) -> str:
        return self._endpoint.url

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self, call: Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method,
                call.path,
                params=tuple(call.params),
                content=call.content(),
                headers=base.content_headers(call),
                timeout=base.timeout_for(call, self._timeout),
            )
        except httpx.TransportError as exc:
            raise errors.unreachable(self.url, exc) from exc
        return base.answer(call, response)

    # --- orders and instances -----------------------------------------------------------------

    async def launch(self, order: Mapping[str, Any] | None = None, **fields: Any) -> Order:
        """Submit a launch order (a mapping, keywords, or both: keywords win); returns at once
        with every instance ``new``. Resubmitting the same instance UUIDs launches nothing twice."""
        return await self._run(calls.launch(order, fields))

    async def get_order(self, order_id: UUID | str) -> Order:
        return await self._run(calls.get_order(order_id))

    async def orders(
        self,
        *,
        state: str | Iterable[str] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> OrderPage:
        """One page of orders, newest first (``state``: only these); pass ``page.next_cursor``
        as ``cursor`` for the next."""
        return await self._run(calls.list_orders(state, limit=limit, cursor=cursor))

    async def iter_orders(
        self, *, state: str | Iterable[str] | None = None, page_size: int = 100
    ) -> AsyncGenerator[Order, None]:
        """Every matching order, newest first, walking the cursor pages."""
        cursor: str | None = None
        while True:
            page = await self.orders(state=state, limit=page_size, cursor=cursor)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def cancel_order(self, order_id: UUID | str) -> Order:
        """Cancel an order still launching: what was launched is destroyed, the rest never
        will be. Returns the order (``rolling_back``, then ``cancelled`` once all is gone); a
        finished order raises ``ConflictError``, an unknown one ``NotFoundError``."""
        return await self._run(calls.cancel_order(order_id))

    async def get(self, uuid: UUID | str) -> Instance:
        return await self._run(calls.get_instance(uuid))

    async def list(
        self,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        **filters: Unpack[InstanceFilters],
    ) -> InstancePage:
        """One page of instances; pass ``page.next_cursor`` as ``cursor`` for the next."""
        return await self._run(calls.list_instances(filters, limit=limit, cursor=cursor))

    async def iter_instances(
        self, *, page_size: int = 100, **filters: Unpack[InstanceFilters]
    ) -> AsyncGenerator[Instance, None]:
        """Every matching instance, walking the cursor pages."""
        cursor: str | None = None
        while True:
            page = await self.list(limit=page_size, cursor=cursor, **filters)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def action(
        self, uuid: UUID | str, action: str, *, wait: bool = False, timeout: float = 60.0
    ) -> ActionOutcome:
        """Request ``start``, ``stop``, ``reboot`` or ``destroy``. A forbidden one raises
        ``ActionNotAllowedError`` (with ``allowed``). With ``wait`` it returns once the target
        state is reached, or raises ``WaitTimeoutError`` after ``timeout`` seconds."""
        return await self._run(calls.action(uuid, action, wait=wait, timeout=timeout))

    async def bulk_action(self, uuids: Iterable[UUID | str], action: str) -> BulkResult:
        """One action on many instances; each has its own result (a refusal stops no other)."""
        return await self._run(calls.bulk_action(uuids, action))

    async def destroy(self, uuid: UUID | str) -> ActionOutcome:
        return await self._run(calls.destroy(uuid))

    # --- accounts, subscriptions, realms, tokens ----------------------------------------------

    async def accounts(self) -> builtins.list[Account]:
        return await self._run(calls.list_accounts())

    async def get_account(self, name: str) -> Account:
        return await self._run(calls.get_account(name))

    async def add_account(
        self,
        name: str,
        provider: str,
        *,
        config: Mapping[str, Any] | None = None,
        credentials: Mapping[str, str] | None = None,
    ) -> Account:
        """Add a provider account; the server builds its driver once to check the settings."""
        return await self._run(calls.add_account(name, provider, config, credentials))

    async def update_account(
        self,
        name: str,
        *,
        config: Mapping[str, Any] | None = None,
        credentials: Mapping[str, str] | None = None,
    ) -> Account:
        return await self._run(calls.update_account(name, config, credentials))

    async def verify_account(self, name: str) -> bool:
        """Have the server check the account's credentials with the provider: True, or a
        ``ServerError`` 502 "Provider refused the credentials" (the account's status is then
        ``credentials``)."""
        return await self._run(calls.verify_account(name))

    async def remove_account(self, name: str) -> None:
        """Remove an account with no live instances (else ``ConflictError``)."""
        await self._run(calls.remove_account(name))

    async def subscriptions(self) -> builtins.list[Subscription]:
        return await self._run(calls.list_subscriptions())

    async def get_subscription(self, subscription_id: UUID | str) -> Subscription:
        return await self._run(calls.get_subscription(subscription_id))

    async def subscribe(
        self,
        url: str,
        *,
        filters: Mapping[str, Any] | None = None,
        secret: str | None = None,
        include_keys: bool = False,
        description: str = "",
    ) -> Subscription:
        """A webhook; the returned ``secret`` (generated if not given) is shown only here."""
        body: dict[str, Any] = {"url": url, "filters": dict(filters or {}), "secret": secret}
        body |= {"include_keys": include_keys, "description": description}
        return await self._run(calls.subscribe(body))

    async def update_subscription(
        self,
        subscription_id: UUID | str,
        *,
        url: str | None = None,
        filters: Mapping[str, Any] | None = None,
        enabled: bool | None = None,
        description: str | None = None,
    ) -> Subscription:
        changes = {"url": url, "filters": filters, "enabled": enabled, "description": description}
        return await self._run(calls.update_subscription(subscription_id, changes))

    async def unsubscribe(self, subscription_id: UUID | str) -> None:
        await self._run(calls.unsubscribe(subscription_id))

    async def enable_subscription(self, subscription_id: UUID | str) -> Subscription:
        """Re-enable a disabled subscription (a 410 disables one); new events flow again, and
        ``replay`` brings back what was cancelled or missed meanwhile."""
        return await self._run(calls.enable_subscription(subscription_id))

    async def rotate_secret(
        self,
        subscription_id: UUID | str,
        *,
        secret: str | None = None,
        grace_seconds: float = 86400.0,
    ) -> RotatedSubscription:
        """A new signing secret (generated if not given), returned only here; the old one
        keeps signing beside it until ``previous_secret_expires_at``."""
        return await self._run(calls.rotate_secret(subscription_id, secret, grace_seconds))

    async def deliveries(
        self,
        subscription_id: UUID | str,
        *,
        status: str | Iterable[str] | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> DeliveryPage:
        """One page of a subscription's delivery log after the event seq ``after``; continue
        from ``next_after`` (``None`` on the last page)."""
        return await self._run(calls.deliveries(subscription_id, status, after, limit))

    async def iter_deliveries(
        self,
        subscription_id: UUID | str,
        *,
        status: str | Iterable[str] | None = None,
        after: int = 0,
        page_size: int = 500,
    ) -> AsyncGenerator[Delivery, None]:
        """The whole delivery log after ``after`` (an event seq), page by page."""
        while True:
            page = await self.deliveries(
                subscription_id, status=status, after=after, limit=page_size
            )
            for item in page.items:
                yield item
            if page.next_after is None:
                return
            after = page.next_after

    async def retry_delivery(self, delivery_id: int) -> Delivery:
        """Send one dead, cancelled or pending delivery again now (``ConflictError`` when it was
        delivered, is in flight, or its subscription is disabled)."""
        return await self._run(calls.retry_delivery(delivery_id))

    async def replay(
        self, subscription_id: UUID | str, after: int, *, limit: int | None = None
    ) -> Replay:
        """Deliver again every event after the cursor ``after`` that the subscription matches;
        ``CursorExpiredError`` when some were pruned already."""
        return await self._run(calls.replay(subscription_id, after, limit))

    async def realms(self, account: str | None = None) -> builtins.list[Realm]:
        return await self._run(calls.realms(account))

    # --- the simulated cloud's console (simulator accounts only) ------------------------------

    async def simulator_instances(
        self, account: str | None = None
    ) -> builtins.list[SimulatedInstance]:
        """What the simulated cloud really holds for each simulator account (raw states)."""
        return await self._run(calls.simulator_instances(account))

    async def simulator_act(
        self,
        action: str,
        provider_ids: Iterable[str] = (),
        *,
        every: bool = False,
        account: str | None = None,
        labels: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> ExternalActionResult:
        """``stop``, ``start``, ``reboot`` or ``terminate`` instances "by someone else": the ids
        given, or every instance the filters select (``every``, ``account``, ``labels``,
        ``name``; all given must match)."""
        body = {
            "action": action,
            "provider_ids": list(provider_ids),
            "all": every,
            "account": account,
            "labels": dict(labels or {}),
            "name": name,
        }
        return await self._run(calls.simulator_act(body))

    async def simulator_knobs(self, account: str | None = None, **changes: Any) -> dict[str, Any]:
        """The simulated cloud's knobs after applying ``changes`` (none: just read them)."""
        return await self._run(calls.simulator_knobs(changes, account))

    async def simulator_realm(
        self, name: str, available: bool, *, reason: str = "", account: str | None = None
    ) -> None:
        """Make a realm of the simulated cloud available or not."""
        await self._run(calls.simulator_realm(name, available, reason, account))

    async def workers(self, *, include_stopped: bool = False) -> builtins.list[Worker]:
        """Worker processes, their last heartbeat and what they hold."""
        return await self._run(calls.workers(include_stopped))

    async def tokens(self) -> builtins.list[Token]:
        return await self._run(calls.list_tokens())

    async def create_token(self, name: str, scopes: Iterable[str]) -> tuple[Token, str]:
        """A new API token and its plaintext (shown this once; the server keeps a digest)."""
        return await self._run(calls.create_token(name, scopes))

    async def revoke_token(self, name: str) -> Token:
        return await self._run(calls.revoke_token(name))

    # --- events and health --------------------------------------------------------------------

    async def events(
        self, after: int = 0, limit: int = 100, **filters: Unpack[EventFilters]
    ) -> EventPage:
        """Up to ``limit`` events after the cursor ``after``; continue from ``next_after``."""
        return await self._run(calls.events(after, limit, calls.event_filters(filters)))

    async def iter_events(
        self, after: int = 0, *, page_size: int = 500, **filters: Unpack[EventFilters]
    ) -> AsyncGenerator[Event, None]:
        """Every recorded event after ``after``, page by page, then stop (see ``stream``)."""
        while True:
            page = await self.events(after, page_size, **filters)
            for event in page.items:
                yield event
            if len(page.items) < page_size:
                return
            after = page.next_after

    async def last_event_seq(self) -> int:
        """The newest event's seq: start a ``stream`` here to see only what happens next."""
        return await self._run(calls.last_event_seq())

    async def stream(
        self, after: int = 0, *, retries: int | None = 5, **filters: Unpack[EventFilters]
    ) -> AsyncGenerator[Event, None]:
        """Every event after ``after``, then live ones as they commit, forever.

        A dropped connection is reopened with ``Last-Event-ID`` set to the last seq yielded, so
        nothing is skipped or repeated. The server's ``retry:`` sets the first delay, doubling
        per consecutive failure; after ``retries`` failed attempts in a row (``None``: never)
        it raises ``UnreachableError``. A cursor older than the retained events raises
        ``CursorExpiredError``. Breaking out of the loop closes the connection.
        """
        params = calls.event_filters(filters)
        cursor, policy, retry, resumed = after, sse.Reconnect(retries), None, False
        while True:
            try:
                async with self._open_stream(params, cursor, resumed) as response:
                    policy.connected()
                    async for message in EventSource(response).aiter_sse():
                        retry = sse.retry_of(message, retry)
                        if message.data:  # a block with only retry: or a comment is no event
                            event = sse.to_event(message)
                            cursor = event.seq
                            yield event
            except httpx.TransportError as exc:
                if _being_cancelled():
                    # The transport can turn a cancellation (Ctrl-C) into a read error:
                    # reconnecting would swallow it and the caller would never stop.
                    raise asyncio.CancelledError from exc
                if not policy.failed():
                    raise errors.unreachable(self.url, exc) from exc
            resumed = True
            await asyncio.sleep(policy.delay(retry))

    @asynccontextmanager
    async def _open_stream(
        self, params: Params, cursor: int, resumed: bool
    ) -> AsyncIterator[httpx.Response]:
        query, headers = base.stream_request(params, cursor, resumed)
        timeout = base.stream_timeout(self._timeout)
        async with self._http.stream(
            "GET", base.STREAM_PATH, params=tuple(query), headers=headers, timeout=timeout
        ) as response:
            if response.is_error:
                await response.aread()
                base.raise_for_stream(response)
            yield response

    async def health(self) -> Health:
        return await self._run(calls.health())

    async def ready(self) -> Readiness:
        """Readiness (``status`` is ``not_ready`` while the schema is behind; no error)."""
        return await self._run(calls.ready())


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
