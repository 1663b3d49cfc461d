"""Python callables that embedded subscriptions deliver to (``kind == "callable"``).

A subscription stores only a name (its ``target``); the function lives in this process's
registry. A worker claims a callable delivery only when the name is registered here, so a
subscription whose function belongs to another process, or is registered again after a
restart, simply waits: it is neither attempted nor counted as a failure meanwhile.

A callable receives one ``EventRecord`` per call, in per-instance order. Its return value is
ignored; raising makes the attempt a failure (retried on the schedule, the exception text kept
as the delivery's ``last_error``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from cloudstate.domain.events import EventRecord
from cloudstate.exceptions import AlreadyExistsError, ValidationError

Callback = Callable[[EventRecord], object]
MAX_NAME = 255


class CallableRegistry:
    """A thread-safe mapping of names to callbacks, shared by the embedded API and workers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: dict[str, Callback] = {}

    def register(self, name: str, callback: Callback, *, replace: bool = False) -> None:
        """Make ``callback`` the target of subscriptions named ``name``.

        Registering the same function again is a no-op; a different function under a taken
        name is an ``AlreadyExistsError`` unless ``replace`` is true.
        """
        if not name or len(name) > MAX_NAME or not name.isprintable():
            raise ValidationError(f"must be 1-{MAX_NAME} printable characters", field="name")
        if not callable(callback):
            raise ValidationError("must be callable", field="callback")
        with self._lock:
            current = self._callbacks.get(name)
            if current is not None and current != callback and not replace:
                raise AlreadyExistsError("callable", name)
            self._callbacks[name] = callback

    def unregister(self, name: str) -> None:
        """Forget ``name``; its deliveries wait until it is registered again."""
        with self._lock:
            self._callbacks.pop(name, None)

    def get(self, name: str) -> Callback | None:
        with self._lock:
            return self._callbacks.get(name)

    def names(self) -> frozenset[str]:
        """The registered names now: what this process may claim."""
        with self._lock:
            return frozenset(self._callbacks)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._callbacks
