"""Delivery policy: statuses, what one attempt's outcome leads to, and the retry schedule.

The store applies these verdicts; it decides none of them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

JITTER = 0.1  # each retry delay is drawn from ±10% of the schedule's


class DeliveryStatus(StrEnum):
    """``pending`` waits for its time (and its turn: only the head of its key is sent);
    ``delivering`` is claimed by a worker until its lease ends; ``delivered`` the target took
    it; ``dead`` every attempt of the schedule failed (kept for replay); ``cancelled`` never to
    be attempted (its subscription was disabled)."""

    PENDING = "pending"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    DEAD = "dead"
    CANCELLED = "cancelled"


UNFINISHED = (DeliveryStatus.PENDING, DeliveryStatus.DELIVERING)
FINISHED = (DeliveryStatus.DELIVERED, DeliveryStatus.DEAD, DeliveryStatus.CANCELLED)


class Outcome(StrEnum):
    """What one attempt did: the target took it, it failed (retry or dead), or it is gone."""

    DELIVERED = "delivered"
    FAILED = "failed"
    GONE = "gone"


@dataclass(frozen=True)
class Verdict:
    """Where one attempt leaves its delivery: its status, and when it is next due."""

    status: DeliveryStatus
    next_attempt_at: datetime | None = None  # set for a retry only


def after_attempt(
    outcome: Outcome,
    attempts: int,
    schedule: Sequence[float],
    now: datetime,
    rng: random.Random,
) -> Verdict:
    """``attempts`` counts this one. A failure is retried after the schedule's next delay
    (with jitter) while attempts remain, else it is dead; ``GONE`` cancels it (the receiver
    answered 410: its subscription is disabled, see ``disables_subscription``)."""
    if outcome is Outcome.DELIVERED:
        return Verdict(DeliveryStatus.DELIVERED)
    if outcome is Outcome.GONE:
        return Verdict(DeliveryStatus.CANCELLED)
    if attempts < len(schedule):
        delay = schedule[attempts] * rng.uniform(1 - JITTER, 1 + JITTER)
        return Verdict(DeliveryStatus.PENDING, now + timedelta(seconds=delay))
    return Verdict(DeliveryStatus.DEAD)


def disables_subscription(outcome: Outcome) -> bool:
    """410 Gone: the receiver asks never to be called again."""
    return outcome is Outcome.GONE


def gone_reason(status_code: int | None, now: datetime) -> str:
    answer = f"HTTP {status_code}" if status_code is not None else "gone"
    return f"the receiver answered {answer} at {now:%Y-%m-%d %H:%M:%S} UTC"
