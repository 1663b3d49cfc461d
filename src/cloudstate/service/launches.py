"""Launch bookkeeping for the launcher: claim, mark "create sent", record outcomes.

The launcher's exactly-once argument rests on the order of commits here:

1. ``claim_launches`` leases due ``new`` instances (a crashed worker's lease expires);
2. ``mark_requested`` commits ``launch_requested_at`` *before* the create call, so after any
   crash we know a create may have happened and must look the UUID up before creating again;
3. ``record_launched`` / ``record_launch_error`` commit what the provider answered.

A lookup that finds nothing only allows a new create once ``pending_grace_seconds`` have passed
since the last request: a cloud that is eventually consistent may not list it yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy import select

from cloudstate.domain.events import EventType
from cloudstate.domain.observations import Observation, observe
from cloudstate.domain.states import InstanceState, Operation
from cloudstate.service.actions import destroyed_before_create
from cloudstate.service.recording import commit_changes, record, snapshot
from cloudstate.store import Store
from cloudstate.store.claims import claimable
from cloudstate.store.tables import Instance, utcnow
from cloudstate.store.uow import UnitOfWork


@dataclass(frozen=True)
class LaunchJob:
    uuid: UUID
    account_id: int
    name: str
    image: str
    hardware_profile: str
    hardware: dict[str, int]
    keyname: str | None
    realm: str | None
    user_data: str | None
    labels: dict[str, str]
    attempts: int
    requested_at: datetime | None  # a create may have been sent at this time
    failover: tuple[str, ...] = ()  # accounts to try next if this one refuses

    def may_exist(self) -> bool:
        return self.requested_at is not None


@dataclass(frozen=True)
class Launched:
    """A provider instance found or created for a job (the launcher builds it)."""

    observation: Observation
    key_material: str | None = None


def claim_launches(store: Store, *, limit: int, now: datetime, lease: timedelta) -> list[LaunchJob]:
    """Lease up to ``limit`` due ``new`` instances (SKIP LOCKED on PostgreSQL)."""
    with store.unit_of_work() as uow:
        statement = (
            select(Instance)
            .where(Instance.state == InstanceState.NEW, Instance.blocked.is_(False))
            .where((Instance.next_attempt_at.is_(None)) | (Instance.next_attempt_at <= now))
            .order_by(Instance.account_id, Instance.created_at)
            .limit(limit)
        )
        jobs = []
        for row in uow.session.scalars(claimable(uow.session, statement)):
            row.next_attempt_at = now + lease
            row.operation = row.operation or Operation.LAUNCHING
            jobs.append(_job(row))
        uow.commit()
    return jobs


def _job(row: Instance) -> LaunchJob:
    return LaunchJob(
        uuid=row.uuid,
        account_id=row.account_id,
        name=row.name,
        image=row.image,
        hardware_profile=row.hardware_profile,
        hardware=dict(row.hardware),
        keyname=row.keyname,
        realm=row.realm,
        user_data=row.user_data,
        labels=row.label_map,
        attempts=row.launch_attempts,
        requested_at=row.launch_requested_at,
        failover=tuple(row.failover),
    )


def mark_requested(store: Store, jobs: list[LaunchJob], now: datetime) -> list[LaunchJob]:
    """Commit "a create is about to be sent" for each job still ours; returns those.

    A job whose instance is meanwhile to be destroyed (a cancel, a rollback) is not created:
    any earlier create was looked up and not found, so it ends here, destroyed."""
    with store.unit_of_work() as uow:
        kept = []
        names = uow.accounts.names()
        rows = uow.instances.find_many([job.uuid for job in jobs])
        for job in jobs:
            row = rows.get(job.uuid)
            if row is None or row.state != InstanceState.NEW:
                continue
            if row.operation == Operation.DESTROYING:
                destroyed_before_create(uow, row, names[row.account_id])
                continue
            row.launch_requested_at = now
            row.launch_attempts += 1
            kept.append(job)
        uow.commit()
    return kept


def reschedule(store: Store, uuids: list[UUID], at: datetime) -> None:
    with store.unit_of_work() as uow:
        for row in uow.instances.get_many(uuids):
            if row.state == InstanceState.NEW:
                row.next_attempt_at = at
        uow.commit()


def record_launched(store: Store, results: list[Launched]) -> None:
    """The provider has (or already had) these instances: store their ids and first state."""
    if not results:
        return
    with store.unit_of_work() as uow:
        names = uow.accounts.names()
        rows = uow.instances.find_many([result.observation.uuid for result in results])
        for result in results:
            row = rows.get(result.observation.uuid)
            if row is not None and row.provider_id is None:
                launched(uow, row, names[row.account_id], result)
        uow.commit()


def launched(uow: UnitOfWork, row: Instance, account: str, result: Launched) -> None:
    """Attach the provider instance to ``row`` and record every change it brings."""
    seen = result.observation
    _attempted(row, account, None)
    row.provider_id = seen.provider_id
    row.launched_at = row.launched_at or utcnow()
    row.next_attempt_at = None
    row.last_error = ""
    if result.key_material:
        uow.instances.set_key_material(row, result.key_material)
    after, changes = observe(snapshot(row), seen)
    commit_changes(uow, row, account, after, changes)
    row.last_seen_at = utcnow()


def record_launch_error(
    store: Store, failures: dict[UUID, str], *, retry_at: datetime | None
) -> None:
    """Failed creates: retry at ``retry_at`` (retryable) or end in ``error`` with the reason."""
    if not failures:
        return
    with store.unit_of_work() as uow:
        names = uow.accounts.names()
        for row in uow.instances.get_many(list(failures)):
            if row.state != InstanceState.NEW or row.provider_id is not None:
                continue
            row.last_error = failures[row.uuid]
            if retry_at is not None:
                row.next_attempt_at = retry_at
                continue
            fail_launch(uow, row, names[row.account_id], failures[row.uuid])
        uow.commit()


def fail_over(store: Store, refusals: dict[UUID, str]) -> None:
    """The provider refused these launches for certain (nothing was created): each moves to
    its next failover account, where it is launched afresh, or, with none left, fails.
    Every attempt stays on the instance (``launch_history``), and ``instance.failed_over``
    says where it went and why."""
    if not refusals:
        return
    with store.unit_of_work() as uow:
        accounts = {account.name: account for account in uow.accounts.list()}
        names = {account.id: name for name, account in accounts.items()}
        for row in uow.instances.get_many(list(refusals)):
            if row.state != InstanceState.NEW or row.provider_id is not None:
                continue
            reason, here = refusals[row.uuid], names[row.account_id]
            if not row.failover:
                fail_launch(uow, row, here, reason)
                continue
            _attempted(row, here, reason)
            following, *rest = row.failover
            target = accounts.get(following)
            if target is None:  # deleted since the order was accepted
                fail_launch(uow, row, here, f"{reason}; failover account {following!r} is gone")
                continue
            row.account_id, row.account = target.id, target
            row.failover = rest
            row.launch_requested_at = None  # this account was never asked: no lookup needed
            row.launch_attempts = 0
            row.next_attempt_at = None
            row.last_error = reason
            target.next_reconcile_at = utcnow()
            record(
                uow,
                row,
                following,
                EventType.INSTANCE_FAILED_OVER,
                from_account=here,
                to_account=following,
                reason=reason,
            )
        uow.commit()


def _attempted(row: Instance, account: str, error: str | None) -> None:
    """Note one launch attempt on the instance: where, and why it failed (None: launched)."""
    attempt = {"account": account, "error": error, "at": utcnow().isoformat()}
    row.launch_history = [*row.launch_history, attempt]


def fail_launch(uow: UnitOfWork, row: Instance, account: str, reason: str) -> None:
    if row.launch_requested_at is not None or row.launch_history:
        _attempted(row, account, reason)
    previous = row.state
    row.state = InstanceState.ERROR
    row.state_reason = reason
    row.last_error = reason
    row.state_changed_at = utcnow()
    row.next_attempt_at = None
    row.operation = None
    record(
        uow, row, account, EventType.INSTANCE_LAUNCH_FAILED, previous_state=previous, reason=reason
    )
