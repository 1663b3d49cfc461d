"""A per-account call budget that adapts to the provider (client-side token bucket).

An account may set ``rate_limit`` (calls per second) and ``rate_burst`` in its config; without
them cloudstate starts unlimited. Whenever the provider throttles, the budget drops to half the
rate actually used over the last second (never below ``FLOOR``), and every accepted call
raises it again by 2 % up to the configured limit (or, unconfigured, until it is unlimited
again): additive decrease would be too slow, and a fixed guess would be wrong for most clouds.
Callers block in ``acquire()`` until a token is free, so a throttled provider slows cloudstate
down instead of failing its work.

``CallBudget`` keeps that budget in one process; ``SharedCallBudget`` keeps it in the store,
so every worker on every host draws from the same bucket (what the engine's driver pool uses).
"""

from __future__ import annotations

import collections
import math
import threading
import time

from cloudstate.service import budgets
from cloudstate.store import Store
from cloudstate.store.tables import utcnow

FLOOR = 0.5  # calls per second
UNLIMITED_ABOVE = 1000.0
RECOVERY = 1.02


class CallBudget:
    def __init__(self, rate: float | None = None, burst: float | None = None) -> None:
        self.ceiling = rate
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate or 1.0)
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._recent: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Take one call's token, waiting as long as the current rate requires."""
        while True:
            with self._lock:
                now = time.monotonic()
                self._remember(now)
                if self.rate is None:
                    return
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.rate
            time.sleep(wait)

    def throttled(self) -> None:
        """The provider asked us to slow down: halve what we actually used."""
        with self._lock:
            used = max(len(self._recent), 1)
            current = self.rate if self.rate is not None else float(used)
            self.rate = max(FLOOR, min(current, used) / 2)
            self.burst = 1.0
            self._tokens = min(self._tokens, 0.0)

    def succeeded(self) -> None:
        with self._lock:
            if self.rate is None:
                return
            raised = self.rate * RECOVERY
            if self.ceiling is not None:
                self.rate = min(self.ceiling, raised)
            elif raised > UNLIMITED_ABOVE:
                self.rate = None
            else:
                self.rate = raised

    def _remember(self, now: float) -> None:
        self._recent.append(now)
        while self._recent and self._recent[0] < now - 1.0:
            self._recent.popleft()


class SharedCallBudget:
    """The account's call budget as every worker shares it (``service.budgets``).

    While the account is unlimited the store is consulted only about once a second (another
    worker may have been throttled meanwhile); while it is limited, each call takes its token
    from the shared row, waiting as long as the shared rate requires.
    """

    RECHECK_SECONDS = 1.0

    def __init__(
        self, store: Store, account_id: int, rate: float | None = None, burst: float | None = None
    ) -> None:
        self.store = store
        self.account_id = account_id
        self.ceiling = rate
        self.burst = burst
        self.rate: float | None = rate
        self._checked = -math.inf
        self._recent: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            now = time.monotonic()
            with self._lock:
                self._remember(now)
                if self.rate is None and now - self._checked < self.RECHECK_SECONDS:
                    return
            grant = budgets.take(
                self.store, self.account_id, ceiling=self.ceiling, burst=self.burst, now=utcnow()
            )
            with self._lock:
                self.rate, self._checked = grant.rate, time.monotonic()
            if not grant.wait:
                return
            time.sleep(min(grant.wait, self.RECHECK_SECONDS))

    def throttled(self) -> None:
        with self._lock:
            used = float(len(self._recent))
        rate = budgets.throttled(self.store, self.account_id, used=used, now=utcnow())
        with self._lock:
            self.rate, self._checked = rate, time.monotonic()

    def succeeded(self) -> None:
        """Recovery happens as tokens are granted (``service.budgets``): nothing to do."""

    def _remember(self, now: float) -> None:
        self._recent.append(now)
        while self._recent and self._recent[0] < now - 1.0:
            self._recent.popleft()
