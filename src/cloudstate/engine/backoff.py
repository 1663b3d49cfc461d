"""Exponential backoff with jitter, so retries from many workers do not arrive in lockstep."""

from __future__ import annotations

import random


def backoff(attempt: int, *, base: float = 1.0, cap: float = 300.0) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): "equal jitter" backoff.

    Half the exponential step is fixed (so retries do back off), half is random (so they
    spread out).
    """
    step = min(cap, base * 2.0 ** max(0, attempt - 1))
    jitter: float = random.uniform(0, step / 2)
    return step / 2 + jitter
