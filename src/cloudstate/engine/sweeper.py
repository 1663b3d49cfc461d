"""Housekeeping on a slow cadence: prune the change log past its retention, and drop the
inline credentials of launch orders whose retention has run out."""

from __future__ import annotations

from datetime import timedelta

from cloudstate.config import Settings
from cloudstate.engine.loop import TickResult
from cloudstate.service.retention import BATCH, drop_order_credentials, prune_events
from cloudstate.store import Store
from cloudstate.store.tables import utcnow


class Sweeper:
    name = "sweeper"

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.retention = timedelta(days=settings.event_retention_days)

    def interval(self) -> float:
        return 60.0

    def tick(self) -> TickResult:
        now = utcnow()
        dropped = drop_order_credentials(self.store, now)
        pruned = prune_events(self.store, now - self.retention)
        return TickResult(worked=bool(pruned or dropped), more=pruned == BATCH)
