"""One driver per account, built on demand from the account's stored settings.

The pool is also the service's ``Catalogue``: hardware profiles are fetched once per account
and cached for a while, so validating an order does not call the provider every time.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from uuid import UUID

from cloudstate.domain.hardware import HardwareProfile
from cloudstate.domain.observations import ORPHANS_OPTION, orphan_policy
from cloudstate.domain.states import Action
from cloudstate.engine.ratelimit import CallBudget, SharedCallBudget
from cloudstate.exceptions import (
    NotFoundError,
    ProviderAuthError,
    ProviderError,
    ProviderThrottledError,
    ValidationError,
)
from cloudstate.metrics import PROVIDER_CALLS, PROVIDER_ERRORS
from cloudstate.providers.base import (
    Driver,
    DriverContext,
    Image,
    LaunchOutcome,
    LaunchSpec,
    Page,
    Realm,
)
from cloudstate.providers.registry import create_driver
from cloudstate.service import observations
from cloudstate.store import Store
from cloudstate.store.repositories import AccountRepository
from cloudstate.store.tables import Account

log = logging.getLogger("cloudstate.engine")

CATALOGUE_TTL = 300.0
T = TypeVar("T")


@dataclass
class _Entry:
    driver: Driver
    version: tuple[object, ...]  # the account settings it was built from (see _built_from)


class DriverPool:
    """Thread-safe cache of drivers keyed by account id."""

    def __init__(self, store: Store, home: Path) -> None:
        self._store = store
        self._home = home
        self._lock = threading.Lock()
        self._drivers: dict[int, _Entry] = {}
        self._profiles: dict[str, tuple[float, list[HardwareProfile]]] = {}

    def for_account(self, account_id: int) -> Driver:
        with self._store.read() as session:
            account = session.get(Account, account_id)
            if account is None:
                raise NotFoundError("account", account_id)
            return self._driver(account, AccountRepository(session, self._store.secrets))

    def by_name(self, name: str) -> tuple[int, Driver]:
        with self._store.read() as session:
            accounts = AccountRepository(session, self._store.secrets)
            account = accounts.get(name)
            return account.id, self._driver(account, accounts)

    def _driver(self, account: Account, accounts: AccountRepository) -> Driver:
        with self._lock:
            entry = self._drivers.get(account.id)
            if entry is not None and entry.version == _built_from(account):
                return entry.driver
            if entry is not None:
                entry.driver.close()
            context = DriverContext(home=self._home, account=account.name)
            credentials = accounts.credentials(account)
            options, (rate, burst) = _budget(account.config)
            budget = SharedCallBudget(self._store, account.id, rate, burst)
            driver = MeteredDriver(
                create_driver(account.provider, options, credentials, context), account.name, budget
            )
            self._drivers[account.id] = _Entry(driver, _built_from(account))
            return driver

    def validate(
        self,
        provider: str,
        config: Mapping[str, Any],
        credentials: Mapping[str, str],
        name: str,
        *,
        probe: bool = False,
    ) -> None:
        """Build (and close) a driver once, so bad provider settings fail at creation time;
        with ``probe``, also make one cheap authenticated call, so refused credentials do too
        (``ProviderAuthError``)."""
        context = DriverContext(home=self._home, account=name)
        options, _ = _budget(config)
        driver = create_driver(provider, options, credentials, context)
        try:
            if probe:
                driver.list_realms()
        finally:
            driver.close()

    def verify(self, name: str) -> None:
        """Check a stored account's credentials with one cheap authenticated call.

        Refused (``ProviderAuthError``, re-raised): the account's status becomes
        ``credentials`` exactly as a refused listing makes it. Accepted: a ``credentials``
        status is cleared. Other provider errors say nothing about the credentials and
        change nothing.
        """
        account_id, driver = self.by_name(name)
        try:
            driver.list_realms()
        except ProviderAuthError as exc:
            observations.credentials_refused(self._store, account_id, exc.reason)
            raise
        observations.credentials_accepted(self._store, account_id)

    def hardware_profiles(self, account: str) -> Sequence[HardwareProfile] | None:
        """The account's profiles (cached), or None when the provider cannot say right now."""
        cached = self._profiles.get(account)
        if cached is not None and time.monotonic() - cached[0] < CATALOGUE_TTL:
            return cached[1]
        try:
            _, driver = self.by_name(account)
            profiles = driver.list_hardware_profiles()
        except NotFoundError:
            return None
        except ProviderError as exc:
            log.warning("account %s: hardware profiles unavailable (%s)", account, exc)
            return None
        self._profiles[account] = (time.monotonic(), profiles)
        return profiles

    def forget(self, account_id: int) -> None:
        with self._lock:
            entry = self._drivers.pop(account_id, None)
        if entry is not None:
            entry.driver.close()

    def close(self) -> None:
        with self._lock:
            entries, self._drivers = list(self._drivers.values()), {}
        for entry in entries:
            entry.driver.close()


def _built_from(account: Account) -> tuple[object, ...]:
    """What a driver depends on. Not ``updated_at``: the engine's own bookkeeping (leases,
    cadence) updates the account row every cycle, and that must not rebuild the driver."""
    config = json.dumps(account.config, sort_keys=True, default=str)
    return (account.name, account.provider, config, account.credentials)


RATE_OPTIONS = ("rate_limit", "rate_burst")
ENGINE_OPTIONS = (*RATE_OPTIONS, ORPHANS_OPTION)


def _budget(
    config: Mapping[str, Any],
) -> tuple[dict[str, Any], tuple[float | None, float | None]]:
    """Split the engine's own account options (the call budget, the orphan policy) from the
    driver's, checking them on the way."""
    options = {k: v for k, v in config.items() if k not in ENGINE_OPTIONS}
    rate, burst = config.get("rate_limit"), config.get("rate_burst")
    for name, value in (("rate_limit", rate), ("rate_burst", burst)):
        if value is not None and (not isinstance(value, int | float) or value <= 0):
            raise ValidationError(f"must be a positive number, not {value!r}", field=name)
    orphan_policy(config)
    return options, (rate, burst)


class Budget(Protocol):
    """What ``MeteredDriver`` needs of a call budget (``CallBudget``, ``SharedCallBudget``)."""

    rate: float | None

    def acquire(self) -> None: ...

    def throttled(self) -> None: ...

    def succeeded(self) -> None: ...


class MeteredDriver:
    """A driver that keeps to the account's call budget and counts calls and errors per
    account (the ``/metrics`` figures)."""

    def __init__(self, inner: Driver, account: str, budget: Budget | None = None) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.account = account
        self.budget = budget or CallBudget()

    def _call(self, call: str, run: Callable[[], T]) -> T:
        self.budget.acquire()
        PROVIDER_CALLS.labels(self.account, call).inc()
        try:
            result = run()
        except ProviderThrottledError as exc:
            self.budget.throttled()
            PROVIDER_ERRORS.labels(self.account, call, type(exc).__name__).inc()
            raise
        except ProviderError as exc:
            PROVIDER_ERRORS.labels(self.account, call, type(exc).__name__).inc()
            raise
        self.budget.succeeded()
        return result

    def create_many(self, specs: Sequence[LaunchSpec]) -> list[LaunchOutcome]:
        outcomes = self._call("create_many", lambda: self.inner.create_many(specs))
        if any(isinstance(outcome.error, ProviderThrottledError) for outcome in outcomes):
            self.budget.throttled()  # throttled mid-batch: the call "succeeded", the rest did not
        return outcomes

    def list_page(self, token: str | None = None, *, uuids: Sequence[UUID] | None = None) -> Page:
        return self._call("list_page", lambda: self.inner.list_page(token, uuids=uuids))

    def act(self, provider_id: str, action: Action) -> None:
        self._call("act", lambda: self.inner.act(provider_id, action))

    def list_realms(self) -> list[Realm]:
        return self._call("list_realms", self.inner.list_realms)

    def list_images(self) -> list[Image]:
        return self._call("list_images", self.inner.list_images)

    def list_hardware_profiles(self) -> list[HardwareProfile]:
        return self._call("list_hardware_profiles", self.inner.list_hardware_profiles)

    def close(self) -> None:
        self.inner.close()
