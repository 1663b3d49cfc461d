"""The deliverer on real SQLite and PostgreSQL, posting to a real HTTP server on loopback.

Events are written the way the service writes them (a unit of work, the outbox fans them out to
subscriptions), then the real worker loop runs the deliverer in burst mode.
"""

from __future__ import annotations

import random
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from cloudstate.config import Settings, load_settings
from cloudstate.domain.deliveries import DeliveryStatus, Outcome
from cloudstate.domain.events import EventDraft, EventRecord, EventType
from cloudstate.domain.orders import resolve_order
from cloudstate.domain.subscriptions import SubscriptionFilter
from cloudstate.engine.callables import CallableRegistry
from cloudstate.engine.deliverer import Deliverer
from cloudstate.engine.loop import run_burst
from cloudstate.engine.sequencer import number_events
from cloudstate.store import Store
from cloudstate.store.deliveries import (
    LEAVE,
    TAKE,
    Admission,
    Candidate,
    DeliveryResult,
)
from cloudstate.store.tables import Delivery, Event, Subscription, utcnow
from cloudstate.testing import WebhookReceiver
from cloudstate.webhooks import AiohttpSender, SendResult, WebhookPolicy, generate_secret, verify

try:  # the reference library, when installed (a dev dependency), verifies our signatures too
    import standardwebhooks
except ImportError:  # pragma: no cover
    standardwebhooks = None

FAST_SCHEDULE = "0,0.05,0.1"
LOOPBACK = WebhookPolicy.parse(["127.0.0.1"])
LEASE = timedelta(seconds=10)


# events, subscriptions and rows ------------------------------------------------------------


def _launch(store: Store, count: int) -> list[uuid.UUID]:
    """Accept instances as the service does: each row and its instance.created event together."""
    request = {
        "account": "sim",
        "image": "img-basic",
        "hardware_profile": "small",
        "instances": [{"uuid": str(uuid.uuid4())} for _ in range(count)],
    }
    order = resolve_order(request)
    with store.unit_of_work() as uow:
        account = uow.accounts.find("sim") or uow.accounts.add("sim", "simulator")
        for spec in order.instances:
            row = uow.instances.add(spec, account, None)
            draft = EventDraft(EventType.INSTANCE_CREATED, {"state": "new"}, spec.uuid, None, "sim")
            uow.record(draft, row)
        uow.commit()
    number_events(store)  # what a worker's sequencer does after each commit (PostgreSQL)
    return [spec.uuid for spec in order.instances]


def _change(store: Store, instance_uuid: uuid.UUID, state: str) -> None:
    with store.unit_of_work() as uow:
        row = uow.instances.get(instance_uuid)
        row.state = state
        draft = EventDraft(
            EventType.INSTANCE_STATE_CHANGED, {"state": state}, instance_uuid, None, "sim"
        )
        uow.record(draft, row)
        uow.commit()
    number_events(store)


def _subscribe(
    store: Store,
    kind: str,
    target: str,
    *,
    secret: str | None = None,
    instances: list[uuid.UUID] | None = None,
) -> uuid.UUID:
    where = SubscriptionFilter(instances=frozenset(instances or ()))
    with store.unit_of_work() as uow:
        row = uow.subscriptions.add(kind, target, where, secret=secret)
        uow.commit()
        return row.id


def _deliveries(store: Store, subscription_id: uuid.UUID) -> list[Delivery]:
    with store.read() as session:
        statement = (
            select(Delivery)
            .where(Delivery.subscription_id == subscription_id)
            .order_by(Delivery.event_number)
        )
        return list(session.scalars(statement))


def _subscription(store: Store, subscription_id: uuid.UUID) -> Subscription:
    with store.read() as session:
        row = session.get(Subscription, subscription_id)
        assert row is not None
        return row


def _tuned(settings: Settings, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "webhook_allow": ["127.0.0.1"],  # the receivers are on loopback
        "delivery_retry_schedule": FAST_SCHEDULE,
        # Generous: a loaded CI machine can take a while to answer on loopback, and only the
        # test about timeouts wants one to fire (it sets its own).
        "delivery_timeout_seconds": 5,
        "delivery_lease_seconds": LEASE.total_seconds(),
    }
    return load_settings(
        home=settings.home, database_url=settings.database_url, **{**base, **overrides}
    )


@pytest.fixture
def make_deliverer(store: Store, settings: Settings) -> Iterator[Callable[..., Deliverer]]:
    """Deliverers with short timings; every one made is closed after the test."""
    made: list[Deliverer] = []

    def make(
        worker: str = "worker-1",
        *,
        registry: CallableRegistry | None = None,
        sender: Any = None,
        source: str = "/cloudstate",
        **overrides: Any,
    ) -> Deliverer:
        deliverer = Deliverer(
            store,
            _tuned(settings, **overrides),
            worker_id=worker,
            callables=registry or CallableRegistry(),
            sender=sender,
            source=source,
        )
        made.append(deliverer)
        return deliverer

    yield make
    for deliverer in made:
        deliverer.close()


# a real HTTP receiver ----------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# callables -----------------------------------------------------------------------------------


class TestCallables:
    def test_every_event_reaches_a_callable_once_in_per_instance_order(
        self, store: Store, make_deliverer: Callable[..., Deliverer]
    ) -> None:
        """Three instances with interleaved changes: each event once, each instance in order."""
        subscription = _subscribe(store, "callable", "audit")
        uuids = _launch(store, 3)
        for state in ("pending", "running", "stopping"):
            for instance_uuid in uuids:
                _change(store, instance_uuid, state)
        seen: list[EventRecord] = []
        registry = CallableRegistry()
        registry.register("audit", seen.append)

        assert run_burst([make_deliverer(registry=registry, delivery_batch_size=4)], timeout=10)

        assert len(seen) == 12
        assert len({event.id for event in seen}) == 12
        for instance_uuid in uuids:
            mine = [e for e in seen if e.instance_uuid == instance_uuid]
            assert [e.instance_seq for e in mine] == [1, 2, 3, 4]
            assert [e.data["state"] for e in mine] == ["new", "pending", "running", "stopping"]
        rows = _deliveries(store, subscription)
        assert {(row.status, row.attempts, row.claimed_by) for row in rows} == {
            ("delivered", 1, None)
        }

    def test_a_raising_callable_is_retried_on_the_schedule_then_dead_lettered(
        self, store: Store, make_deliverer: Callable[..., Deliverer]
    ) -> None:
        """Each exception is a failed attempt; after the last one the delivery is dead."""
        subscription = _subscribe(store, "callable", "broken")
        _launch(store, 1)
        calls: list[float] = []

        def broken(_event: EventRecord) -> None:
            calls.append(time.monotonic())
            raise RuntimeError("database of the subscriber is down")

        registry = CallableRegistry()
        registry.register("broken", broken)

        assert run_burst([make_deliverer(registry=registry)], timeout=10)

        assert len(calls) == 3
        assert calls[1] - calls[0] >= 0.045
        assert calls[2] - calls[1] >= 0.09
        [row] = _deliveries(store, subscription)
        assert row.status == DeliveryStatus.DEAD
        assert row.attempts == 3
        assert row.last_error == "RuntimeError: database of the subscriber is down"
        assert row.delivered_at is None

    def test_an_unregistered_callable_waits_without_attempts_or_keeping_a_burst_busy(
        self, store: Store, make_deliverer: Callable[..., Deliverer]
    ) -> None:
        """A name registered in no process here is left pending, then delivered once it is."""
        subscription = _subscribe(store, "callable", "elsewhere")
        _launch(store, 1)
        registry = CallableRegistry()
        deliverer = make_deliverer(registry=registry)

        started = time.monotonic()
        assert run_burst([deliverer], timeout=10)
        assert time.monotonic() - started < 2
        [row] = _deliveries(store, subscription)
        assert (row.status, row.attempts, row.claimed_by) == ("pending", 0, None)

        seen: list[EventRecord] = []
        registry.register("elsewhere", seen.append)
        assert run_burst([deliverer], timeout=10)
        assert [event.type for event in seen] == ["instance.created"]
        assert _deliveries(store, subscription)[0].status == DeliveryStatus.DELIVERED

    def test_a_retry_due_in_minutes_does_not_keep_a_burst_alive(
        self, store: Store, make_deliverer: Callable[..., Deliverer]
    ) -> None:
        """A burst waits for a retry due in a moment, not for one due a minute from now."""
        subscription = _subscribe(store, "callable", "flaky")
        _launch(store, 1)
        registry = CallableRegistry()
        registry.register("flaky", lambda _event: 1 / 0)
        deliverer = make_deliverer(registry=registry, delivery_retry_schedule="0,60")

        started = time.monotonic()
        assert run_burst([deliverer], timeout=10)
        assert time.monotonic() - started < 2
        [row] = _deliveries(store, subscription)
        assert (row.status, row.attempts, row.last_error) == (
            "pending",
            1,
            "ZeroDivisionError: division by zero",
        )
        assert row.next_attempt_at - utcnow() > timedelta(seconds=50)

    def test_later_events_of_an_instance_wait_while_an_earlier_one_is_retried(
        self, store: Store, make_deliverer: Callable[..., Deliverer]
    ) -> None:
        """A's first event fails twice: A's later events wait, B's and other subscribers' don't."""
        strict = _subscribe(store, "callable", "strict")
        relaxed = _subscribe(store, "callable", "relaxed")
        a, b = _launch(store, 2)
        for state in ("pending", "running"):
            _change(store, a, state)
            _change(store, b, state)
        got: dict[str, list[tuple[uuid.UUID | None, int | None]]] = {"strict": [], "relaxed": []}
        failures = {"left": 2}

        def strict_receiver(event: EventRecord) -> None:
            got["strict"].append((event.instance_uuid, event.instance_seq))
            if event.instance_uuid == a and failures["left"]:
                failures["left"] -= 1
                raise ConnectionError("not ready for A")

        registry = CallableRegistry()
        registry.register("strict", strict_receiver)
        registry.register("relaxed", lambda e: got["relaxed"].append((e.instance_uuid, e.seq)))
        deliverer = make_deliverer(registry=registry, delivery_retry_schedule="0,0.5,0.5")

        for _ in range(3):
            deliverer.tick()
        assert got["strict"] == [(a, 1), (b, 1), (b, 2), (b, 3)]
        assert len(got["relaxed"]) == 6
        waiting = [row for row in _deliveries(store, strict) if row.status == "pending"]
        assert [(row.attempts, row.ordering_key) for row in waiting] == [
            (1, str(a)),
            (0, str(a)),
            (0, str(a)),
        ]

        assert run_burst([deliverer], timeout=10)
        assert [seq for who, seq in got["strict"] if who == a] == [1, 1, 1, 2, 3]
        assert {row.status for row in _deliveries(store, strict)} == {"delivered"}
        assert {row.status for row in _deliveries(store, relaxed)} == {"delivered"}


# HTTP ----------------------------------------------------------------------------------------


class TestWebhooks:
    def test_a_receiver_gets_one_signed_cloudevent_per_request(
        self, store: Store, make_deliverer: Callable[..., Deliverer], receiver: WebhookReceiver
    ) -> None:
        """The body is CloudEvents 1.0 JSON and verifies with the reference library."""
        secret = generate_secret()
        subscription = _subscribe(store, "http", receiver.url, secret=secret)
        [instance_uuid] = _launch(store, 1)
        _change(store, instance_uuid, "running")
        source = "https://cloudstate.test/cloudstate"

        assert run_burst([make_deliverer(source=source)], timeout=10)

        assert len(receiver.requests) == 2
        with store.read() as session:
            events = list(session.scalars(select(Event).order_by(Event.seq)))
        for request, event in zip(receiver.requests, events, strict=True):
            assert verify(secret, request.body, request.headers)
            if standardwebhooks is not None:
                assert standardwebhooks.Webhook(secret).verify(request.body, request.headers)
            assert request.headers["webhook-id"] == str(event.id)
            assert request.headers["Content-Type"].startswith("application/cloudevents+json")
            body = request.event
            assert body == {
                "specversion": "1.0",
                "id": str(event.id),
                "source": source,
                "type": event.type,
                "subject": str(instance_uuid),
                "time": body["time"],
                "datacontenttype": "application/json",
                "data": {**event.data, "sequence": event.instance_seq, "cursor": event.seq},
            }
            assert body["time"].endswith("Z")
            assert datetime.fromisoformat(body["time"]) == event.time
        assert [r.event["data"]["state"] for r in receiver.requests] == ["new", "running"]
        rows = _deliveries(store, subscription)
        assert [(row.status, row.last_status_code) for row in rows] == [("delivered", 200)] * 2
        assert all(row.delivered_at is not None for row in rows)

    def test_during_rotation_both_secrets_sign(
        self, store: Store, make_deliverer: Callable[..., Deliverer], receiver: WebhookReceiver
    ) -> None:
        """With a previous secret still valid, receivers holding either one can verify."""
        old, new = generate_secret(), generate_secret()
        subscription = _subscribe(store, "http", receiver.url, secret=new)
        with store.unit_of_work() as uow:
            row = uow.subscriptions.get(subscription)
            row.previous_secret = store.secrets.encrypt(old.encode())
            row.previous_secret_expires_at = utcnow() + timedelta(hours=1)
            uow.commit()
        _launch(store, 1)

        assert run_burst([make_deliverer()], timeout=10)

        [request] = receiver.requests
        assert len(request.headers["webhook-signature"].split()) == 2
        for secret in (old, new):
            assert verify(secret, request.body, request.headers)
            if standardwebhooks is not None:
                assert standardwebhooks.Webhook(secret).verify(request.body, request.headers)
        assert not verify(generate_secret(), request.body, request.headers)

    def test_a_500_is_retried_on_the_schedule_then_dead_lettered(
        self, store: Store, make_deliverer: Callable[..., Deliverer], receiver: WebhookReceiver
    ) -> None:
        """Three attempts, spaced by the schedule, same webhook-id; then dead with the status."""
        receiver.respond = lambda _request: (500, 0.0)
        subscription = _subscribe(store, "http", receiver.url, secret=generate_secret())
        _launch(store, 1)

        assert run_burst([make_deliverer()], timeout=10)

        assert len(receiver.requests) == 3
        first, second, third = receiver.requests
        assert second.at - first.at >= 0.045
        assert third.at - second.at >= 0.09
        assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
        [row] = _deliveries(store, subscription)
        assert (row.status, row.attempts, row.last_status_code, row.last_error) == (
            "dead",
            3,
            500,
            "HTTP 500",
        )

    def test_timeouts_and_refused_connections_are_failed_attempts(
        self, store: Store, make_deliverer: Callable[..., Deliverer], receiver: WebhookReceiver
    ) -> None:
        """No answer within the timeout, or no server at all: retried, then dead, with why."""
        receiver.respond = lambda _request: (200, 2.0)
        slow = _subscribe(store, "http", receiver.url)
        refused = _subscribe(store, "http", f"http://127.0.0.1:{_closed_port()}/hook")
        _launch(store, 1)

        assert run_burst([make_deliverer(delivery_timeout_seconds=0.2)], timeout=10)

        [slow_row] = _deliveries(store, slow)
        assert (slow_row.status, slow_row.attempts, slow_row.last_status_code) == ("dead", 3, None)
        assert slow_row.last_error == "timed out after 0.2 s"
        [refused_row] = _deliveries(store, refused)
        assert (refused_row.status, refused_row.attempts) == ("dead", 3)
        assert refused_row.last_status_code is None
        assert "Cannot connect to host 127.0.0.1" in refused_row.last_error

    def test_a_redirect_is_a_failure_and_is_not_followed(
        self, store: Store, make_deliverer: Callable[..., Deliverer], receiver: WebhookReceiver
    ) -> None:
        """A signed event goes only to the subscribed URL: a 307 is recorded, never followed."""
        receiver.respond = lambda request: (307, 0.0) if request.path == "/hook" else (200, 0.0)
        subscription = _subscribe(store, "http", receiver.url)
        _launch(store, 1)

        assert run_burst([make_deliverer(delivery_retry_schedule="0")], timeout=10)

        assert [request.path for request in receiver.requests] == ["/hook"]
        [row] = _deliveries(store, subscription)
        assert (row.status, row.last_status_code, row.last_error) == ("dead", 307, "HTTP 307")

    def test_410_gone_disables_the_subscription_and_cancels_what_is_queued(
        self, store: Store, make_deliverer: Callable[..., Deliverer], receiver: WebhookReceiver
    ) -> None:
        """The receiver says it is gone: no more attempts, the subscription says why."""
        receiver.respond = lambda _request: (410, 0.0)
        subscription = _subscribe(store, "http", receiver.url)
        [instance_uuid] = _launch(store, 1)
        _change(store, instance_uuid, "pending")
        _change(store, instance_uuid, "running")

        assert run_burst([make_deliverer()], timeout=10)

        assert len(receiver.requests) == 1
        row = _subscription(store, subscription)
        assert row.enabled is False
        assert row.disabled_reason.startswith("the receiver answered HTTP 410")
        rows = _deliveries(store, subscription)
        assert [(d.status, d.attempts, d.last_status_code) for d in rows] == [
            ("cancelled", 1, 410),
            ("cancelled", 0, None),
            ("cancelled", 0, None),
        ]
        _change(store, instance_uuid, "stopping")
        assert len(_deliveries(store, subscription)) == 3


# claims and acknowledgements ------------------------------------------------------------------


class TestClaims:
    def test_only_the_head_of_each_instance_is_claimed_and_only_once(self, store: Store) -> None:
        """Two instances with three events each: one claim gets two heads, a second gets none."""
        enabled = _subscribe(store, "http", "http://127.0.0.1:9/hook")
        disabled = _subscribe(store, "http", "http://127.0.0.1:9/other")
        a, b = _launch(store, 2)
        for state in ("pending", "running"):
            _change(store, a, state)
            _change(store, b, state)
        with store.unit_of_work() as uow:
            uow.subscriptions.get(disabled).enabled = False
            uow.commit()
        now = utcnow()
        with store.unit_of_work() as uow:
            first = uow.deliveries.claim("worker-a", 100, now, LEASE)
            uow.commit()
        with store.unit_of_work() as uow:
            second = uow.deliveries.claim("worker-b", 100, now, LEASE)
            uow.commit()

        assert [(c.subscription_id, c.event.instance_uuid, c.attempt) for c in first] == [
            (enabled, a, 1),
            (enabled, b, 1),
        ]
        assert [c.event.instance_seq for c in first] == [1, 1]
        assert second == []
        rows = [row for row in _deliveries(store, enabled) if row.status == "delivering"]
        assert {(row.claimed_by, row.claimed_until) for row in rows} == {("worker-a", now + LEASE)}

    def test_a_claim_can_exclude_leave_or_defer_heads_without_using_attempts(
        self, store: Store
    ) -> None:
        """Excluded subscriptions are not looked at; a left head stays due; a deferred one
        waits until the given time with the reason, its attempts untouched."""
        excluded = _subscribe(store, "http", "http://127.0.0.1:9/excluded")
        left = _subscribe(store, "http", "http://127.0.0.1:9/left")
        deferred = _subscribe(store, "http", "http://127.0.0.1:9/deferred")
        taken = _subscribe(store, "http", "http://127.0.0.1:9/taken")
        _launch(store, 1)
        later = utcnow() + timedelta(seconds=30)
        verdicts = {
            left: LEAVE,
            deferred: Admission(take=False, defer_until=later, reason="circuit open"),
            taken: TAKE,
        }
        seen: list[uuid.UUID] = []

        def admit(candidate: Candidate) -> Admission:
            seen.append(candidate.subscription_id)
            return verdicts[candidate.subscription_id]

        with store.unit_of_work() as uow:
            claimed = uow.deliveries.claim(
                "w", 10, utcnow(), LEASE, exclude={excluded}, admit=admit
            )
            uow.commit()

        assert [c.subscription_id for c in claimed] == [taken]
        assert sorted(seen) == sorted([left, deferred, taken])
        [row] = _deliveries(store, deferred)
        assert (row.status, row.attempts, row.next_attempt_at, row.last_error) == (
            "pending",
            0,
            later,
            "circuit open",
        )
        for subscription in (excluded, left):
            [row] = _deliveries(store, subscription)
            assert (row.status, row.attempts, row.last_error) == ("pending", 0, "")

    def test_a_released_claim_is_due_again_without_using_an_attempt(self, store: Store) -> None:
        """A worker shutting down hands its unfinished claims back; another's are untouched."""
        subscription = _subscribe(store, "http", "http://127.0.0.1:9/hook")
        _launch(store, 2)
        now = utcnow()
        with store.unit_of_work() as uow:
            first, second = uow.deliveries.claim("w", 10, now, LEASE)
            uow.commit()
        with store.unit_of_work() as uow:
            assert uow.deliveries.release([first.id, second.id], "other", now, "bye") == 0
            assert uow.deliveries.release([first.id], "w", now, "bye") == 1
            uow.commit()
        rows = {row.id: row for row in _deliveries(store, subscription)}
        assert (rows[first.id].status, rows[first.id].attempts) == ("pending", 0)
        assert (rows[first.id].claimed_by, rows[first.id].last_error) == (None, "bye")
        assert (rows[second.id].status, rows[second.id].claimed_by) == ("delivering", "w")

    def test_a_claim_respects_the_limit_and_the_due_time(self, store: Store) -> None:
        """Nothing is claimed before its next attempt time; never more than the limit."""
        _subscribe(store, "http", "http://127.0.0.1:9/hook")
        _launch(store, 3)
        now = utcnow()
        with store.unit_of_work() as uow:
            assert uow.deliveries.claim("w", 10, now - timedelta(minutes=1), LEASE) == []
            assert len(uow.deliveries.claim("w", 2, now, LEASE)) == 2
            assert len(uow.deliveries.claim("w", 2, now, LEASE)) == 1
            uow.commit()

    def test_an_expired_claim_is_taken_over_and_the_late_ack_changes_nothing(
        self, store: Store
    ) -> None:
        """Worker A claims and goes silent; B gets the delivery after the lease; A's ack is void."""
        subscription = _subscribe(store, "http", "http://127.0.0.1:9/hook")
        _launch(store, 1)
        start = utcnow()
        with store.unit_of_work() as uow:
            [claimed_by_a] = uow.deliveries.claim("worker-a", 10, start, LEASE)
            uow.commit()
        later = start + LEASE + timedelta(seconds=1)
        with store.unit_of_work() as uow:
            assert uow.deliveries.release_expired(start + LEASE / 2) == 0
            assert uow.deliveries.release_expired(later) == 1
            [claimed_by_b] = uow.deliveries.claim("worker-b", 10, later, LEASE)
            uow.commit()
        assert claimed_by_b.id == claimed_by_a.id
        assert claimed_by_b.attempt == 1

        with store.unit_of_work() as uow:
            late = DeliveryResult(claimed_by_a.id, "worker-a", Outcome.DELIVERED, 200)
            assert uow.deliveries.record_results([late], [0, 1], now=later) == {}
            uow.commit()
        [row] = _deliveries(store, subscription)
        assert (row.status, row.claimed_by, row.attempts) == ("delivering", "worker-b", 0)

        with store.unit_of_work() as uow:
            ack = DeliveryResult(claimed_by_b.id, "worker-b", Outcome.FAILED, 503, "HTTP 503")
            applied = uow.deliveries.record_results([ack], [0, 1], now=later)
            uow.commit()
        assert applied == {claimed_by_b.id: DeliveryStatus.PENDING}
        [row] = _deliveries(store, subscription)
        assert (row.status, row.claimed_by, row.attempts, row.last_status_code) == (
            "pending",
            None,
            1,
            503,
        )

    def test_a_dead_workers_claim_is_delivered_by_the_next_deliverer(
        self, store: Store, make_deliverer: Callable[..., Deliverer], receiver: WebhookReceiver
    ) -> None:
        """A claim that expired in the past is released and delivered: at least once."""
        subscription = _subscribe(store, "http", receiver.url)
        _launch(store, 1)
        with store.unit_of_work() as uow:
            [claimed] = uow.deliveries.claim("crashed", 10, utcnow(), LEASE)
            uow.commit()
        with store.unit_of_work() as uow:  # the lease runs out while the worker is gone
            row = uow.deliveries.get(claimed.id)
            assert row is not None
            assert (row.status, row.claimed_by) == ("delivering", "crashed")
            row.claimed_until = utcnow() - timedelta(seconds=1)
            uow.commit()

        assert run_burst([make_deliverer("survivor")], timeout=10)

        assert len(receiver.requests) == 1
        [row] = _deliveries(store, subscription)
        assert (row.status, row.attempts, row.claimed_by) == ("delivered", 1, None)

    def test_one_acknowledgement_writes_every_result_of_the_batch(self, store: Store) -> None:
        """Delivered, retried, dead and gone results land together in one transaction."""
        schedule = [0.0, 30.0, 60.0]
        a, b, c, d = _launch(store, 4)
        main = _subscribe(store, "http", "http://127.0.0.1:9/main", instances=[a, b, c])
        gone = _subscribe(store, "http", "http://127.0.0.1:9/gone", instances=[d])
        for instance_uuid in (a, b, c, d):
            _change(store, instance_uuid, "running")
        _change(store, d, "stopping")
        with store.unit_of_work() as uow:
            for row in uow.deliveries.for_subscription(main):
                if row.ordering_key == str(c):
                    row.attempts = 2  # its next failure uses the last attempt
            uow.commit()
        now = utcnow()
        with store.unit_of_work() as uow:
            claimed = {
                c.event.instance_uuid: c.id for c in uow.deliveries.claim("w", 10, now, LEASE)
            }
            uow.commit()
        results = [
            DeliveryResult(claimed[a], "w", Outcome.DELIVERED, 204),
            DeliveryResult(claimed[b], "w", Outcome.FAILED, 502, "HTTP 502"),
            DeliveryResult(claimed[c], "w", Outcome.FAILED, None, "timed out after 15 s"),
            DeliveryResult(claimed[d], "w", Outcome.GONE, 410, "HTTP 410"),
        ]
        with store.unit_of_work() as uow:
            applied = uow.deliveries.record_results(
                results, schedule, now=now, rng=random.Random(7)
            )
            uow.commit()

        assert applied == {
            claimed[a]: "delivered",
            claimed[b]: "pending",
            claimed[c]: "dead",
            claimed[d]: "cancelled",
        }
        by_id = {row.id: row for row in _deliveries(store, main) + _deliveries(store, gone)}
        assert by_id[claimed[a]].delivered_at is not None
        retry_in = (by_id[claimed[b]].next_attempt_at - now).total_seconds()
        assert 27 <= retry_in <= 33
        assert (by_id[claimed[c]].attempts, by_id[claimed[c]].last_error) == (
            3,
            "timed out after 15 s",
        )
        # The manager records a 410 as cancelled and hands the key to its next delivery; the
        # deliverer, not the store, disables the subscription (test_410_gone_disables_…).
        assert [(row.status, row.head) for row in _deliveries(store, gone)] == [
            ("cancelled", False),
            ("pending", True),
        ]
        assert _subscription(store, gone).enabled is True


# several workers ------------------------------------------------------------------------------


@dataclass
class _CountingSender:
    """A real sender that also counts what its worker sent."""

    inner: AiohttpSender
    sent: Counter[str]
    worker: str

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        self.sent[self.worker] += 1
        return await self.inner.send(url, body, headers)

    async def close(self) -> None:
        await self.inner.close()


class TestSeveralWorkers:
    def test_two_deliverers_never_send_one_instance_twice_at_once(
        self, store: Store, make_deliverer: Callable[..., Deliverer], receiver: WebhookReceiver
    ) -> None:
        """Two workers in threads share the work; per instance, one in flight and in order."""
        receiver.respond = lambda _request: (200, 0.01)
        subscription = _subscribe(store, "http", receiver.url)
        uuids = _launch(store, 4)
        for state in ("pending", "running", "stopping", "stopped"):
            for instance_uuid in uuids:
                _change(store, instance_uuid, state)
        sent: Counter[str] = Counter()
        workers = [
            make_deliverer(
                name,
                sender=_CountingSender(
                    AiohttpSender(timeout_seconds=5, policy=LOOPBACK), sent, name
                ),
                delivery_batch_size=2,
                delivery_concurrency=2,  # two in flight each: four instances need both workers
            )
            for name in ("worker-a", "worker-b")
        ]
        finished: list[bool] = []
        threads = [
            threading.Thread(target=lambda w=w: finished.append(run_burst([w], timeout=20)))
            for w in workers
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert finished == [True, True]
        assert receiver.overlaps == []
        assert len(receiver.requests) == 20
        for instance_uuid in uuids:
            seqs = [
                r.event["data"]["sequence"]
                for r in receiver.requests
                if r.event["subject"] == str(instance_uuid)
            ]
            assert seqs == [1, 2, 3, 4, 5]
        assert sum(sent.values()) == 20
        assert set(sent) == {"worker-a", "worker-b"}
        assert {row.status for row in _deliveries(store, subscription)} == {"delivered"}
