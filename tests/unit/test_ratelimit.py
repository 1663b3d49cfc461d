"""The per-account call budget: it slows down when throttled and recovers when calls succeed."""

from __future__ import annotations

import time

import pytest

from cloudstate.engine.ratelimit import FLOOR, CallBudget


def test_an_unconfigured_budget_never_waits() -> None:
    """Without a limit and without throttling, acquire() returns at once."""
    budget = CallBudget()
    started = time.monotonic()
    for _ in range(1000):
        budget.acquire()
    assert time.monotonic() - started < 0.5


def test_a_configured_rate_spaces_the_calls() -> None:
    """At 20 calls/s with a burst of 1, 11 calls take about half a second."""
    budget = CallBudget(rate=20.0, burst=1.0)
    started = time.monotonic()
    for _ in range(11):
        budget.acquire()
    assert 0.45 <= time.monotonic() - started < 1.0


def test_throttling_halves_the_rate_actually_used() -> None:
    """Ten calls in the last second, then a throttle: the budget becomes 5 calls/s."""
    budget = CallBudget()
    for _ in range(10):
        budget.acquire()
    budget.throttled()
    assert budget.rate == pytest.approx(5.0)
    budget.throttled()
    assert budget.rate == pytest.approx(2.5)


def test_the_rate_never_drops_below_the_floor() -> None:
    """However often the provider throttles, cloudstate keeps making progress."""
    budget = CallBudget(rate=1.0)
    for _ in range(20):
        budget.throttled()
    assert budget.rate == FLOOR


def test_successes_raise_the_rate_back_to_the_configured_limit() -> None:
    """After throttling, accepted calls raise the rate by 2 % each, up to the limit."""
    budget = CallBudget(rate=4.0)
    budget.throttled()
    assert budget.rate is not None
    assert budget.rate < 4.0
    for _ in range(200):
        budget.succeeded()
    assert budget.rate == 4.0


def test_an_unconfigured_budget_becomes_unlimited_again() -> None:
    """Without a configured limit, enough successes lift the limit altogether."""
    budget = CallBudget()
    budget.acquire()
    budget.throttled()
    for _ in range(1000):
        budget.succeeded()
    assert budget.rate is None
