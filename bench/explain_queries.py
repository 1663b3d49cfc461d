"""EXPLAIN ANALYZE the hot queries exactly as cloudstate sends them, on PostgreSQL.

    .venv/bin/python bench/explain_queries.py [--instances 20000] [--url postgresql://...]

Seeds a throwaway database (accounts, instances with labels, events and deliveries), then runs
the real claim and list functions with a hook that, for each SELECT they send, runs
``EXPLAIN (ANALYZE, BUFFERS)`` on the same statement and parameters first. The output is what
docs/ARCHITECTURE.md quotes under "Query plans". Nothing is mocked: the plans are those of the
statements the workers and the API send.
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import create_engine, event, text

from cloudstate.config import load_settings
from cloudstate.domain.events import EventDraft, EventType
from cloudstate.domain.orders import resolve_order
from cloudstate.service import actions, launches, observations, queries
from cloudstate.service.accounts import add_subscription
from cloudstate.store import Store
from cloudstate.store.tables import utcnow

BASE = "postgresql://postgres@127.0.0.1:5432/test"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=20_000)
    parser.add_argument("--url", default=os.environ.get("CLOUDSTATE_BENCH_POSTGRES_URL", BASE))
    args = parser.parse_args()
    with _throwaway(args.url) as url:
        store = Store.from_settings(load_settings(database_url=url))
        store.upgrade()
        try:
            _seed(store, args.instances)
            _explain_all(store)
        finally:
            store.close()


def _seed(store: Store, count: int) -> None:
    """Accounts, instances (half running with provider ids), labels, one subscription, and
    an event (hence a delivery) per instance."""
    add_subscription(store, "http", "https://receiver.example/hook", {})
    with store.unit_of_work() as uow:
        for name in ("east", "west"):
            uow.accounts.add(name, "simulator")
        uow.commit()
    batch = 1000
    for start in range(0, count, batch):
        request = {
            "account": "east" if start % 2000 == 0 else "west",
            "image": "img-basic",
            "hardware_profile": "small",
            "labels": {"team": f"t{start // batch % 10}"},
            "instances": [{"uuid": str(uuid.uuid4())} for _ in range(min(batch, count - start))],
        }
        order = resolve_order(request)
        with store.unit_of_work() as uow:
            account = uow.accounts.get(request["account"])
            for number, spec in enumerate(order.instances):
                row = uow.instances.add(spec, account, None)
                if number % 2:
                    row.state, row.provider_id = "running", f"i-{spec.uuid.hex[:17]}"
                draft = EventDraft(EventType.INSTANCE_CREATED, {}, spec.uuid, None, account.name)
                uow.record(draft, row)
            uow.commit()
    with store.unit_of_work() as uow:
        uow.session.execute(text("ANALYZE"))
        uow.commit()


def _explain_all(store: Store) -> None:
    now, lease = utcnow(), timedelta(seconds=60)
    cases: list[tuple[str, Callable[[], Any]]] = [
        (
            "launcher: claim due new instances",
            lambda: launches.claim_launches(store, limit=50, now=now, lease=lease),
        ),
        (
            "executor: claim queued actions",
            lambda: actions.claim_operations(store, "w", limit=50, now=now, lease=lease),
        ),
        (
            "reconciler: lease the most overdue account",
            lambda: observations.claim_account(store, "w", now=now, lease=lease),
        ),
        ("deliverer: claim due head-of-queue deliveries", lambda: _claim_deliveries(store)),
        (
            "API: GET /v1/instances?state=running (a 100-item page)",
            lambda: queries.list_instances(store, states=["running"], limit=100),
        ),
        (
            "API: GET /v1/instances?label=team=t3",
            lambda: queries.list_instances(store, labels={"team": "t3"}, limit=100),
        ),
        ("API: GET /v1/events?after=N", lambda: queries.events_after(store, 5_000, limit=100)),
    ]
    for title, run in cases:
        print(f"\n### {title}\n")
        with _explaining(store):
            run()


def _claim_deliveries(store: Store) -> None:
    with store.unit_of_work() as uow:
        uow.deliveries.claim("w", 100, utcnow(), timedelta(seconds=60))
        uow.session.rollback()


@contextmanager
def _explaining(store: Store) -> Iterator[None]:
    engine = store.database.engine
    seen: set[str] = set()

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        head = statement.lstrip().upper()
        if not head.startswith("SELECT") or "PG_" in head or statement in seen:
            return
        seen.add(statement)
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement, parameters)
        plan = "\n".join(_short(row[0]) for row in cursor.fetchall())
        print("```\n" + " ".join(statement.split())[:600] + "\n```\n```\n" + plan + "\n```")

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", before)


def _short(line: str, width: int = 160) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


@contextmanager
def _throwaway(base: str) -> Iterator[str]:
    name = f"cloudstate_explain_{os.getpid()}"
    admin = create_engine(
        base.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
