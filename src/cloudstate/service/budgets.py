"""Provider call budgets shared by every worker: one token bucket per account, in the store.

An account's ``rate_limit``/``rate_burst`` (its config) set the bucket; without them the
account is unlimited until the provider throttles. A throttle anywhere halves the rate for
every worker (never below ``FLOOR``); each call granted afterwards raises it by 2 % again, up
to the configured limit or, with none, until it is unlimited once more. Each grant is one
short transaction on the account's row (``SELECT … FOR UPDATE`` on PostgreSQL), so the
budget holds across processes and hosts; workers skip the row while the account is
unlimited, re-reading it about once a second (``engine.ratelimit.SharedCallBudget``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from cloudstate.exceptions import ConflictError
from cloudstate.store import Store
from cloudstate.store.tables import CallBudgetRow
from cloudstate.store.uow import UnitOfWork

FLOOR = 0.5  # calls per second
RECOVERY = 1.02
UNLIMITED_ABOVE = 1000.0


@dataclass(frozen=True)
class Grant:
    """``wait`` 0: go ahead now; otherwise try again in ``wait`` seconds. ``rate`` is the
    account's pace now (None: unlimited)."""

    wait: float
    rate: float | None


def take(
    store: Store, account_id: int, *, ceiling: float | None, burst: float | None, now: datetime
) -> Grant:
    """Take one call's token from the account's shared bucket, if one is there."""
    try:
        return _take(store, account_id, ceiling, burst, now)
    except (ConflictError, IntegrityError):  # two workers created the row at once: once more
        return _take(store, account_id, ceiling, burst, now)


def _take(
    store: Store, account_id: int, ceiling: float | None, burst: float | None, now: datetime
) -> Grant:
    with store.unit_of_work() as uow:
        row = _locked(uow, account_id, ceiling, burst, now)
        if row.throttled_at is None:  # follow the configuration until the provider objects
            row.rate = ceiling
            row.burst = _burst(ceiling, burst)
        if row.rate is None:
            uow.commit()
            return Grant(0.0, None)
        elapsed = max(0.0, (now - row.refilled_at).total_seconds())
        tokens = min(row.burst, row.tokens + elapsed * row.rate)
        row.refilled_at = now
        if tokens < 1:
            row.tokens = tokens
            uow.commit()
            return Grant((1 - tokens) / row.rate, row.rate)
        row.tokens = tokens - 1
        if row.throttled_at is not None:
            _recover(row, ceiling, burst)
        rate = row.rate
        uow.commit()
        return Grant(0.0, rate)


def throttled(store: Store, account_id: int, *, used: float, now: datetime) -> float:
    """The provider asked us to slow down: halve the account's pace (an unlimited account
    starts from ``used``, the calls per second this worker just made). Returns the new rate."""
    with store.unit_of_work() as uow:
        row = _locked(uow, account_id, None, None, now)
        current = row.rate if row.rate is not None else max(used, FLOOR)
        row.rate = max(FLOOR, current / 2)
        row.burst = 1.0
        row.tokens = min(row.tokens, 0.0)
        row.throttled_at = now
        rate = row.rate
        uow.commit()
    return rate


def _recover(row: CallBudgetRow, ceiling: float | None, burst: float | None) -> None:
    assert row.rate is not None
    raised = row.rate * RECOVERY
    if ceiling is not None and raised >= ceiling:
        row.rate, row.throttled_at, row.burst = ceiling, None, _burst(ceiling, burst)
    elif ceiling is None and raised > UNLIMITED_ABOVE:
        row.rate, row.throttled_at = None, None
    else:
        row.rate = raised


def _burst(ceiling: float | None, burst: float | None) -> float:
    return burst if burst is not None else max(1.0, ceiling or 1.0)


def _locked(
    uow: UnitOfWork, account_id: int, ceiling: float | None, burst: float | None, now: datetime
) -> CallBudgetRow:
    """The account's row, locked; created (in this transaction) on first use."""
    statement = select(CallBudgetRow).where(CallBudgetRow.account_id == account_id)
    row = uow.session.scalars(statement.with_for_update()).first()
    if row is None:
        size = _burst(ceiling, burst)
        row = CallBudgetRow(
            account_id=account_id, rate=ceiling, burst=size, tokens=size, refilled_at=now
        )
        uow.session.add(row)
        uow.session.flush()
    return row
