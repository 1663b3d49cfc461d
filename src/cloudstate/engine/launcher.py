"""The launcher: turns ``new`` instances into cloud instances, exactly once.

Per batch and account: look up every instance a create may already have been sent for (by
its UUID tag), record what is found, wait out the visibility grace for what is not, commit
"create sent" for the rest, call ``create_many``, and record the outcomes. See
``service.launches`` for why this order of commits makes a crash at any point harmless.
"""

from __future__ import annotations

import itertools
import logging
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy import func, select

from cloudstate.config import Settings
from cloudstate.domain.states import InstanceState
from cloudstate.engine import failpoints
from cloudstate.engine.backoff import backoff
from cloudstate.engine.drivers import DriverPool
from cloudstate.engine.loop import TickResult
from cloudstate.engine.observations import observation
from cloudstate.exceptions import ProviderError
from cloudstate.providers.base import Driver, LaunchOutcome, LaunchSpec
from cloudstate.service import launches
from cloudstate.service.launches import Launched, LaunchJob
from cloudstate.store import Store
from cloudstate.store.tables import Instance, utcnow

log = logging.getLogger("cloudstate.engine")


class Launcher:
    name = "launcher"

    def __init__(self, store: Store, settings: Settings, pool: DriverPool) -> None:
        self.store = store
        self.settings = settings
        self.pool = pool
        self.grace = timedelta(seconds=settings.pending_grace_seconds)

    def interval(self) -> float:
        return 0.5

    def tick(self) -> TickResult:
        limit = self.settings.launch_batch_size
        lease = timedelta(seconds=self.settings.launch_lease_seconds)
        jobs = launches.claim_launches(self.store, limit=limit, now=utcnow(), lease=lease)
        if not jobs:
            return TickResult(busy=self._waiting())
        for account_id, group in itertools.groupby(jobs, key=lambda job: job.account_id):
            self._launch(account_id, list(group))
        return TickResult(worked=True, more=len(jobs) == limit)

    def _waiting(self) -> bool:
        """Instances still to launch later (backing off, or waiting for a lease or grace)."""
        with self.store.read() as session:
            count = session.scalar(
                select(func.count())
                .select_from(Instance)
                .where(Instance.state == InstanceState.NEW)
            )
        return bool(count)

    def _launch(self, account_id: int, jobs: list[LaunchJob]) -> None:
        try:
            driver = self.pool.for_account(account_id)
            jobs = self._settle_earlier_attempts(driver, jobs)
            if jobs:
                self._create(driver, jobs)
        except ProviderError as exc:
            self._whole_call_failed(jobs, exc)

    def _settle_earlier_attempts(self, driver: Driver, jobs: list[LaunchJob]) -> list[LaunchJob]:
        """Find instances an earlier (maybe crashed) attempt created; keep only the rest."""
        earlier = [job for job in jobs if job.may_exist()]
        if not earlier:
            return jobs
        found = self._look_up(driver, [job.uuid for job in earlier])
        launches.record_launched(
            self.store, [found[job.uuid] for job in earlier if job.uuid in found]
        )
        now = utcnow()
        too_soon = [
            job
            for job in earlier
            if job.uuid not in found and job.requested_at and job.requested_at + self.grace > now
        ]
        for job in too_soon:  # an eventually consistent cloud may not list it yet
            launches.reschedule(self.store, [job.uuid], _when(job.requested_at, self.grace))
        settled = set(found) | {job.uuid for job in too_soon}
        return [job for job in jobs if job.uuid not in settled]

    def _look_up(self, driver: Driver, uuids: list[UUID]) -> dict[UUID, Launched]:
        found: dict[UUID, Launched] = {}
        token: str | None = None
        while True:
            page = driver.list_page(token, uuids=uuids)
            for instance in page.instances:
                seen = observation(instance)
                if seen is not None and seen.uuid not in found:
                    found[seen.uuid] = Launched(seen)
            token = page.next_token
            if token is None:
                return found

    def _create(self, driver: Driver, jobs: list[LaunchJob]) -> None:
        jobs = launches.mark_requested(self.store, jobs, utcnow())
        if not jobs:
            return
        failpoints.hit("launch.before_create")
        outcomes = driver.create_many([_spec(job) for job in jobs])
        failpoints.hit("launch.after_create")
        self._record(jobs, outcomes)

    def _record(self, jobs: list[LaunchJob], outcomes: list[LaunchOutcome]) -> None:
        """Store what the provider answered per instance. A refusal (not retryable: the
        provider said no, and created nothing) moves the instance to its next failover
        account, or fails it; a retryable error is retried here, up to the limit."""
        attempts = {job.uuid: job.attempts + 1 for job in jobs}
        created: list[Launched] = []
        retry: dict[UUID, str] = {}
        refused: dict[UUID, str] = {}
        failed: dict[UUID, str] = {}
        for outcome in outcomes:
            seen = observation(outcome.instance) if outcome.instance else None
            if seen is not None and outcome.instance is not None:
                created.append(Launched(seen, outcome.instance.key_material))
            elif outcome.error is not None and not outcome.error.retryable:
                refused[outcome.uuid] = outcome.error.reason
            elif outcome.error is not None:
                can_retry = attempts[outcome.uuid] < self._limit
                (retry if can_retry else failed)[outcome.uuid] = outcome.error.reason
        launches.record_launched(self.store, created)
        launches.fail_over(self.store, refused)
        launches.record_launch_error(self.store, failed, retry_at=None)
        for uuid, reason in retry.items():
            delay = timedelta(seconds=backoff(attempts[uuid]))
            launches.record_launch_error(self.store, {uuid: reason}, retry_at=utcnow() + delay)

    @property
    def _limit(self) -> int:
        return self.settings.launch_retry_limit

    def _whole_call_failed(self, jobs: list[LaunchJob], error: ProviderError) -> None:
        """Nothing is known about which instances exist: retry (looking up first) or fail.

        A refusal (not retryable) created nothing by this call, so instances no earlier
        create was sent for fail over; the others may exist here already, and fail."""
        log.warning("launch of %d instance(s) failed: %s", len(jobs), error)
        reasons = {job.uuid: error.reason for job in jobs}
        attempts = max((job.attempts for job in jobs), default=0) + 1
        if error.retryable and attempts < self._limit:
            retry_at = utcnow() + timedelta(seconds=backoff(attempts))
            launches.record_launch_error(self.store, reasons, retry_at=retry_at)
        elif error.retryable:
            launches.record_launch_error(self.store, reasons, retry_at=None)
        else:
            fresh = {job.uuid for job in jobs if not job.may_exist()}
            launches.fail_over(self.store, {u: r for u, r in reasons.items() if u in fresh})
            stale = {u: r for u, r in reasons.items() if u not in fresh}
            launches.record_launch_error(self.store, stale, retry_at=None)


def _when(requested_at: datetime | None, grace: timedelta) -> datetime:
    return (requested_at or utcnow()) + grace


def _spec(job: LaunchJob) -> LaunchSpec:
    return LaunchSpec(
        uuid=job.uuid,
        name=job.name,
        image=job.image,
        hardware_profile=job.hardware_profile,
        memory=job.hardware.get("memory"),
        cpu=job.hardware.get("cpu"),
        storage=job.hardware.get("storage"),
        keyname=job.keyname,
        realm=job.realm,
        user_data=job.user_data,
        labels=job.labels,
    )
