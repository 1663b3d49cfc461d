"""Actions: accepted at request time against the state machine, executed later by a worker.

Request side: ``request_actions`` checks every addressed instance first and writes nothing
unless all may take the action (or, with ``strict=False``, reports per instance). An accepted
action is an ``operations`` row plus the instance's in-flight operation and an
``instance.action_requested`` event, in one transaction.

Worker side: ``claim_operations`` hands due operations to the executor; ``operation_called``
records what the provider said. Only the executor, which sent the call, judges the outcome
(``settle_operations``): done once the state the reconciler recorded is the target, or, for a
destroy, once a lookup after the call finds the instance gone (``destroys_to_verify``,
``destroy_confirmed``); failed on a permanent error, a timeout, or the instance ending
elsewhere. A reconcile cycle that does not list an instance with an action in flight leaves
it alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from sqlalchemy import select, update

from cloudstate.domain.events import EventType
from cloudstate.domain.observations import confirmed_gone, settle
from cloudstate.domain.states import (
    EFFECTS,
    UNSETTLED_OPERATIONS,
    Action,
    InstanceState,
    Operation,
    OperationStatus,
    allowed_actions,
    check_action,
)
from cloudstate.exceptions import (
    ActionNotAllowedError,
    ConcurrentUpdateError,
    ConflictError,
    NotFoundError,
    ProviderError,
    ProviderNotFoundError,
    ValidationError,
)
from cloudstate.service.recording import (
    apply,
    commit_changes,
    record,
    snapshot,
)
from cloudstate.store import Store
from cloudstate.store.claims import claimable
from cloudstate.store.tables import Account, Instance, OperationRow, utcnow
from cloudstate.store.uow import UnitOfWork


@dataclass(frozen=True)
class ActionResult:
    """Per-instance outcome of a (bulk) action request."""

    uuid: UUID
    accepted: bool
    operation_id: UUID | None = None
    error: str = ""
    allowed: tuple[str, ...] = ()


def parse_action(value: str | Action) -> Action:
    try:
        return Action(value)
    except ValueError:
        allowed = ", ".join(a.value for a in Action)
        raise ValidationError(
            f"unknown action {value!r}; one of {allowed}", field="action"
        ) from None


ATTEMPTS = 3  # a worker updating one of the instances meanwhile: read them again, retry


def request_actions(
    store: Store, uuids: Sequence[UUID], action: str | Action, *, strict: bool = True
) -> list[ActionResult]:
    """Accept ``action`` for each instance.

    ``strict`` (the default): all or nothing; an unknown uuid or a forbidden action raises and
    nothing is written. Otherwise each instance gets its own result (bulk API). When a worker
    changes one of the instances while the request is being written, the request is judged
    again on the fresh rows (``ConcurrentUpdateError`` only if that keeps happening).
    """
    chosen = parse_action(action)
    if not uuids:
        raise ValidationError("at least one instance is required", field="uuids")
    if len(set(uuids)) != len(uuids):
        raise ValidationError("an instance is listed more than once", field="uuids")
    for _ in range(ATTEMPTS - 1):
        with contextlib.suppress(ConcurrentUpdateError):
            return _request(store, uuids, chosen, strict)
    return _request(store, uuids, chosen, strict)


def _request(
    store: Store, uuids: Sequence[UUID], chosen: Action, strict: bool
) -> list[ActionResult]:
    """Judge and write one request. The rows are read in one query and changed in uuid
    order, and the accounts to reconcile soon are updated last: every writer locks instances
    in uuid order and the account row after them, so a bulk request and a reconcile page
    never wait on each other in a cycle."""
    with store.unit_of_work() as uow:
        # Locked: a reconcile page changing one of them meanwhile would make the whole
        # request stale, and a busy fleet would keep it so.
        rows = uow.instances.locked(uuids)
        if strict and len(rows) < len(uuids):
            found = {row.uuid for row in rows}
            raise NotFoundError("instance", ", ".join(str(u) for u in uuids if u not in found))
        refusals = _refusals(rows, chosen)
        if strict and len(refusals) == 1:
            raise next(iter(refusals.values()))
        if strict and refusals:
            lines = "; ".join(str(error) for error in refusals.values())
            raise ConflictError(f"cannot {chosen} {len(refusals)} instance(s): {lines}")
        accepted = [row for row in rows if row.uuid not in refusals]
        if chosen is Action.DESTROY:
            _cancel_open(uow, [row.uuid for row in accepted], reason="superseded by destroy")
        names = uow.accounts.names()
        done = {row.uuid: _accept(uow, row, chosen, names[row.account_id]) for row in accepted}
        _reconcile_soon(uow, {row.account_id for row in accepted})
        results = [_result(done, refusals, u) for u in uuids]
        uow.commit()
    return results


def _result(
    done: dict[UUID, ActionResult],
    refusals: dict[UUID, ActionNotAllowedError],
    instance_uuid: UUID,
) -> ActionResult:
    if instance_uuid in refusals:
        return _refused(instance_uuid, refusals[instance_uuid])
    if instance_uuid in done:
        return done[instance_uuid]
    return ActionResult(instance_uuid, False, error=f"instance {instance_uuid} not found")


def _reconcile_soon(uow: UnitOfWork, accounts: set[int]) -> None:
    """Acted on: those accounts are reconciled at once (on the fast cadence from then on).
    Pending instance changes are flushed first, so the account rows are locked last."""
    if not accounts:
        return
    now = utcnow()
    uow.session.execute(
        update(Account)
        .where(Account.id.in_(sorted(accounts)), Account.next_reconcile_at > now)
        .values(next_reconcile_at=now)
        .execution_options(synchronize_session=False)
    )


def _refusals(rows: Sequence[Instance], action: Action) -> dict[UUID, ActionNotAllowedError]:
    refused = {}
    for row in rows:
        operation = Operation(row.operation) if row.operation else None
        try:
            check_action(action, InstanceState(row.state), operation, str(row.uuid))
        except ActionNotAllowedError as exc:
            refused[row.uuid] = exc
    return refused


def _refused(instance_uuid: UUID, error: ActionNotAllowedError) -> ActionResult:
    return ActionResult(instance_uuid, False, error=str(error), allowed=error.allowed)


def _accept(uow: UnitOfWork, row: Instance, action: Action, account: str) -> ActionResult:
    """Accept an action ``check_action`` allowed (the caller cancels a destroy's queued
    predecessors and schedules the reconcile)."""
    if action is Action.DESTROY and row.provider_id is None and row.launch_requested_at is None:
        return _destroy_unlaunched(uow, row, account)
    effect = EFFECTS[action]
    operation = OperationRow(id=uuid4(), instance_uuid=row.uuid, action=action)
    uow.session.add(operation)
    row.operation = effect.operation
    record(
        uow,
        row,
        account,
        EventType.INSTANCE_ACTION_REQUESTED,
        action=str(action),
        operation_id=str(operation.id),
    )
    return ActionResult(row.uuid, True, operation.id)


def request_destroy(uow: UnitOfWork, row: Instance) -> bool:
    """Destroy ``row`` on the engine's own behalf (a rollback, a cancel, a launch timeout):
    accepted as a caller's destroy would be, unless it is terminated or already being
    destroyed (then False)."""
    operation = Operation(row.operation) if row.operation else None
    if Action.DESTROY not in allowed_actions(InstanceState(row.state), operation):
        return False
    _cancel_open(uow, [row.uuid], reason="superseded by destroy")
    _accept(uow, row, Action.DESTROY, uow.session.get_one(Account, row.account_id).name)
    # Once per account and unit of work, at commit: the account row is locked last.
    account = row.account_id
    uow.before_commit(("reconcile soon", account), lambda: _reconcile_soon(uow, {account}))
    return True


def destroyed_before_create(uow: UnitOfWork, row: Instance, account: str) -> None:
    """A destroy waits on an instance whose create may have been sent, and the launcher's
    lookup (after the visibility grace) found nothing: no instance exists, and none will be
    created, so it ends here with its destroy done."""
    uow.session.execute(
        update(OperationRow)
        .where(
            OperationRow.instance_uuid == row.uuid, OperationRow.status.in_(UNSETTLED_OPERATIONS)
        )
        .values(status=OperationStatus.SUCCEEDED, finished_at=utcnow())
    )
    _destroy_unlaunched(uow, row, account)
    row.operation = None


def _destroy_unlaunched(uow: UnitOfWork, row: Instance, account: str) -> ActionResult:
    """Nothing was ever sent to the provider: the instance simply ends here."""
    before = snapshot(row)
    after, _changes = confirmed_gone(before)
    apply(row, after)
    row.next_attempt_at = None
    record(
        uow,
        row,
        account,
        EventType.INSTANCE_STATE_CHANGED,
        previous_state=str(before.state),
        reason="destroyed before launch",
        expected=True,
    )
    return ActionResult(row.uuid, True, None)


def _cancel_open(uow: UnitOfWork, uuids: Sequence[UUID], reason: str) -> None:
    """Cancel the queued (not yet sent) operations of these instances."""
    if not uuids:
        return
    uow.session.execute(
        update(OperationRow)
        .where(OperationRow.instance_uuid.in_(uuids), OperationRow.status == OperationStatus.QUEUED)
        .values(status=OperationStatus.CANCELLED, error=reason, finished_at=utcnow())
    )


# --- worker side ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OperationJob:
    id: UUID
    instance_uuid: UUID
    account_id: int
    action: Action
    provider_id: str | None
    attempts: int
    launched_at: datetime | None = None


def claim_operations(
    store: Store, worker: str, *, limit: int, now: datetime, lease: timedelta
) -> list[OperationJob]:
    """Take due queued operations (SKIP LOCKED on PostgreSQL) and mark them ``calling``."""
    with store.unit_of_work() as uow:
        statement = (
            select(OperationRow, Instance)
            .join(Instance, Instance.uuid == OperationRow.instance_uuid)
            .where(
                OperationRow.status == OperationStatus.QUEUED, OperationRow.next_attempt_at <= now
            )
            .order_by(OperationRow.requested_at)
            .limit(limit)
        )
        jobs = []
        claimed = claimable(uow.session, statement, of=OperationRow)
        for operation, instance in uow.session.execute(claimed):
            operation.status = OperationStatus.CALLING
            operation.claimed_by = worker
            operation.claimed_until = now + lease
            operation.started_at = operation.started_at or now
            operation.attempts += 1
            jobs.append(
                OperationJob(
                    operation.id,
                    instance.uuid,
                    instance.account_id,
                    Action(operation.action),
                    instance.provider_id,
                    operation.attempts,
                    instance.launched_at,
                )
            )
        uow.commit()
    return jobs


def release_expired_operations(store: Store, now: datetime) -> int:
    """Claims of crashed workers go back to the queue (the call may be repeated: actions are
    idempotent at the provider, and destroy of a gone instance counts as done)."""
    with store.unit_of_work() as uow:
        result = uow.session.execute(
            update(OperationRow)
            .where(OperationRow.status == OperationStatus.CALLING, OperationRow.claimed_until < now)
            .values(status=OperationStatus.QUEUED, claimed_by=None, claimed_until=None)
        )
        uow.commit()
    return int(getattr(result, "rowcount", 0) or 0)


def postpone(store: Store, job: OperationJob, until: datetime) -> None:
    """Not callable yet (the instance's launch is still being settled): try again later."""
    with store.unit_of_work() as uow:
        operation = uow.session.get_one(OperationRow, job.id)
        if operation.status == OperationStatus.CALLING:
            operation.status = OperationStatus.QUEUED
            operation.attempts -= 1
            operation.next_attempt_at = until
        uow.commit()


def operation_called(
    store: Store,
    job: OperationJob,
    error: ProviderError | None,
    *,
    retry_at: datetime | None,
) -> None:
    """Record the provider's answer: accepted (now waiting for the target state), retry, or fail."""
    with store.unit_of_work() as uow:
        # The instance first, locked (a reconcile page changing it meanwhile would make this
        # stale, and the job would wait out its claim); then its operation, read after the
        # lock, so a completion or cancel committed meanwhile is seen.
        locked = uow.instances.locked([job.instance_uuid])
        if not locked:
            raise NotFoundError("instance", job.instance_uuid)
        row = locked[0]
        operation = uow.session.get_one(OperationRow, job.id)
        account = uow.session.get_one(Account, row.account_id).name
        if operation.status != OperationStatus.CALLING:
            return  # cancelled or taken over meanwhile
        if error is None:
            _called_ok(uow, operation, row, account, job.action)
        elif isinstance(error, ProviderNotFoundError) and job.action is Action.DESTROY:
            operation.status = OperationStatus.SUCCEEDED
            operation.finished_at = utcnow()
            _gone(uow, row, account)
        elif error.retryable and retry_at is not None:
            operation.status = OperationStatus.QUEUED
            operation.next_attempt_at = retry_at
            operation.error = str(error)
        else:
            fail_operation(uow, operation, row, account, str(error))
        uow.commit()


LOOKUP_EVERY = timedelta(seconds=2)  # an accepted destroy is looked up at most this often


def _called_ok(
    uow: UnitOfWork, operation: OperationRow, row: Instance, account: str, action: Action
) -> None:
    operation.status = OperationStatus.WAITING
    operation.error = ""
    operation.next_attempt_at = utcnow() + LOOKUP_EVERY  # the first lookup, if no listing
    effect = EFFECTS[action]
    before = InstanceState(row.state)
    if before in (InstanceState.TERMINATED, effect.target) and action is not Action.REBOOT:
        return  # already there; the next observation completes it
    row.state = effect.transitional
    row.state_changed_at = utcnow()
    record(
        uow,
        row,
        account,
        EventType.INSTANCE_STATE_CHANGED,
        previous_state=str(before),
        reason=f"{action} accepted by the provider",
        expected=True,
    )


def _gone(uow: UnitOfWork, row: Instance, account: str) -> None:
    """The provider holds the instance gone after our destroy was sent: terminated, and the
    destroy done."""
    after, changes = confirmed_gone(snapshot(row))
    after, verdict = settle(after)
    commit_changes(uow, row, account, after, [*changes, *verdict])


_SETTLING = (
    InstanceState.RUNNING,
    InstanceState.STOPPED,
    InstanceState.TERMINATED,
    InstanceState.ERROR,
)  # every action's target, and the states in which none can succeed any more
SETTLE_BATCH = 500


def settle_operations(store: Store) -> int:
    """Judge accepted operations (``waiting``) whose instance's recorded state settles them:
    ``instance.action_completed`` at the target, ``instance.action_failed`` when the instance
    ended elsewhere. Returns how many were settled."""
    with store.unit_of_work() as uow:
        uuids = list(
            uow.session.scalars(
                select(Instance.uuid)
                .join(OperationRow, OperationRow.instance_uuid == Instance.uuid)
                .where(
                    OperationRow.status == OperationStatus.WAITING, Instance.state.in_(_SETTLING)
                )
                .order_by(Instance.uuid)
                .limit(SETTLE_BATCH)
            )
        )
        if not uuids:
            return 0
        names = uow.accounts.names()
        settled = 0
        for row in uow.instances.locked(uuids):
            after, verdict = settle(snapshot(row))
            if verdict:
                commit_changes(uow, row, names[row.account_id], after, verdict)
                settled += 1
        uow.commit()
    return settled


@dataclass(frozen=True)
class DestroyCheck:
    """An accepted destroy whose result no listing has shown yet: the executor looks it up."""

    instance_uuid: UUID
    account_id: int


def destroys_to_verify(
    store: Store, now: datetime, *, every: timedelta = LOOKUP_EVERY, limit: int = 200
) -> list[DestroyCheck]:
    """Accepted destroys due for a lookup; each is next due ``every`` later (so a slow
    provider is asked about each instance at most that often)."""
    with store.unit_of_work() as uow:
        rows = uow.session.execute(
            select(OperationRow, Instance.account_id)
            .join(Instance, Instance.uuid == OperationRow.instance_uuid)
            .where(
                OperationRow.status == OperationStatus.WAITING,
                OperationRow.action == Action.DESTROY,
                OperationRow.next_attempt_at <= now,
                Instance.state != InstanceState.TERMINATED,
            )
            .order_by(OperationRow.next_attempt_at)
            .limit(limit)
        ).all()
        for operation, _account in rows:
            operation.next_attempt_at = now + every
        checks = [DestroyCheck(op.instance_uuid, account) for op, account in rows]
        uow.commit()
    return checks


def destroy_confirmed(store: Store, uuids: Sequence[UUID]) -> int:
    """A lookup after the destroy was accepted found these instances gone (absent, or listed
    ``terminated``): each ends ``terminated`` with its destroy done."""
    if not uuids:
        return 0
    with store.unit_of_work() as uow:
        names = uow.accounts.names()
        done = 0
        for row in uow.instances.locked(sorted(uuids)):
            if row.operation == Operation.DESTROYING and row.state != InstanceState.TERMINATED:
                _gone(uow, row, names[row.account_id])
                done += 1
        uow.commit()
    return done


def fail_operation(
    uow: UnitOfWork, operation: OperationRow, row: Instance, account: str, error: str
) -> None:
    """The operation is over without reaching its target: say so, and free the instance."""
    operation.status = OperationStatus.FAILED
    operation.error = error
    operation.finished_at = utcnow()
    row.operation = None
    row.last_error = error
    record(
        uow,
        row,
        account,
        EventType.INSTANCE_ACTION_FAILED,
        action=operation.action,
        operation_id=str(operation.id),
        error=error,
    )


def expire_operations(store: Store, now: datetime, timeout: timedelta) -> int:
    """Operations that have waited longer than ``timeout`` for their target state fail."""
    with store.unit_of_work() as uow:
        statement = select(OperationRow).where(
            OperationRow.status == OperationStatus.WAITING, OperationRow.started_at < now - timeout
        )
        expired = list(uow.session.scalars(statement))
        for operation in expired:
            row = uow.instances.get(operation.instance_uuid)
            account = uow.session.get_one(Account, row.account_id).name
            fail_operation(uow, operation, row, account, f"{operation.action} timed out")
        uow.commit()
    return len(expired)


def destroyed_without_provider(store: Store, job: OperationJob) -> None:
    """Destroying an instance whose launch failed: no cloud instance exists, so it ends now."""
    with store.unit_of_work() as uow:
        operation = uow.session.get_one(OperationRow, job.id)
        row = uow.instances.get(job.instance_uuid)
        if row.provider_id is not None:  # launched after all, just now: destroy it for real
            operation.status, operation.next_attempt_at = OperationStatus.QUEUED, utcnow()
            uow.commit()
            return
        account = uow.session.get_one(Account, row.account_id).name
        operation.status = OperationStatus.SUCCEEDED
        operation.finished_at = utcnow()
        _gone(uow, row, account)
        row.operation = None
        uow.commit()
