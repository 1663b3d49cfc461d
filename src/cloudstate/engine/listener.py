"""Wake idle workers the moment another process commits work (PostgreSQL LISTEN/NOTIFY).

Every commit that records events (a new order, an accepted action, an observed change, and so
deliveries to send) also NOTIFYs ``cloudstate_work`` (``store.uow``). Each worker process
LISTENs on its own connection and pokes its task threads, so work queued by the API on another
host starts at once instead of at the next poll. Notifications only save latency: a lost one
(a dropped connection) costs at most one polling interval, and the listener reconnects.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

from cloudstate.store.uow import WORK_CHANNEL

log = logging.getLogger("cloudstate.engine")

RECONNECT_SECONDS = 1.0


class WorkListener:
    def __init__(self, url: str, on_work: Callable[[], None]) -> None:
        self.url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self.on_work = on_work
        self.notified = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="cloudstate-listener", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * RECONNECT_SECONDS + 1)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as connection:
                    connection.execute(f"LISTEN {WORK_CHANNEL}")
                    self._listen(connection)
            except psycopg.Error as exc:
                log.warning("work listener: %s; reconnecting", exc)
                self._stop.wait(RECONNECT_SECONDS)

    def _listen(self, connection: psycopg.Connection[tuple[object, ...]]) -> None:
        while not self._stop.is_set():  # checked at least every second
            for _ in connection.notifies(timeout=1.0):
                self.notified += 1
                self.on_work()  # cheap (sets the task threads' wake events): never skipped
