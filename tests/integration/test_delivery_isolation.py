"""Endpoints are isolated from each other: a slow one, a dead one or a slow callable holds up
only its own deliveries. Real deliverers on real SQLite and PostgreSQL, posting over HTTP to
real receivers on loopback (allowed by ``webhook_allow``)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from test_deliverer import _closed_port, _deliveries, _launch, _subscribe, _tuned

from cloudstate.config import Settings
from cloudstate.domain.events import EventRecord
from cloudstate.engine.callables import CallableRegistry
from cloudstate.engine.deliverer import Deliverer
from cloudstate.engine.loop import Runner, run_burst
from cloudstate.store import Store
from cloudstate.testing import WebhookReceiver, wait_until
from cloudstate.webhooks import AiohttpSender, SendResult, WebhookPolicy
from cloudstate.webhooks.safety import endpoint

pytestmark = pytest.mark.slow

LOOPBACK = WebhookPolicy.parse(["127.0.0.1"])


@dataclass
class _TimingSender:
    """The real sender, noting when each URL's requests started (each is one connection)."""

    inner: AiohttpSender = field(
        default_factory=lambda: AiohttpSender(timeout_seconds=5, policy=LOOPBACK)
    )
    started: dict[str, list[float]] = field(default_factory=dict)

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        self.started.setdefault(url, []).append(time.monotonic())
        return await self.inner.send(url, body, headers)

    async def close(self) -> None:
        await self.inner.close()


@pytest.fixture
def make_deliverer(store: Store, settings: Settings) -> Iterator[Callable[..., Deliverer]]:
    made: list[Deliverer] = []

    def make(*, sender: Any = None, registry: CallableRegistry | None = None, **overrides: Any):
        deliverer = Deliverer(
            store,
            _tuned(settings, **overrides),
            worker_id="worker-1",
            callables=registry or CallableRegistry(),
            sender=sender,
        )
        made.append(deliverer)
        return deliverer

    yield make
    for deliverer in made:
        deliverer.close()


@pytest.fixture
def slow() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(respond=lambda _request: (200, 1.0)) as server:
        yield server


@pytest.fixture
def fast() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


def _in_background(target: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_a_slow_endpoint_does_not_delay_a_fast_one(
    store: Store,
    make_deliverer: Callable[..., Deliverer],
    slow: WebhookReceiver,
    fast: WebhookReceiver,
) -> None:
    """200 events to a 1 s endpoint and to a fast one: the fast one has all of them within a
    couple of seconds; the slow one gets them at its own pace, never more than its share of
    slots at once, and no instance ever has two requests in flight."""
    per_endpoint = 25
    slow_subscription = _subscribe(store, "http", slow.url)
    fast_subscription = _subscribe(store, "http", fast.url)
    _launch(store, 200)
    deliverer = make_deliverer(
        delivery_concurrency=50,
        delivery_per_endpoint_concurrency=per_endpoint,
        delivery_timeout_seconds=5,
    )
    finished: list[bool] = []

    started = time.monotonic()
    burst = _in_background(lambda: finished.append(run_burst([deliverer], timeout=40)))
    wait_until(lambda: len(fast.requests) >= 200, timeout=10, what="200 fast deliveries")
    fast_seconds = time.monotonic() - started
    burst.join(45)
    slow_seconds = time.monotonic() - started

    print(f"\nfast endpoint: 200 in {fast_seconds:.2f} s; slow: 200 in {slow_seconds:.2f} s")
    assert finished == [True]
    assert fast_seconds < 3
    assert slow_seconds >= 200 / per_endpoint - 0.5
    arrivals = sorted(request.at for request in slow.requests)
    assert max(_within(arrivals, at, 0.9) for at in arrivals) <= per_endpoint
    assert slow.overlaps == fast.overlaps == []
    for subscription in (slow_subscription, fast_subscription):
        assert {row.status for row in _deliveries(store, subscription)} == {"delivered"}


def _within(times: list[float], start: float, span: float) -> int:
    return sum(1 for at in times if start <= at < start + span)


def test_a_dead_endpoint_is_left_alone_during_its_cool_down_then_probed_once(
    store: Store, make_deliverer: Callable[..., Deliverer], fast: WebhookReceiver
) -> None:
    """A closed port fails its first attempts; once the breaker trips, the dead endpoint's
    deliveries wait unattempted (no attempt used) for the 1 s cool-down, then one probe goes
    out, fails, and the next cool-down is 2 s. The healthy endpoint never notices."""
    threshold, per_endpoint = 3, 2
    dead_url = f"http://127.0.0.1:{_closed_port()}/hook"
    dead = _subscribe(store, "http", dead_url)
    healthy = _subscribe(store, "http", fast.url)
    _launch(store, 20)
    sender = _TimingSender()
    deliverer = make_deliverer(
        sender=sender,
        delivery_per_endpoint_concurrency=per_endpoint,
        delivery_breaker_threshold=threshold,
        delivery_breaker_cooldown_seconds=1.0,
        delivery_breaker_max_cooldown_seconds=8.0,
        delivery_retry_schedule="0,0.05,0.05,0.05,0.05",
    )
    runner = Runner([deliverer])

    runner.start()
    started = time.monotonic()
    wait_until(lambda: len(fast.requests) >= 20, timeout=5, what="the healthy deliveries")
    healthy_seconds = time.monotonic() - started
    time.sleep(max(0.0, 2.6 - healthy_seconds))
    runner.stop()

    attempts = sender.started[dead_url]
    wave = [at for at in attempts if at - attempts[0] < 0.5]
    assert threshold <= len(wave) <= threshold + per_endpoint - 1
    assert len(attempts) == len(wave) + 1  # the probe, and nothing during either cool-down
    assert attempts[-1] - wave[-1] >= 0.95
    assert healthy_seconds < 1.0
    assert {row.status for row in _deliveries(store, healthy)} == {"delivered"}
    rows = _deliveries(store, dead)
    assert sum(row.attempts for row in rows) == len(attempts)  # waiting used no attempt
    assert {row.status for row in rows} == {"pending"}
    waiting = [row for row in rows if row.attempts == 0]
    assert len(waiting) >= 20 - len(attempts)
    assert all(row.last_error.startswith("not attempted: circuit open for") for row in waiting)


def test_a_successful_probe_closes_the_breaker(
    store: Store, make_deliverer: Callable[..., Deliverer], fast: WebhookReceiver
) -> None:
    """Three 503s trip the breaker; after the cool-down the probe gets a 200, which closes it,
    and every delivery then goes through."""
    answers = iter([503, 503, 503])
    fast.respond = lambda _request: (next(answers, 200), 0.0)
    subscription = _subscribe(store, "http", fast.url)
    _launch(store, 10)
    deliverer = make_deliverer(
        delivery_per_endpoint_concurrency=1,
        delivery_breaker_threshold=3,
        delivery_breaker_cooldown_seconds=0.5,
    )

    assert run_burst([deliverer], timeout=10)

    arrivals = [request.at for request in fast.requests]
    assert len(arrivals) == 13
    assert arrivals[3] - arrivals[2] >= 0.45  # the cool-down before the probe
    assert arrivals[-1] - arrivals[3] < 1.0  # closed again: no more waiting
    rows = _deliveries(store, subscription)
    assert {row.status for row in rows} == {"delivered"}
    assert sum(row.attempts for row in rows) == 13
    assert not deliverer.breakers.is_open(endpoint("http", fast.url))


def test_a_slow_callable_does_not_hold_up_webhooks(
    store: Store, make_deliverer: Callable[..., Deliverer], fast: WebhookReceiver
) -> None:
    """A callable that takes 100 ms per event runs in a thread of its own: 40 webhooks are all
    delivered while it is still working through its 40 events (4 s), each exactly once."""
    slow_calls: list[uuid.UUID | None] = []

    def slow_callable(event: EventRecord) -> None:
        time.sleep(0.1)
        slow_calls.append(event.instance_uuid)

    registry = CallableRegistry()
    registry.register("slow", slow_callable)
    _subscribe(store, "callable", "slow")
    _subscribe(store, "http", fast.url)
    instances = _launch(store, 40)
    deliverer = make_deliverer(registry=registry)
    finished: list[bool] = []

    burst = _in_background(lambda: finished.append(run_burst([deliverer], timeout=20)))
    wait_until(lambda: len(fast.requests) >= 40, timeout=10, what="40 webhooks")
    calls_when_webhooks_done = len(slow_calls)
    burst.join(20)

    assert finished == [True]
    assert calls_when_webhooks_done <= 30  # had it waited on the callable, this would be 40
    assert sorted(map(str, slow_calls)) == sorted(map(str, instances))


def test_close_hands_unfinished_claims_back_without_using_an_attempt(
    store: Store, make_deliverer: Callable[..., Deliverer]
) -> None:
    """Deliveries still in flight when the deliverer closes go back to the queue at once, so
    the next worker need not wait for their leases to expire."""
    with WebhookReceiver(respond=lambda _request: (200, 5.0)) as stuck:
        subscription = _subscribe(store, "http", stuck.url)
        _launch(store, 3)
        deliverer = make_deliverer(delivery_timeout_seconds=10, delivery_lease_seconds=60)

        result = deliverer.tick()
        assert (result.worked, result.more, result.busy) == (True, True, True)
        assert {row.status for row in _deliveries(store, subscription)} == {"delivering"}
        deliverer.close()

    rows = _deliveries(store, subscription)
    assert {(row.status, row.attempts, row.claimed_by) for row in rows} == {("pending", 0, None)}
    assert {row.last_error for row in rows} == {"released unacknowledged at shutdown"}
