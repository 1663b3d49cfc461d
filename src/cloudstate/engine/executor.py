"""The action executor: sends accepted actions to the provider and judges their outcome.

It owns every action from request to verdict, and judges only on the provider's evidence:
the provider accepting ``stop`` only means "stopping"; the operation completes once a listing
(recorded by the reconciler) shows ``stopped``, or fails once the instance ends elsewhere or
``action_timeout_seconds`` pass. An accepted destroy that no listing has shown finished is
looked up by the instance's tag; absent after the call was accepted means gone. A "no such
instance" answer to the call itself proves nothing while the instance may not be visible yet
(eventual consistency): the call is repeated until ``pending_grace_seconds`` after launch.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy import func, select

from cloudstate.config import Settings
from cloudstate.domain.states import UNSETTLED_OPERATIONS, Action, InstanceState
from cloudstate.engine.backoff import backoff
from cloudstate.engine.drivers import DriverPool
from cloudstate.engine.loop import TickResult
from cloudstate.exceptions import CloudStateError, ProviderError, ProviderNotFoundError
from cloudstate.providers.base import Driver
from cloudstate.service import actions
from cloudstate.service.actions import OperationJob
from cloudstate.store import Store
from cloudstate.store.tables import Instance, OperationRow, utcnow

log = logging.getLogger("cloudstate.engine")

BATCH = 50
LEASE = timedelta(seconds=60)
RETRY_LIMIT = 8
VISIBILITY_RETRY = timedelta(seconds=0.5)


def _gone_among(driver: Driver, uuids: list[UUID]) -> list[UUID]:
    """Which of ``uuids`` the provider no longer has: absent from a lookup by tag, or listed
    ``terminated``."""
    alive: set[UUID] = set()
    token: str | None = None
    while True:
        page = driver.list_page(token, uuids=uuids)
        alive.update(
            item.uuid
            for item in page.instances
            if item.uuid is not None and item.state is not InstanceState.TERMINATED
        )
        token = page.next_token
        if token is None:
            return [instance_uuid for instance_uuid in uuids if instance_uuid not in alive]


class Executor:
    name = "executor"

    def __init__(
        self, store: Store, settings: Settings, pool: DriverPool, *, worker_id: str
    ) -> None:
        self.store = store
        self.settings = settings
        self.pool = pool
        self.worker_id = worker_id

    def interval(self) -> float:
        return 0.25

    def tick(self) -> TickResult:
        now = utcnow()
        actions.release_expired_operations(self.store, now)
        timeout = timedelta(seconds=self.settings.action_timeout_seconds)
        expired = actions.expire_operations(self.store, now, timeout)
        expired += actions.settle_operations(self.store)
        expired += self._verify_destroys(now)
        jobs = actions.claim_operations(
            self.store, self.worker_id, limit=BATCH, now=now, lease=LEASE
        )
        for job in jobs:
            try:
                self._execute(job)
            except CloudStateError as exc:
                # One job's bookkeeping failing (a concurrent update, a deadlock) must not
                # strand the rest of the batch until their claims expire; this one's claim
                # expires and it is retried.
                log.warning(
                    "%s %s: %s; the rest of the batch goes on", job.action, job.instance_uuid, exc
                )
        if not jobs:
            return TickResult(worked=bool(expired), busy=self._open())
        return TickResult(worked=True, more=len(jobs) == BATCH)

    def _execute(self, job: OperationJob) -> None:
        if job.provider_id is None:
            self._not_launched(job)
            return
        error: ProviderError | None = None
        try:
            self.pool.for_account(job.account_id).act(job.provider_id, job.action)
        except ProviderNotFoundError as exc:
            if self._maybe_invisible(job):
                actions.postpone(self.store, job, utcnow() + VISIBILITY_RETRY)
                return
            error = exc
        except ProviderError as exc:
            error = exc
            log.warning("%s %s failed: %s", job.action, job.instance_uuid, exc)
        retry_at = None
        if error is not None and error.retryable and job.attempts < RETRY_LIMIT:
            retry_at = utcnow() + timedelta(seconds=backoff(job.attempts))
        actions.operation_called(self.store, job, error, retry_at=retry_at)

    def _maybe_invisible(self, job: OperationJob) -> bool:
        """Could "no such instance" be eventual consistency (launched within the grace)?"""
        grace = timedelta(seconds=self.settings.pending_grace_seconds)
        return job.launched_at is None or utcnow() - job.launched_at < grace

    def _verify_destroys(self, now: datetime) -> int:
        """Look up accepted destroys by tag, one listing call per account and batch: those
        absent, or listed ``terminated``, are gone."""
        checks = actions.destroys_to_verify(self.store, now)
        by_account: dict[int, list[UUID]] = {}
        for check in checks:
            by_account.setdefault(check.account_id, []).append(check.instance_uuid)
        done = 0
        for account_id, uuids in by_account.items():
            try:
                gone = _gone_among(self.pool.for_account(account_id), uuids)
            except ProviderError as exc:
                log.warning("looking up %d destroyed instance(s) failed: %s", len(uuids), exc)
                continue
            done += actions.destroy_confirmed(self.store, gone)
        return done

    def _not_launched(self, job: OperationJob) -> None:
        """The provider id is not known yet: wait for the launch to settle, or end here."""
        with self.store.read() as session:
            row = session.get_one(Instance, job.instance_uuid)
            state, launched = InstanceState(row.state), row.provider_id is not None
        if launched:  # recorded since the claim: claim it again, now with its provider id
            actions.postpone(self.store, job, utcnow())
        elif state is InstanceState.NEW:
            actions.postpone(self.store, job, utcnow() + timedelta(seconds=1))
        elif job.action is Action.DESTROY:  # the launch failed: nothing exists to destroy
            actions.destroyed_without_provider(self.store, job)
        else:
            actions.operation_called(
                self.store, job, ProviderError("the instance was never launched"), retry_at=None
            )

    def _open(self) -> bool:
        with self.store.read() as session:
            count = session.scalar(
                select(func.count())
                .select_from(OperationRow)
                .where(OperationRow.status.in_(UNSETTLED_OPERATIONS))
            )
        return bool(count)
