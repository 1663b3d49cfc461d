"""The workers: launcher, reconciler, action executor and deliverer, in one worker loop."""

from __future__ import annotations

import logging
import os
import secrets
import socket

from cloudstate.config import Settings
from cloudstate.engine.callables import CallableRegistry
from cloudstate.engine.deliverer import Deliverer
from cloudstate.engine.drivers import DriverPool
from cloudstate.engine.eventlog import EventLog
from cloudstate.engine.executor import Executor
from cloudstate.engine.heartbeat import Heartbeat
from cloudstate.engine.launcher import Launcher
from cloudstate.engine.listener import WorkListener
from cloudstate.engine.loop import Runner, Task, run_burst
from cloudstate.engine.reconciler import Reconciler
from cloudstate.engine.sequencer import Sequencer
from cloudstate.engine.supervisor import OrderSupervisor
from cloudstate.engine.sweeper import Sweeper
from cloudstate.exceptions import CloudStateError, ConflictError
from cloudstate.store import Store
from cloudstate.store.eventlog import ChangeLog
from cloudstate.webhooks.sender import Sender

log = logging.getLogger("cloudstate.engine")


def new_worker_id() -> str:
    """Unique per process: host, pid and a random suffix (pids are reused across restarts)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Engine:
    """Every kind of work for one process, sharing one driver pool."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        worker_id: str | None = None,
        callables: CallableRegistry | None = None,
        sender: Sender | None = None,
        log_events: bool = False,
    ) -> None:
        self.store = store
        self.settings = settings
        self.worker_id = worker_id or new_worker_id()
        self.pool = DriverPool(store, settings.home)
        self.callables = callables or CallableRegistry()
        self.deliverer = Deliverer(
            store, settings, worker_id=self.worker_id, callables=self.callables, sender=sender
        )
        self.heartbeat = Heartbeat(store, self.worker_id)
        self.tasks: list[Task] = [
            Launcher(store, settings, self.pool),
            Reconciler(store, settings, self.pool, worker_id=self.worker_id),
            Executor(store, settings, self.pool, worker_id=self.worker_id),
            self.deliverer,
            OrderSupervisor(store),
            Sweeper(store, settings),
            self.heartbeat,
            Sequencer(store),
        ]
        if log_events:
            self.tasks.append(EventLog(store, after=self._last_seq()))
        self._runner: Runner | None = None
        self.listener: WorkListener | None = None

    def _last_seq(self) -> int:
        with self.store.read() as session:
            return ChangeLog(session, sqlite=self.store.database.is_sqlite).last_seq()

    @property
    def running(self) -> bool:
        return self._runner is not None

    def burst(self, timeout: float = 60.0) -> bool:
        """Work until nothing is left (True) or ``timeout`` passes (False), in this thread.

        Not while the background threads run the same tasks (``start()``): two threads would
        drive one task at once.
        """
        if self._runner is not None:
            raise ConflictError(
                "the workers already run in the background; burst() would race them"
            )
        return run_burst(self.tasks, timeout=timeout)

    def start(self) -> None:
        """Run every task in a background thread."""
        if self._runner is None:
            self._runner = Runner(self.tasks)
            self._runner.start()
            self._listen()

    def wake(self) -> None:
        if self._runner is not None:
            self._runner.wake()

    def run_forever(self) -> None:
        """Run in the foreground until SIGTERM/SIGINT; finish current work, then return."""
        self._runner = Runner(self.tasks)
        self._listen()
        try:
            self._runner.run_forever()
        finally:
            self._runner = None
            self._unlisten()

    def stop(self) -> None:
        self._unlisten()
        if self._runner is not None:
            self._runner.stop()
            self._runner = None

    def _listen(self) -> None:
        """On PostgreSQL, wake at once when another process commits work."""
        if self.listener is None and not self.store.database.is_sqlite:
            self.listener = WorkListener(self.store.database.url, self.wake)
            self.listener.start()

    def _unlisten(self) -> None:
        if self.listener is not None:
            self.listener.stop()
            self.listener = None

    def close(self) -> None:
        self.stop()
        self.deliverer.close()
        self.pool.close()
        try:
            self.heartbeat.stopped()
        except CloudStateError as exc:  # the store is gone: the row simply goes silent
            log.warning("could not mark worker %s stopped: %s", self.worker_id, exc)
