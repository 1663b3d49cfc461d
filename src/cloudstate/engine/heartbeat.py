"""The worker's heartbeat: its row in the worker registry, refreshed every few seconds with
what it holds (``GET /v1/workers``), and housekeeping of the registry and the lease log."""

from __future__ import annotations

import os
import socket
import time
from datetime import timedelta

from cloudstate.engine.loop import TickResult
from cloudstate.service import workers
from cloudstate.service.observations import prune_lease_log
from cloudstate.store import Store
from cloudstate.store.tables import utcnow
from cloudstate.version import __version__

LEASE_LOG_KEPT = timedelta(days=1)


class Heartbeat:
    name = "heartbeat"

    def __init__(self, store: Store, worker_id: str) -> None:
        self.store = store
        self.worker_id = worker_id
        self.started_at = utcnow()
        self._last = -float("inf")

    def interval(self) -> float:
        return workers.HEARTBEAT_SECONDS

    def tick(self) -> TickResult:
        # A burst ticks every task many times a second: beat at the heartbeat's own pace.
        if time.monotonic() - self._last < workers.HEARTBEAT_SECONDS:
            return TickResult()
        self._last = time.monotonic()
        workers.heartbeat(
            self.store,
            self.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            started_at=self.started_at,
        )
        now = utcnow()
        prune_lease_log(self.store, now - LEASE_LOG_KEPT)
        workers.forget_old(self.store, now)
        return TickResult()

    def stopped(self) -> None:
        workers.stopped(self.store, self.worker_id)
