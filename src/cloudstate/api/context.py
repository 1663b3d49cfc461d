"""What the API needs from the rest of cloudstate, handed over by the composition root."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cloudstate.config import Settings
from cloudstate.engine.drivers import DriverPool
from cloudstate.store import Store


def _nothing() -> None:
    return None


@dataclass
class ApiContext:
    settings: Settings
    store: Store
    pool: DriverPool
    wake: Callable[[], None] = field(default=_nothing)  # pokes in-process workers, if any
