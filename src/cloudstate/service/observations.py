"""Reconciliation bookkeeping: apply a listing page, close a cycle, record outages and realms.

Each page is diffed against the store and its changes and events commit in one transaction.
An observation older than the instance's last local change (an action accepted after the page
was fetched) is skipped: the next cycle sees the newer truth. What a cycle did not see is
judged only at the end of a complete cycle, and "missing" never becomes ``terminated`` unless
we destroyed the instance ourselves.

Fencing: a cycle's every write is made under the worker's account lease (``Lease``). Just
before such a transaction commits, ``_hold`` renews the lease with a conditional ``UPDATE``
that matches only while this worker holds it unexpired; when it matches nothing the whole
transaction is rolled back and ``LeaseLostError`` raised. The account row stays locked by that
``UPDATE`` until the commit, so a worker claiming the account after the lease expired (its
claim skips locked rows) always starts after the last write of the previous holder. The
account row is taken last in every such transaction, after the instance rows, as in the
other writers (actions, launches): two transactions never wait on each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, Row, and_, case, delete, func, select, update

from cloudstate.domain.events import EventDraft, EventType
from cloudstate.domain.observations import (
    Observation,
    Origin,
    OrphanPolicy,
    confirmed_gone,
    observe,
    orphan_policy,
    unobservable,
)
from cloudstate.domain.states import TRANSITIONAL, InstanceState, Operation, UnknownReason
from cloudstate.exceptions import (
    LeaseLostError,
    ProviderAuthError,
    ProviderError,
    ProviderThrottledError,
)
from cloudstate.service.launches import Launched, launched
from cloudstate.service.recording import commit_changes, record, snapshot
from cloudstate.store import Store
from cloudstate.store.claims import Lease as ClaimLease
from cloudstate.store.claims import claim_one
from cloudstate.store.tables import Account, Instance, LeaseLog, Orphan, Realm, utcnow
from cloudstate.store.uow import UnitOfWork

_NOT_JUDGED = (InstanceState.TERMINATED, InstanceState.NEW)  # not judged when missing


ACCOUNT_LEASE = ClaimLease(Account.lease_owner, Account.lease_expires_at)


@dataclass(frozen=True)
class Lease:
    """A worker's hold on one account for a reconcile cycle; every write of the cycle is
    fenced by it (see the module's docstring)."""

    account_id: int
    worker: str
    period: timedelta


def _hold(uow: UnitOfWork, lease: Lease) -> None:
    """Renew ``lease`` inside ``uow``'s transaction, or raise ``LeaseLostError`` (the caller's
    unit of work then rolls back). Pending instance changes are flushed first (the ORM
    autoflushes before the ``UPDATE``), so the account row is locked last."""
    now = utcnow()
    expires = now + lease.period
    if not ACCOUNT_LEASE.renew(
        uow.session, Account.id == lease.account_id, lease.worker, now, expires
    ):
        raise LeaseLostError(lease.account_id, lease.worker)
    uow.session.execute(
        update(LeaseLog)
        .where(_open_lease(lease.account_id, lease.worker))
        .values(expires_at=expires)
        .execution_options(synchronize_session=False)
    )


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


@dataclass(frozen=True)
class PageResult:
    """What a page did; ``destroy`` lists new orphans that the account's policy says to
    destroy, with why each is one. The caller destroys them, then ``record_orphans`` them."""

    changed: int
    orphans: int
    destroy: tuple[tuple[Observation, str], ...] = ()


def apply_page(
    store: Store, lease: Lease, observations: Sequence[Observation], observed_at: datetime
) -> PageResult:
    """Diff one listing page against the store; changes and events commit together, under
    ``lease`` (renewed by the same transaction). Instances are changed in uuid order, the
    order every bulk writer locks them in.

    The diff first reads only the columns an observation is compared with (``_SNAPSHOT``):
    in a steady fleet almost nothing changes, and whole rows (seven JSON columns, labels)
    cost most of a cycle. Whole rows are loaded only for what may change."""
    account_id = lease.account_id
    with store.unit_of_work() as uow:
        current = {
            row.uuid: row
            for row in uow.session.execute(
                select(*_SNAPSHOT).where(Instance.uuid.in_([o.uuid for o in observations]))
            )
        }
        moving = sorted(
            (o for o in observations if _moves(current.get(o.uuid), account_id, o, observed_at)),
            key=lambda o: o.uuid,
        )
        result = _apply(uow, account_id, moving, observed_at) if moving else PageResult(0, 0)
        _hold(uow, lease)
        uow.commit()
    return result


def _apply(
    uow: UnitOfWork, account_id: int, moving: Sequence[Observation], observed_at: datetime
) -> PageResult:
    """Apply the observations that may change something (in uuid order) to their whole rows."""
    account = uow.session.get_one(Account, account_id)
    # Locked: an action's bookkeeping writing one of them meanwhile would make the page stale.
    rows = {row.uuid: row for row in uow.instances.locked([o.uuid for o in moving])}
    policy = orphan_policy(account.config)
    changed = orphans = 0
    destroy: list[tuple[Observation, str]] = []
    for seen in moving:
        row = rows.get(seen.uuid)
        stray = _stray(row, account_id, seen)
        if row is not None and not stray:
            changed += _ours(uow, row, account.name, seen, observed_at)
        elif row is None and policy is OrphanPolicy.ADOPT:
            _adopt(uow, account, seen)
            changed += 1
        elif policy is OrphanPolicy.DESTROY:
            if not _reported(uow, account, seen):
                destroy.append((seen, stray))
        else:
            orphans += _orphan(uow, account, seen, stray)
    return PageResult(changed, orphans, tuple(destroy))


_SNAPSHOT = (
    Instance.uuid,
    Instance.account_id,
    Instance.provider_id,
    Instance.state,
    Instance.raw_state,
    Instance.state_reason,
    Instance.operation,
    Instance.public_addresses,
    Instance.private_addresses,
    Instance.key_fingerprint,
    Instance.state_changed_at,
)


def _moves(current: Row[Any] | None, account_id: int, seen: Observation, at: datetime) -> bool:
    """May ``seen`` change anything? False only for an instance of ours, launched, whose
    snapshot the observation leaves as it is (or which changed locally after ``at``)."""
    if current is None or current.account_id != account_id or current.provider_id is None:
        return True
    if current.provider_id != seen.provider_id:
        return True  # a duplicate: an orphan to report
    if current.state_changed_at > at:
        return False  # the next cycle sees the newer truth (see ``_ours``)
    before = snapshot(current)
    after, changes = observe(before, seen)
    return bool(changes) or after != before


def _stray(row: Instance | None, account_id: int, seen: Observation) -> str:
    """Why ``seen`` is an orphan: ``unknown`` (no such UUID on this account; only one with no
    row at all may be adopted), ``duplicate`` (a second instance for a known UUID), or ''."""
    if row is None or row.account_id != account_id:
        return "unknown"
    if row.provider_id not in (None, seen.provider_id):
        return "duplicate"
    return ""


def _adopt(uow: UnitOfWork, account: Account, seen: Observation) -> None:
    """Track an orphan whose UUID we do not know as an instance of ours, from what the listing
    says (image, profile and realm when the provider lists them, else empty). Events:
    ``instance.created`` with reason ``adopted``, then the observed state."""
    origin = seen.origin or Origin()
    row = Instance(
        uuid=seen.uuid,
        account_id=account.id,
        name=str(seen.uuid),
        image=origin.image or "",
        hardware_profile=origin.hardware_profile or "",
        realm=origin.realm,
        state=InstanceState.NEW,
        state_reason="adopted",
    )
    uow.session.add(row)
    uow.session.flush()  # column defaults (timestamps) are filled in for the events
    record(uow, row, account.name, EventType.INSTANCE_CREATED, reason="adopted")
    launched(uow, row, account.name, Launched(seen))


def _ours(
    uow: UnitOfWork, row: Instance, account: str, seen: Observation, observed_at: datetime
) -> int:
    """Apply an observation of one of our instances: its launch, or a newer state."""
    if row.provider_id is None:
        launched(uow, row, account, Launched(seen))
        return 1
    if row.state_changed_at <= observed_at:
        return _observe(uow, row, account, seen)
    return 0


def _observe(uow: UnitOfWork, row: Instance, account: str, seen: Observation) -> int:
    before = snapshot(row)
    after, changes = observe(before, seen)
    if not changes and after == before:
        return 0
    commit_changes(uow, row, account, after, changes)
    if changes:
        row.last_seen_at = utcnow()
    return 1


def record_orphans(
    store: Store, lease: Lease, found: Sequence[tuple[Observation, str]], action: str
) -> int:
    """Report orphans the engine acted on (``action``: ``destroyed`` or ``destroy_failed``)."""
    with store.unit_of_work() as uow:
        account = uow.session.get_one(Account, lease.account_id)
        count = sum(_orphan(uow, account, seen, reason, action) for seen, reason in found)
        _hold(uow, lease)
        uow.commit()
    return count


def _reported(uow: UnitOfWork, account: Account, seen: Observation) -> bool:
    return uow.session.get(Orphan, (account.id, seen.provider_id)) is not None


def _orphan(
    uow: UnitOfWork, account: Account, seen: Observation, reason: str, action: str = "reported"
) -> int:
    """Report an instance tagged as ours that we do not know, once."""
    if _reported(uow, account, seen):
        return 0
    uow.session.add(
        Orphan(
            account_id=account.id,
            provider_id=seen.provider_id,
            uuid=seen.uuid,
            raw_state=seen.raw_state,
            reason=reason,
        )
    )
    data = {
        "provider_id": seen.provider_id,
        "uuid": str(seen.uuid),
        "state": str(seen.state),
        "raw_state": seen.raw_state,
        "reason": reason,
        "action": action,
    }
    uow.record(EventDraft(EventType.INSTANCE_ORPHAN_FOUND, data, account=account.name))
    return 1


def finish_cycle(
    store: Store,
    lease: Lease,
    seen: set[UUID],
    *,
    started_at: datetime,
    grace: timedelta,
    fast: timedelta,
    slow: timedelta,
) -> bool:
    """Judge what a complete cycle did not see; schedule the next cycle, an interval after
    this one *started* (so the cadence does not stretch with the cycle's own length), and at
    once if that has passed. True when on the fast cadence.

    Only the uuids of the account's live instances are read to find the missing ones (a
    cycle over 100,000 instances must not load 100,000 rows); full rows are loaded for the
    missing ones alone."""
    account_id = lease.account_id
    with store.unit_of_work() as uow:
        live = uow.session.scalars(
            select(Instance.uuid).where(
                Instance.account_id == account_id,
                Instance.provider_id.is_not(None),
                Instance.state.not_in(_NOT_JUDGED),
            )
        )
        missing = sorted(set(live) - seen)
        name = uow.session.scalar(select(Account.name).where(Account.id == account_id))
        for chunk in range(0, len(missing), _CHUNK):
            rows = uow.instances.locked(missing[chunk : chunk + _CHUNK])
            for row in rows:
                _missing(uow, row, name or "", started_at, grace)
        hurry = _needs_fast_cadence(uow, account_id)
        _hold(uow, lease)
        account = uow.session.get_one(Account, account_id)
        account.consecutive_failures = 0
        account.status, account.status_reason = "ok", ""
        account.last_cycle_at = started_at
        account.next_reconcile_at = started_at + (fast if hurry else slow)
        uow.session.execute(
            update(LeaseLog)
            .where(_open_lease(account_id, lease.worker))
            .values(completed=True)
            .execution_options(synchronize_session=False)
        )
        uow.commit()
    return hurry


_CHUNK = 500  # rows loaded at a time when judging the instances a cycle did not see


def _missing(
    uow: UnitOfWork, row: Instance, account: str, started_at: datetime, grace: timedelta
) -> None:
    """Judge one instance a complete cycle did not list. An action in flight is its
    executor's to judge (a destroy queued inside the visibility window has not reached the
    cloud yet: absence proves nothing); the cycle only reports what it saw."""
    before = snapshot(row)
    if before.state in _NOT_JUDGED:
        return  # ended (or reset) since the cycle read its live instances: read again, locked
    if row.launched_at is not None and row.launched_at >= started_at:
        return  # recorded launched after this cycle's listing began: it could not be listed
    if before.operation not in (None, Operation.LAUNCHING):
        return  # the operation's owner looks the instance up itself
    if before.state is InstanceState.SHUTTING_DOWN:  # the provider said it was going
        after, changes = confirmed_gone(before)
    elif row.launched_at is not None and row.launched_at > started_at - grace:
        return  # not yet visible: eventual consistency, still within the grace window
    else:
        after, changes = unobservable(before, UnknownReason.MISSING)
    commit_changes(uow, row, account, after, changes)


def _needs_fast_cadence(uow: UnitOfWork, account_id: int) -> bool:
    """Fast while anything of the account is changing or being acted on."""
    busy = uow.session.scalar(
        select(func.count())
        .select_from(Instance)
        .where(
            Instance.account_id == account_id,
            Instance.state.in_(list(TRANSITIONAL)) | Instance.operation.is_not(None),
        )
    )
    return bool(busy)


def account_failed(
    store: Store,
    lease: Lease,
    error: ProviderError,
    *,
    threshold: int,
    retry_in: timedelta,
) -> None:
    """A listing failed. After ``threshold`` failures in a row, instances become ``unknown``;
    not when the last one was throttled: the provider answered, it only asked us to slow down,
    and calling it unreachable would flap the whole fleet on a busy day."""
    with store.unit_of_work() as uow:
        account = uow.session.get_one(Account, lease.account_id)
        failures = account.consecutive_failures + 1
        throttled = isinstance(error, ProviderThrottledError)
        if isinstance(error, ProviderAuthError):
            require_credentials(uow, account, error.reason)
        elif failures >= threshold and not throttled:
            _all_unknown(uow, account, UnknownReason.PROVIDER_UNREACHABLE)
            account.status, account.status_reason = "unreachable", error.reason
        _hold(uow, lease)
        account.consecutive_failures = failures
        account.next_reconcile_at = utcnow() + retry_in
        uow.commit()


def credentials_refused(store: Store, account_id: int, reason: str) -> None:
    """The provider refused the account's credentials outside a listing (a verification):
    the same outcome as a refused listing, without touching the failure count or cadence."""
    with store.unit_of_work() as uow:
        require_credentials(uow, uow.session.get_one(Account, account_id), reason)
        uow.commit()


def credentials_accepted(store: Store, account_id: int) -> None:
    """The credentials work again: clear a ``credentials`` status and reconcile soon, so the
    next cycle restores the instances' observed states. Other statuses are the cycle's to clear."""
    with store.unit_of_work() as uow:
        clear_credentials_status(uow.session.get_one(Account, account_id))
        uow.commit()


def clear_credentials_status(account: Account) -> None:
    """Back to ``ok`` from ``credentials`` (the caller commits), with a cycle due at once."""
    if account.status == "credentials":
        account.status, account.status_reason = "ok", ""
        account.consecutive_failures = 0
        account.next_reconcile_at = utcnow()


def require_credentials(uow: UnitOfWork, account: Account, reason: str) -> None:
    """Instances become ``unknown`` (reason ``credentials``); the event comes once per episode
    (only when the status changes), however many cycles keep failing."""
    if account.status != "credentials":
        data = {"account": account.name, "reason": reason}
        uow.record(EventDraft(EventType.ACCOUNT_CREDENTIALS_REQUIRED, data, account=account.name))
    account.status, account.status_reason = "credentials", reason
    _all_unknown(uow, account, UnknownReason.CREDENTIALS)


def _all_unknown(uow: UnitOfWork, account: Account, reason: UnknownReason) -> None:
    statement = select(Instance).where(
        Instance.account_id == account.id,
        Instance.provider_id.is_not(None),
        Instance.state.not_in([*_NOT_JUDGED, InstanceState.ERROR]),
    )
    for row in uow.session.scalars(statement):
        after, changes = unobservable(snapshot(row), reason)
        if changes:
            commit_changes(uow, row, account.name, after, changes)


def update_realms(store: Store, lease: Lease, realms: Sequence[tuple[str, bool, str]]) -> int:
    """Store realm availability; each change is a ``realm.availability_changed`` event."""
    account_id = lease.account_id
    with store.unit_of_work() as uow:
        account = uow.session.get_one(Account, account_id)
        known = {
            realm.name: realm
            for realm in uow.session.scalars(select(Realm).where(Realm.account_id == account_id))
        }
        changed = 0
        for name, available, reason in realms:
            row = known.get(name)
            if row is not None and row.available == available:
                continue
            if row is None:
                row = Realm(account_id=account_id, name=name, available=available, reason=reason)
                uow.session.add(row)
            row.available, row.reason = available, reason
            data = {"account": account.name, "realm": name, "available": available}
            data["reason"] = reason
            uow.record(EventDraft(EventType.REALM_AVAILABILITY_CHANGED, data, account=account.name))
            changed += 1
        _hold(uow, lease)
        account.realms_checked_at = utcnow()
        uow.commit()
    return changed


def claim_account(
    store: Store, worker: str, *, now: datetime, lease: timedelta
) -> tuple[int, str] | None:
    """Lease the account most overdue for a cycle, if any (SKIP LOCKED on PostgreSQL)."""
    with store.unit_of_work() as uow:
        statement = (
            select(Account)
            .where(Account.next_reconcile_at <= now, ACCOUNT_LEASE.free(now))
            .order_by(Account.next_reconcile_at)
            .limit(1)
        )
        account = claim_one(uow.session, statement)
        if account is None:
            return None
        account.lease_owner = worker
        account.lease_expires_at = now + lease
        # A cycle of ours that never released (it failed, or we crashed) ended at its expiry.
        uow.session.execute(
            update(LeaseLog)
            .where(_open_lease(account.id, worker))
            .values(finished_at=LeaseLog.expires_at)
        )
        # Logged from now, read once the row is ours: a previous holder's release (or expiry)
        # is then always earlier, even when this worker was slow to get here.
        held_from = max(utcnow(), now)
        uow.session.add(
            LeaseLog(
                account_id=account.id,
                worker_id=worker,
                started_at=held_from,
                expires_at=max(held_from, now + lease),
            )
        )
        uow.commit()
        return account.id, account.name


def release_account(store: Store, account_id: int, worker: str) -> None:
    """The cycle is over: give the lease back, and close our lease-log entry. When the lease
    was lost meanwhile, the entry ends at the lease's last renewal: no write of ours was
    fenced after it (see ``_hold``), and the next holder started later."""
    with store.unit_of_work() as uow:
        now = utcnow()
        released = ACCOUNT_LEASE.release(uow.session, Account.id == account_id, worker)
        lost = case((LeaseLog.expires_at < now, LeaseLog.expires_at), else_=now)
        ended = now if released else lost
        uow.session.execute(
            update(LeaseLog)
            .where(_open_lease(account_id, worker))
            .values(finished_at=ended)
            .execution_options(synchronize_session=False)
        )
        uow.commit()


def _open_lease(account_id: int, worker: str) -> ColumnElement[bool]:
    return and_(
        LeaseLog.account_id == account_id,
        LeaseLog.worker_id == worker,
        LeaseLog.finished_at.is_(None),
    )


def prune_lease_log(store: Store, before: datetime) -> int:
    """Forget lease-log entries that ended (or expired) before ``before``."""
    with store.unit_of_work() as uow:
        ended = func.coalesce(LeaseLog.finished_at, LeaseLog.expires_at)
        result = uow.session.execute(delete(LeaseLog).where(ended < before))
        uow.commit()
    return int(getattr(result, "rowcount", 0) or 0)


def anything_changing(store: Store) -> bool:
    """Is any instance in a transitional state? Then there is more to observe, even while an
    account backs off after a failed listing for longer than ``next_cycle_within`` looks ahead
    (a burst must not call that idle)."""
    transitional = [str(state) for state in TRANSITIONAL]
    with store.read() as session:
        found = session.scalar(
            select(Instance.uuid).where(Instance.state.in_(transitional)).limit(1)
        )
    return found is not None


def next_cycle_within(store: Store, seconds: float) -> bool:
    """Is any account due for a cycle within ``seconds``? (A burst keeps going while so.)"""
    horizon = utcnow() + timedelta(seconds=seconds)
    with store.read() as session:
        due = session.scalar(
            select(func.count()).select_from(Account).where(Account.next_reconcile_at <= horizon)
        )
    return bool(due)
