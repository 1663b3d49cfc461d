"""Webhook delivery: deliveries per second to a local receiver, against a minimal reference relay
and against procrastinate running as many no-op jobs, all on the same PostgreSQL in one run.

Setup (not timed): launch orders of 1,000 instances are accepted (nothing is launched), so N
``instance.created`` events wait in the outbox with one pending delivery each for one HTTP
subscription to ``bench/_receiver.py`` (a separate process answering 200 at once); then
``VACUUM ANALYZE``, as autovacuum would have done on a database in use (each reference's table
gets the same).

Measured, one after the other, each over the same N:

* cloudstate: the ``Deliverer`` task driven by the engine's own burst loop in this process
  until nothing is left: claims heads of queue, signs (Standard Webhooks HMAC), POSTs with
  aiohttp, acknowledges in batches. Default settings (``delivery_concurrency`` 50,
  ``delivery_per_endpoint_concurrency`` 10, batch 100), plus a second run with the
  per-endpoint limit raised to 50, the reference's concurrency.
* reference relay: a table of the same N event bodies; a loop that claims 50 rows
  (``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 50) RETURNING``), POSTs
  them concurrently with one aiohttp session, and marks them delivered: no ordering, no
  signing, no retries, no per-endpoint limits.
* procrastinate: ``PsycopgConnector``, its schema applied in the same database, N jobs of a
  no-op async task deferred in batches, then a worker (concurrency 10) run until the queue is
  empty (``wait=False``); only the worker run is timed.

Usage: ``python bench/bench_delivery.py [--quick]``
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from _common import (
    Children,
    Receiver,
    Reporter,
    add_simulator_account,
    at_least,
    bench_main,
    prepared_store,
    settings,
    simulator,
    vacuum,
    vacuum_url,
)
from sqlalchemy import func, select, update

from cloudstate.config import Settings
from cloudstate.engine.callables import CallableRegistry
from cloudstate.engine.deliverer import Deliverer
from cloudstate.engine.drivers import DriverPool
from cloudstate.engine.loop import run_burst
from cloudstate.service import accounts, orders
from cloudstate.store import Store
from cloudstate.store.repositories import event_record
from cloudstate.store.tables import Delivery, Event
from cloudstate.webhooks.envelope import CONTENT_TYPE, event_body

TARGET_RATE = 3_000
TARGET_RATIO = 0.5
FULL_DELIVERIES = 20_000
QUICK_DELIVERIES = 2_000
ORDER_SIZE = 1_000
RELAY_BATCH = 50
PROCRASTINATE_CONCURRENCY = 10


def queue_events(store: Store, pool: DriverPool, count: int) -> None:
    """``count`` instance.created events (orders of ORDER_SIZE), one delivery each."""
    for start in range(0, count, ORDER_SIZE):
        size = min(ORDER_SIZE, count - start)
        request = {
            "account": "sim",
            "image": "img-basic",
            "hardware_profile": "small",
            "instances": [
                {"uuid": str(uuid.uuid4()), "name": f"d-{start + n}"} for n in range(size)
            ],
        }
        orders.accept_order(store, pool, request)


def delivered(store: Store) -> int:
    with store.read() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(Delivery).where(Delivery.status == "delivered")
            )
            or 0
        )


def total_deliveries(store: Store) -> int:
    with store.read() as session:
        return int(session.scalar(select(func.count()).select_from(Delivery)) or 0)


def reset_deliveries(store: Store) -> None:
    """Every delivery pending again, due now, attempts forgotten (for a second run)."""
    with store.database.engine.begin() as conn:
        conn.execute(
            update(Delivery).values(
                status="pending",
                attempts=0,
                delivered_at=None,
                claimed_by=None,
                claimed_until=None,
                next_attempt_at=func.now(),
            )
        )


@dataclass(frozen=True)
class Timed:
    seconds: float
    cpu: float  # CPU seconds of this process over the same span

    def rate(self, count: int) -> float:
        return count / self.seconds


def cloudstate_run(store: Store, config: Settings, receiver: Receiver, count: int) -> Timed:
    """Deliver every pending delivery with the engine's deliverer."""
    receiver.reset()
    deliverer = Deliverer(
        store, config, worker_id=f"bench-{uuid.uuid4().hex[:6]}", callables=CallableRegistry()
    )
    try:
        started, cpu = time.perf_counter(), time.process_time()
        idle = run_burst([deliverer], timeout=600.0)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        deliverer.close()
    done = delivered(store)
    if not idle or done != count or receiver.count() < count:
        raise RuntimeError(f"cloudstate delivered {done} of {count} ({receiver.count()} received)")
    return Timed(elapsed, cpu)


def relay_bodies(store: Store) -> list[bytes]:
    with store.read() as session:
        return [event_body(event_record(row)) for row in session.scalars(select(Event))]


def fill_relay(url: str, bodies: list[bytes]) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TABLE relay_outbox (id bigserial PRIMARY KEY, body bytea NOT NULL,"
            " status text NOT NULL DEFAULT 'pending', claimed_until timestamptz,"
            " delivered_at timestamptz)"
        )
        conn.execute("CREATE INDEX relay_pending ON relay_outbox (id) WHERE status = 'pending'")
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO relay_outbox (body) VALUES (%s)", [(b,) for b in bodies]
            )
    vacuum_url(url)


CLAIM = f"""
UPDATE relay_outbox SET status = 'sending', claimed_until = now() + interval '60 seconds'
WHERE id IN (
    SELECT id FROM relay_outbox WHERE status = 'pending' ORDER BY id
    LIMIT {RELAY_BATCH} FOR UPDATE SKIP LOCKED
)
RETURNING id, body
"""
ACK = "UPDATE relay_outbox SET status = 'delivered', delivered_at = now() WHERE id = ANY(%s)"


async def relay(url: str, target: str) -> tuple[Timed, int]:
    """The minimal reference relay; returns its time and how many it delivered."""
    headers = {"content-type": CONTENT_TYPE}

    async def post(http: aiohttp.ClientSession, body: bytes) -> int:
        async with http.post(target, data=body, headers=headers) as response:
            await response.read()
            return response.status

    done = 0
    connector = aiohttp.TCPConnector(limit=RELAY_BATCH)
    async with (
        await psycopg.AsyncConnection.connect(url) as conn,
        aiohttp.ClientSession(connector=connector) as http,
    ):
        started, cpu = time.perf_counter(), time.process_time()
        while True:
            async with conn.transaction():
                rows = await (await conn.execute(CLAIM)).fetchall()
            if not rows:
                break
            statuses = await asyncio.gather(*(post(http, body) for _, body in rows))
            ok = [row[0] for row, status in zip(rows, statuses, strict=True) if status == 200]
            async with conn.transaction():
                await conn.execute(ACK, (ok,))
            done += len(ok)
        return Timed(time.perf_counter() - started, time.process_time() - cpu), done


async def procrastinate_run(url: str, count: int) -> Timed:
    """Defer ``count`` no-op jobs, then time a worker that runs them all."""
    from procrastinate import App, PsycopgConnector

    app = App(connector=PsycopgConnector(conninfo=url))

    @app.task(name="noop", queue="bench")
    async def noop(n: int) -> None:
        return None

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        for start in range(0, count, 1000):
            await noop.batch_defer_async(
                *({"n": n} for n in range(start, min(count, start + 1000)))
            )
        vacuum_url(url)  # the same fresh statistics cloudstate's tables get
        started, cpu = time.perf_counter(), time.process_time()
        await app.run_worker_async(
            queues=["bench"],
            wait=False,
            concurrency=PROCRASTINATE_CONCURRENCY,
            install_signal_handlers=False,
            listen_notify=False,
        )
        elapsed = Timed(time.perf_counter() - started, time.process_time() - cpu)
        async with app.connector.pool.connection() as conn:  # type: ignore[attr-defined]
            cursor = await conn.execute(
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
            )
            row = await cursor.fetchone()
    if row is None or row[0] != count:
        raise RuntimeError(f"procrastinate ran {row} of {count} jobs")
    return elapsed


def run(opts: Any, reporter: Reporter, home: Path, url: str) -> None:
    count = QUICK_DELIVERIES if opts.quick else FULL_DELIVERIES
    config = settings(home, url, webhook_allow=["127.0.0.1"])
    store = prepared_store(config)
    cloud = simulator(home / "cloud.db")
    add_simulator_account(store, "sim", home / "cloud.db", "sim")
    pool = DriverPool(store, home)
    with Children(home / "logs") as children:
        receiver = Receiver(children)
        accounts.add_subscription(store, "http", receiver.url, {})
        started = time.perf_counter()
        queue_events(store, pool, count)
        count = total_deliveries(store)
        print(f"   setup: {count:,} deliveries queued in {time.perf_counter() - started:.1f} s")
        vacuum(store)
        default = cloudstate_run(store, config, receiver, count)
        reset_deliveries(store)
        vacuum(store)
        wide_config = config.model_copy(update={"delivery_per_endpoint_concurrency": RELAY_BATCH})
        wide = cloudstate_run(store, wide_config, receiver, count)
        fill_relay(url, relay_bodies(store))
        receiver.reset()
        reference, relayed = asyncio.run(relay(url, receiver.url))
        if relayed != count:
            raise RuntimeError(f"the reference relay delivered {relayed} of {count}")
        jobs = asyncio.run(procrastinate_run(url, count))
    pool.close()
    store.close()
    cloud.close()
    report(reporter, count, default, wide, reference, jobs)


def report(
    reporter: Reporter, count: int, default: Timed, wide: Timed, reference: Timed, jobs: Timed
) -> None:
    rate, ref = default.rate(count), reference.rate(count)

    def cpu(run: Timed) -> str:
        return f"{run.cpu * 1e6 / count:,.0f} µs CPU each"

    target, ok = at_least(rate, TARGET_RATE)
    reporter.report(
        "delivery.deliveries_per_s",
        rate,
        "/s",
        target,
        ok,
        reference="minimal SKIP LOCKED relay",
        reference_figure=ref,
        ratio=rate / ref,
        note=f"{count:,} deliveries, default settings (10 in flight per receiver); "
        f"{cpu(default)} (relay {cpu(reference)})",
    )
    target, ok = at_least(rate / ref, TARGET_RATIO)
    reporter.report("delivery.ratio_to_reference_relay", rate / ref, "", target, ok)
    reporter.report(
        "delivery.deliveries_per_s_50_per_receiver",
        wide.rate(count),
        "/s",
        reference="minimal SKIP LOCKED relay",
        reference_figure=ref,
        ratio=wide.rate(count) / ref,
        note=f"delivery_per_endpoint_concurrency=50, the relay's concurrency; {cpu(wide)}",
    )
    reporter.report(
        "delivery.ratio_to_procrastinate",
        rate / jobs.rate(count),
        "",
        reference=f"procrastinate no-op jobs, concurrency {PROCRASTINATE_CONCURRENCY}",
        note=f"procrastinate {jobs.rate(count):,.0f} jobs/s, {cpu(jobs)}",
    )


def main() -> None:
    logging.getLogger("procrastinate").setLevel(logging.ERROR)
    bench_main("delivery", __doc__ or "", run)


if __name__ == "__main__":
    main()
