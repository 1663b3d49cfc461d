"""The reconciler: per account, one paginated listing per cycle, diffed against the store.

Cost is O(accounts * pages) provider calls, never O(instances). Cadence adapts: the next cycle
comes after ``reconcile_fast_interval`` while anything of the account is changing or being
acted on, else after ``reconcile_slow_interval``. A failed listing backs off; repeated failures
make the account's instances ``unknown`` (never ``stopped`` or ``terminated``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from uuid import UUID

from cloudstate.config import Settings
from cloudstate.domain.observations import Observation
from cloudstate.domain.states import Action
from cloudstate.engine.backoff import backoff
from cloudstate.engine.drivers import DriverPool
from cloudstate.engine.loop import TickResult
from cloudstate.engine.observations import observations
from cloudstate.exceptions import LeaseLostError, ProviderAuthError, ProviderError
from cloudstate.providers.base import Driver
from cloudstate.service import observations as service
from cloudstate.store import Store
from cloudstate.store.tables import Account, utcnow

log = logging.getLogger("cloudstate.engine")


class Reconciler:
    name = "reconciler"

    def __init__(
        self, store: Store, settings: Settings, pool: DriverPool, *, worker_id: str
    ) -> None:
        self.store = store
        self.settings = settings
        self.pool = pool
        self.worker_id = worker_id
        self.lease = timedelta(seconds=settings.reconcile_lease_seconds)
        self.fast = timedelta(seconds=settings.reconcile_fast_interval)
        self.slow = timedelta(seconds=settings.reconcile_slow_interval)

    def interval(self) -> float:
        return min(0.25, self.settings.reconcile_fast_interval / 2)

    def tick(self) -> TickResult:
        claimed = service.claim_account(self.store, self.worker_id, now=utcnow(), lease=self.lease)
        if claimed is None:
            horizon = self.settings.reconcile_fast_interval * 2
            due = service.next_cycle_within(self.store, horizon)
            return TickResult(busy=due or service.anything_changing(self.store))
        account_id, name = claimed
        lease = service.Lease(account_id, self.worker_id, self.lease)
        try:
            self.cycle(lease, name)
        except LeaseLostError:
            log.warning("account %s: lease ran out mid-cycle; the cycle's rest is dropped", name)
        finally:
            service.release_account(self.store, account_id, self.worker_id)
        return TickResult(worked=True, more=True)

    def cycle(self, lease: service.Lease, name: str) -> None:
        """List every page, apply each, then judge what was not seen. Every write is fenced
        by ``lease``: once it has run out, ``LeaseLostError`` ends the cycle unwritten."""
        started = utcnow()
        seen: set[UUID] = set()
        try:
            self._check_expiry(lease.account_id)
            driver = self.pool.for_account(lease.account_id)
            self._pages(driver, lease, seen)
            self._realms(driver, lease)
        except ProviderError as exc:
            failures = self._failures(lease.account_id) + 1
            retry = timedelta(seconds=min(backoff(failures), self.slow.total_seconds()))
            log.warning(
                "account %s: listing failed (%s); retry in %.1fs", name, exc, retry.total_seconds()
            )
            service.account_failed(
                self.store,
                lease,
                exc,
                threshold=self.settings.unreachable_after_failures,
                retry_in=retry,
            )
            return
        grace = timedelta(seconds=self.settings.pending_grace_seconds)
        service.finish_cycle(
            self.store,
            lease,
            seen,
            started_at=started,
            grace=grace,
            fast=self.fast,
            slow=self.slow,
        )

    def _pages(self, driver: Driver, lease: service.Lease, seen: set[UUID]) -> None:
        token: str | None = None
        while True:
            observed_at = utcnow()
            page = driver.list_page(token)
            batch = observations(page.instances)
            result = service.apply_page(self.store, lease, batch, observed_at)
            if result.destroy:
                self._destroy_orphans(driver, lease, result.destroy)
            seen.update(item.uuid for item in batch)
            token = page.next_token
            if token is None:
                return

    def _destroy_orphans(
        self, driver: Driver, lease: service.Lease, found: Sequence[tuple[Observation, str]]
    ) -> None:
        """The ``destroy`` orphan policy: one destroy call per orphan, then each is recorded
        (so never destroyed twice). A refused destroy is recorded as ``destroy_failed``."""
        for seen, reason in found:
            try:
                driver.act(seen.provider_id, Action.DESTROY)
            except ProviderError as exc:
                log.warning("orphan %s: destroy failed (%s)", seen.provider_id, exc)
                service.record_orphans(self.store, lease, [(seen, reason)], "destroy_failed")
            else:
                service.record_orphans(self.store, lease, [(seen, reason)], "destroyed")

    def _realms(self, driver: Driver, lease: service.Lease) -> None:
        """Realm availability, checked about once per slow interval."""
        with self.store.read() as session:
            checked = session.get_one(Account, lease.account_id).realms_checked_at
        if checked is not None and utcnow() - checked < self.slow:
            return
        realms = [(realm.name, realm.available, realm.reason) for realm in driver.list_realms()]
        service.update_realms(self.store, lease, realms)

    def _check_expiry(self, account_id: int) -> None:
        """Credentials past their ``credentials_expire_at`` count as refused, without calling
        the provider with them (``account_failed`` then does what a refusal does)."""
        with self.store.read() as session:
            expires = session.get_one(Account, account_id).credentials_expire_at
        if expires is not None and expires <= utcnow():
            raise ProviderAuthError(f"credentials expired at {expires.isoformat()}", code="Expired")

    def _failures(self, account_id: int) -> int:
        with self.store.read() as session:
            return session.get_one(Account, account_id).consecutive_failures
