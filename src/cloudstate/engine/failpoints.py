"""Named crash points for fault-injection tests (off unless ``CLOUDSTATE_FAILPOINTS`` is set).

``CLOUDSTATE_FAILPOINTS=launch.after_create`` makes the process kill itself with SIGKILL the
first time it reaches that point: no cleanup, no ``finally``, exactly like a power cut. The
crash tests use it to prove that no point of a launch, a delivery or a rollback loses or doubles
anything. Points: ``launch.before_create``, ``launch.after_create``, ``deliver.after_send``,
``rollback.before_destroy``, ``rollback.after_destroy``.
"""

from __future__ import annotations

import os
import signal

_ARMED = frozenset(
    name.strip() for name in os.environ.get("CLOUDSTATE_FAILPOINTS", "").split(",") if name.strip()
)


def hit(name: str) -> None:
    """Die here, at once, if the point ``name`` is armed."""
    if name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
