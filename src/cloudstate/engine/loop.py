"""The one worker loop every kind of work runs in (launcher, reconciler, actions, deliverer).

A ``Task`` does one bounded step of work per ``tick()`` and says whether more is waiting. The
loop calls it on a drift-corrected schedule (the next tick is planned from the previous plan,
not from when the tick finished, so a steady 1 s cadence stays 1 s), runs again at once while
the task reports a backlog, wakes early when poked, and stops promptly and cleanly when the stop
event is set. ``run_burst`` drives the same tasks until none has anything left to do: tests and
one-shot commands use it instead of a copy of the loop.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Protocol

from cloudstate.exceptions import CloudStateError
from cloudstate.metrics import LOOP_LAG

log = logging.getLogger("cloudstate.engine")


@dataclass(frozen=True)
class TickResult:
    """What a tick did: ``worked`` (something happened) and ``more`` (a backlog remains).

    ``busy`` says the task is waiting on the outside world (an instance still booting, a
    delivery scheduled soon), so a burst must keep polling rather than declare itself idle.
    """

    worked: bool = False
    more: bool = False
    busy: bool = False


IDLE = TickResult()
FAILED = TickResult(busy=True)
"""A tick that raised: a burst must not mistake it for "nothing left to do"."""


class Task(Protocol):
    name: str

    def tick(self) -> TickResult: ...

    def interval(self) -> float:
        """Seconds until the next tick when there is no backlog."""
        ...


def run_task(task: Task, stop: threading.Event, wake: threading.Event | None = None) -> None:
    """Run ``task`` until ``stop`` is set. Errors are logged and the loop goes on."""
    wake = wake or threading.Event()
    planned = time.monotonic()
    while not stop.is_set():
        LOOP_LAG.labels(task.name).set(max(0.0, time.monotonic() - planned))
        result = _safe_tick(task)
        if result.more:
            planned = time.monotonic()
            continue
        planned += task.interval()
        now = time.monotonic()
        if planned < now:  # we fell behind: skip the missed ticks rather than bursting
            planned = now
        wake.wait(planned - now)
        if wake.is_set():
            wake.clear()
            planned = time.monotonic()


def _safe_tick(task: Task) -> TickResult:
    try:
        return task.tick()
    except CloudStateError as exc:
        log.warning("%s: %s", task.name, exc)
    except Exception:
        log.exception("%s: unexpected error; the loop continues", task.name)
    return FAILED


def run_burst(
    tasks: Sequence[Task],
    *,
    timeout: float = 60.0,
    poll: float = 0.05,
    stop: threading.Event | None = None,
) -> bool:
    """Tick every task until a whole round finds nothing to do and nothing pending.

    Returns True when idle was reached, False when ``timeout`` passed first.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (stop and stop.is_set()):
        results = [_safe_tick(task) for task in tasks]
        if not any(r.worked or r.more or r.busy for r in results):
            return True
        if not any(r.worked or r.more for r in results):
            time.sleep(poll)
    return False


class Runner:
    """Runs tasks in threads until stopped; ``wake()`` pokes them when new work arrives."""

    def __init__(self, tasks: Sequence[Task]) -> None:
        self.tasks = list(tasks)
        self.stop_event = threading.Event()
        self._wakes = {task.name: threading.Event() for task in self.tasks}
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for task in self.tasks:
            thread = threading.Thread(
                target=run_task,
                args=(task, self.stop_event, self._wakes[task.name]),
                name=f"cloudstate-{task.name}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def wake(self, *names: str) -> None:
        for name in names or tuple(self._wakes):
            self._wakes[name].set()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask every loop to finish its current tick, then wait for them."""
        self.stop_event.set()
        for wake in self._wakes.values():
            wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    def run_forever(self) -> None:
        """Start, then block until SIGTERM/SIGINT (or ``stop()``), then shut down gracefully."""
        with handle_signals(self.stop_event.set):
            self.start()
            while not self.stop_event.wait(0.5):
                pass
        self.stop()


@contextmanager
def handle_signals(on_signal: Callable[[], None]) -> Iterator[None]:
    """Route SIGTERM and SIGINT to ``on_signal`` while inside (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; finishing current work", signal.Signals(signum).name)
        on_signal()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
