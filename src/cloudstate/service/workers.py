"""The worker registry: each worker process reports itself and what it holds.

A worker writes its row when it starts and at every heartbeat (``engine.heartbeat``), and
marks it stopped when it shuts down cleanly. A worker whose heartbeat is older than three
intervals is presumed dead: whatever it held (account leases, claimed actions, deliveries)
expires on its own lease and is taken over by the others; the registry only makes that
visible (``GET /v1/workers``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select

from cloudstate.domain.states import OperationStatus
from cloudstate.store import Store
from cloudstate.store.tables import Account, Delivery, OperationRow, Worker, utcnow

HEARTBEAT_SECONDS = 5.0
PRESUMED_DEAD_AFTER = 3 * HEARTBEAT_SECONDS
FORGET_AFTER = timedelta(days=1)


@dataclass(frozen=True)
class WorkerView:
    id: str
    host: str
    pid: int
    version: str
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    alive: bool
    holds: dict[str, Any]


def heartbeat(
    store: Store, worker_id: str, *, host: str, pid: int, version: str, started_at: datetime
) -> None:
    """Write (or refresh) the worker's row with what it holds right now."""
    with store.unit_of_work() as uow:
        holds = _holds(uow.session, worker_id)
        row = uow.session.get(Worker, worker_id)
        if row is None:
            row = Worker(id=worker_id, host=host, pid=pid, version=version, started_at=started_at)
            uow.session.add(row)
        row.heartbeat_at = utcnow()
        row.stopped_at = None
        row.holds = holds
        uow.commit()


def stopped(store: Store, worker_id: str) -> None:
    """A clean shutdown: the worker holds nothing any more."""
    with store.unit_of_work() as uow:
        row = uow.session.get(Worker, worker_id)
        if row is not None:
            row.stopped_at = utcnow()
            row.holds = {}
        uow.commit()


def list_workers(store: Store, *, include_stopped: bool = False) -> list[WorkerView]:
    now = utcnow()
    with store.read() as session:
        statement = select(Worker).order_by(Worker.started_at, Worker.id)
        if not include_stopped:
            statement = statement.where(Worker.stopped_at.is_(None))
        return [_view(row, now) for row in session.scalars(statement)]


def forget_old(store: Store, now: datetime) -> int:
    """Drop workers stopped, or silent, for longer than a day."""
    cutoff = now - FORGET_AFTER
    with store.unit_of_work() as uow:
        result = uow.session.execute(delete(Worker).where(Worker.heartbeat_at < cutoff))
        uow.commit()
    return int(getattr(result, "rowcount", 0) or 0)


def _holds(session: Any, worker_id: str) -> dict[str, Any]:
    accounts = list(
        session.scalars(
            select(Account.name)
            .where(Account.lease_owner == worker_id, Account.lease_expires_at > utcnow())
            .order_by(Account.name)
        )
    )
    operations = session.scalar(
        select(func.count())
        .select_from(OperationRow)
        .where(
            OperationRow.claimed_by == worker_id,
            OperationRow.status.in_([OperationStatus.CALLING, OperationStatus.WAITING]),
        )
    )
    deliveries = session.scalar(
        select(func.count())
        .select_from(Delivery)
        .where(Delivery.claimed_by == worker_id, Delivery.status == "delivering")
    )
    return {"accounts": accounts, "operations": operations or 0, "deliveries": deliveries or 0}


def _view(row: Worker, now: datetime) -> WorkerView:
    silent = (now - row.heartbeat_at).total_seconds()
    return WorkerView(
        id=row.id,
        host=row.host,
        pid=row.pid,
        version=row.version,
        started_at=row.started_at,
        heartbeat_at=row.heartbeat_at,
        stopped_at=row.stopped_at,
        alive=row.stopped_at is None and silent <= PRESUMED_DEAD_AFTER,
        holds=dict(row.holds),
    )
