"""Operating deliveries on real SQLite and PostgreSQL: the log, retry, replay, secret rotation.

Events are written the way the service writes them (a unit of work; the outbox fans them out),
and the use cases of ``cloudstate.service.deliveries`` and ``cloudstate.service.accounts`` are
called as the API calls them. Where time must pass, the store's own ``now`` parameters move it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest

from cloudstate.config import Settings, load_settings
from cloudstate.domain.deliveries import Outcome
from cloudstate.domain.events import EventDraft, EventRecord, EventType
from cloudstate.domain.orders import resolve_order
from cloudstate.engine.callables import CallableRegistry
from cloudstate.engine.deliverer import Deliverer
from cloudstate.engine.loop import run_burst
from cloudstate.engine.sequencer import number_events
from cloudstate.exceptions import ConflictError, CursorExpiredError, NotFoundError
from cloudstate.service import accounts, deliveries
from cloudstate.service.retention import prune_events
from cloudstate.store import Store
from cloudstate.store.deliveries import DeliveryResult
from cloudstate.store.tables import Delivery, Event, utcnow
from cloudstate.webhooks import generate_secret

LEASE = timedelta(seconds=30)


def _instances(store: Store, count: int, events: int) -> list[uuid.UUID]:
    """``count`` instances with ``events`` events each (created, then state changes),
    interleaved across instances, written as the service writes them."""
    order = resolve_order(
        {
            "account": "sim",
            "image": "img-basic",
            "hardware_profile": "small",
            "instances": [{"uuid": str(uuid.uuid4())} for _ in range(count)],
        }
    )
    uuids = [spec.uuid for spec in order.instances]
    with store.unit_of_work() as uow:
        account = uow.accounts.find("sim") or uow.accounts.add("sim", "simulator")
        for spec in order.instances:
            row = uow.instances.add(spec, account, None)
            uow.record(EventDraft(EventType.INSTANCE_CREATED, {}, spec.uuid, None, "sim"), row)
        uow.commit()
    for step in range(1, events):
        for instance_uuid in uuids:
            with store.unit_of_work() as uow:
                row = uow.instances.get(instance_uuid)
                draft = EventDraft(
                    EventType.INSTANCE_STATE_CHANGED, {"step": step}, instance_uuid, None, "sim"
                )
                uow.record(draft, row)
                uow.commit()
    number_events(store)  # what a worker's sequencer does after each commit (PostgreSQL)
    return uuids


def _subscribe(store: Store, target: str = "audit", **filters: object) -> uuid.UUID:
    return accounts.add_subscription(store, "callable", target, dict(filters)).id


def _rows(store: Store, subscription_id: uuid.UUID) -> list[Delivery]:
    with store.unit_of_work() as uow:
        rows = uow.deliveries.for_subscription(subscription_id)
        uow.session.expunge_all()
        return rows


def _cursor(store: Store, row: Delivery) -> int:
    """The global cursor (``seq``) of a delivery's event."""
    with store.read() as session:
        seq = session.get_one(Event, row.event_number).seq
    assert seq is not None
    return seq


def _set(store: Store, delivery_id: int, **values: object) -> None:
    """Put a delivery in a given state (what earlier attempts would have left)."""
    with store.unit_of_work() as uow:
        row = uow.deliveries.get(delivery_id)
        assert row is not None
        for name, value in values.items():
            setattr(row, name, value)
        uow.commit()


def _last_seq(store: Store) -> int:
    with store.unit_of_work() as uow:
        return uow.changelog.last_seq()


@pytest.fixture
def make_deliverer(store: Store, settings: Settings) -> Iterator[list[Deliverer]]:
    made: list[Deliverer] = []
    yield made
    for deliverer in made:
        deliverer.close()


def _deliverer(store: Store, settings: Settings, registry: CallableRegistry) -> Deliverer:
    tuned = load_settings(
        home=settings.home, database_url=settings.database_url, delivery_retry_schedule="0"
    )
    return Deliverer(store, tuned, worker_id="ops-worker", callables=registry)


# the log --------------------------------------------------------------------------------------


def test_the_log_pages_in_event_order_and_filters_by_status(store: Store) -> None:
    """Six deliveries: pages of four then two, each once, in event order; ``statuses`` keeps
    only those; an unknown subscription is NotFoundError, not an empty log."""
    subscription = _subscribe(store)
    _instances(store, 2, 3)
    rows = _rows(store, subscription)
    _set(store, rows[1].id, status="dead", attempts=3, last_status_code=503, last_error="HTTP 503")
    _set(store, rows[4].id, status="delivered", attempts=1, delivered_at=utcnow())

    first = deliveries.list_deliveries(store, subscription, limit=4)
    second = deliveries.list_deliveries(store, subscription, after=first.next_after or 0, limit=4)

    assert [item.event_seq for item in first.items + second.items] == [
        _cursor(store, r) for r in rows
    ]
    assert first.next_after == _cursor(store, rows[3])
    assert second.next_after is None
    dead = deliveries.list_deliveries(store, subscription, statuses=["dead"]).items
    assert [(d.id, d.attempts, d.last_status_code, d.last_error) for d in dead] == [
        (rows[1].id, 3, 503, "HTTP 503")
    ]
    assert dead[0].next_attempt_at is None
    finished = deliveries.list_deliveries(store, subscription, statuses=["dead", "delivered"])
    assert [item.id for item in finished.items] == [rows[1].id, rows[4].id]
    item = first.items[0]
    assert (item.event_type, item.instance_seq, item.status) == ("instance.created", 1, "pending")
    assert item.next_attempt_at is not None
    with pytest.raises(NotFoundError):
        deliveries.list_deliveries(store, uuid.uuid4())


# retry ------------------------------------------------------------------------------------------


def test_a_retried_dead_delivery_is_due_now_keeps_its_attempts_and_dies_again_on_failure(
    store: Store,
) -> None:
    """Retry makes a dead delivery pending and due at once; the claim makes it attempt 4 of a
    3-attempt schedule, and a failure leaves it dead again, not retried."""
    subscription = _subscribe(store)
    _instances(store, 1, 1)
    [row] = _rows(store, subscription)
    _set(store, row.id, status="dead", attempts=3, last_status_code=500, last_error="HTTP 500")
    before = utcnow()

    view = deliveries.retry_delivery(store, row.id)

    assert (view.status, view.attempts, view.last_status_code) == ("pending", 3, 500)
    assert view.next_attempt_at is not None
    assert before <= view.next_attempt_at <= utcnow()
    with store.unit_of_work() as uow:
        [claimed] = uow.deliveries.claim("w", 10, utcnow(), LEASE, callables=["audit"])
        uow.commit()
    assert claimed.attempt == 4
    with store.unit_of_work() as uow:
        failed = DeliveryResult(claimed.id, "w", Outcome.FAILED, 500, "HTTP 500")
        assert uow.deliveries.record_results([failed], [0, 1, 1]) == {row.id: "dead"}
        uow.commit()
    assert _rows(store, subscription)[0].attempts == 4


def test_retry_refuses_delivered_in_flight_and_disabled_ones(store: Store) -> None:
    """Delivered (replay it instead), being attempted, or on a disabled subscription: a
    ConflictError that says what to do; an unknown id is NotFoundError."""
    subscription = _subscribe(store)
    _instances(store, 3, 1)
    delivered, in_flight, cancelled = _rows(store, subscription)
    _set(store, delivered.id, status="delivered", attempts=1, delivered_at=utcnow())
    _set(store, in_flight.id, status="delivering", claimed_by="w", claimed_until=utcnow() + LEASE)

    replay_hint = f"replay its subscription after {_cursor(store, delivered) - 1}"
    with pytest.raises(ConflictError, match=replay_hint):
        deliveries.retry_delivery(store, delivered.id)
    with pytest.raises(ConflictError, match="being attempted now"):
        deliveries.retry_delivery(store, in_flight.id)
    with store.unit_of_work() as uow:
        uow.deliveries.disable_subscription(subscription, "the receiver answered HTTP 410")
        uow.commit()
    with pytest.raises(
        ConflictError, match=r"disabled \(the receiver answered HTTP 410\); enable it first"
    ):
        deliveries.retry_delivery(store, cancelled.id)
    with pytest.raises(NotFoundError, match="delivery 999999 not found"):
        deliveries.retry_delivery(store, 999_999)

    accounts.enable_subscription(store, subscription)
    assert deliveries.retry_delivery(store, cancelled.id).status == "pending"


# replay -----------------------------------------------------------------------------------------


def test_replay_restarts_finished_rows_creates_missing_ones_and_leaves_in_flight_alone(
    store: Store,
) -> None:
    """A subscription made after A's first event: replaying from 0 creates that one, restarts
    the delivered and the dead one with a fresh schedule, skips the one in flight, and queues
    nothing of B (its filter names only A)."""
    a, b = _instances(store, 2, 1)
    subscription = _subscribe(store, instances=[a])
    for step in range(3):
        for instance_uuid in (a, b):
            with store.unit_of_work() as uow:
                row = uow.instances.get(instance_uuid)
                uow.record(
                    EventDraft(EventType.INSTANCE_STATE_CHANGED, {"n": step}, instance_uuid), row
                )
                uow.commit()
    delivered, dead, in_flight = _rows(store, subscription)
    _set(store, delivered.id, status="delivered", attempts=1, delivered_at=utcnow())
    _set(store, dead.id, status="dead", attempts=8, last_status_code=503)
    _set(store, in_flight.id, status="delivering", claimed_by="w", claimed_until=utcnow() + LEASE)

    result = deliveries.replay(store, subscription, 0)

    assert (result.queued, result.created, result.reset, result.in_flight) == (3, 1, 2, 1)
    assert (result.after, result.through, result.more) == (0, _cursor(store, in_flight), False)
    rows = _rows(store, subscription)
    assert [(r.status, r.attempts, r.ordering_key) for r in rows] == [
        ("pending", 0, str(a)),
        ("pending", 0, str(a)),
        ("pending", 0, str(a)),
        ("delivering", 0, str(a)),
    ]
    assert rows[1].delivered_at is None
    assert rows[2].last_status_code == 503  # the last attempt's answer stays until the next one


def test_replay_queues_at_most_limit_events_and_says_where_to_go_on(store: Store) -> None:
    """Five matching events, limit two: two queued through the second, ``more``; replaying on
    from ``through`` until ``more`` is false covers each once; after the last, nothing."""
    subscription = _subscribe(store)
    start = _last_seq(store)
    _instances(store, 1, 5)
    for row in _rows(store, subscription):
        _set(store, row.id, status="delivered", attempts=1)

    first = deliveries.replay(store, subscription, start, limit=2)
    assert (first.queued, first.more) == (2, True)
    covered = [first.through]
    cursor = first.through
    while True:
        step = deliveries.replay(store, subscription, cursor, limit=2)
        covered.append(step.through)
        cursor = step.through
        if not step.more:
            break
    seqs = [_cursor(store, row) for row in _rows(store, subscription)]
    assert covered == [seqs[1], seqs[3], seqs[4]]
    assert [r.status for r in _rows(store, subscription)] == ["pending"] * 5
    nothing = deliveries.replay(store, subscription, seqs[-1])
    assert (nothing.queued, nothing.through, nothing.more) == (0, seqs[-1], False)


def test_replay_of_a_cursor_older_than_the_retained_events_is_refused(store: Store) -> None:
    """Once finished events are pruned, a cursor before them cannot be replayed completely:
    CursorExpiredError; from the oldest retained one on, it works. Disabled: ConflictError."""
    subscription = _subscribe(store)
    _instances(store, 1, 4)
    for row in _rows(store, subscription):
        _set(store, row.id, status="delivered", attempts=1)
    assert prune_events(store, utcnow() + timedelta(seconds=1)) == 3
    newest = _last_seq(store)

    with pytest.raises(CursorExpiredError, match=f"events up to {newest - 1} are no longer"):
        deliveries.replay(store, subscription, newest - 2)
    assert deliveries.replay(store, subscription, newest - 1).queued == 1
    assert deliveries.replay(store, subscription, 0).queued == 1  # 0: whatever is retained

    with store.unit_of_work() as uow:
        uow.deliveries.disable_subscription(subscription, "gone")
        uow.commit()
    with pytest.raises(ConflictError, match="enable it first"):
        deliveries.replay(store, subscription, newest - 1)


def test_replayed_events_reach_the_receiver_again_in_per_instance_order(
    store: Store, settings: Settings, make_deliverer: list[Deliverer]
) -> None:
    """The real deliverer in burst mode: every event once, then a replay from the cursor sends
    every one again, and each instance's events arrive in sequence order both times."""
    seen: list[EventRecord] = []
    registry = CallableRegistry()
    registry.register("audit", seen.append)
    subscription = _subscribe(store)
    start = _last_seq(store)
    uuids = _instances(store, 3, 3)
    deliverer = _deliverer(store, settings, registry)
    make_deliverer.append(deliverer)
    assert run_burst([deliverer], timeout=10)
    assert len(seen) == 9

    result = deliveries.replay(store, subscription, start)
    assert (result.queued, result.reset, result.created) == (9, 9, 0)
    assert run_burst([deliverer], timeout=10)

    assert len(seen) == 18
    for batch in (seen[:9], seen[9:]):
        for instance_uuid in uuids:
            mine = [e.instance_seq for e in batch if e.instance_uuid == instance_uuid]
            assert mine == [1, 2, 3]
    assert {row.status for row in _rows(store, subscription)} == {"delivered"}


# rotation and enabling --------------------------------------------------------------------------


def test_a_rotated_secret_signs_beside_the_old_one_until_the_grace_ends(store: Store) -> None:
    """After rotating with a one-hour grace, a claim carries (new, old); a claim an hour and a
    second later (the store's clock moved on) carries only the new one."""
    old, new = generate_secret(), generate_secret()
    subscription = accounts.add_subscription(store, "http", "http://127.0.0.1:9/hook", secret=old)
    _instances(store, 2, 1)

    view, expires = accounts.rotate_subscription_secret(
        store, subscription.id, new, grace=timedelta(hours=1)
    )

    assert view.secret == new
    assert expires is not None
    assert accounts.get_subscription(store, subscription.id).secret is None
    with store.unit_of_work() as uow:
        [during] = uow.deliveries.claim("w", 1, expires - timedelta(seconds=1), LEASE)
        [after] = uow.deliveries.claim("w", 1, expires + timedelta(seconds=1), LEASE)
    assert during.secrets == (new, old)
    assert after.secrets == (new,)


def test_a_zero_grace_drops_the_old_secret_and_callables_have_none_to_rotate(
    store: Store,
) -> None:
    """Grace 0: only the new secret signs, no expiry is reported. A callable subscription is
    not signed at all: ConflictError."""
    old, new = generate_secret(), generate_secret()
    subscription = accounts.add_subscription(store, "http", "http://127.0.0.1:9/hook", secret=old)
    _instances(store, 1, 1)

    _, expires = accounts.rotate_subscription_secret(
        store, subscription.id, new, grace=timedelta(0)
    )

    assert expires is None
    with store.unit_of_work() as uow:
        [claimed] = uow.deliveries.claim("w", 1, utcnow(), LEASE)
    assert claimed.secrets == (new,)
    callable_one = _subscribe(store)
    with pytest.raises(ConflictError, match="only webhooks are signed"):
        accounts.rotate_subscription_secret(store, callable_one, new, grace=timedelta(0))


def test_enabling_a_subscription_clears_why_it_was_disabled_and_queues_new_events(
    store: Store,
) -> None:
    """Disabled by a 410: its queue cancelled, new events skip it. Enabled again: the reason
    is gone, new events are queued, the cancelled ones stay cancelled (replay brings them)."""
    subscription = _subscribe(store)
    [instance] = _instances(store, 1, 1)
    with store.unit_of_work() as uow:
        uow.deliveries.disable_subscription(subscription, "the receiver answered HTTP 410")
        uow.commit()
    _instances(store, 1, 1)

    view = accounts.enable_subscription(store, subscription)
    _instances(store, 1, 1)

    assert (view.enabled, view.disabled_reason) == (True, "")
    rows = _rows(store, subscription)
    assert [(r.status, r.ordering_key == str(instance)) for r in rows] == [
        ("cancelled", True),
        ("pending", False),
    ]
