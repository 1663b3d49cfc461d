"""Client-side request token buckets that keep one driver within EC2's published API limits.

EC2 throttles each account per region with token buckets of its own ("request token bucket
sizes and refill rates" in its API documentation): non-mutating actions (``Describe*``,
``List*``, ``Get*``, ``Search*``) refill at 20/s, mutating actions at 5/s, and ``RunInstances``
is further held to 2 instances/s by its resource bucket (one instance per call here, so
2 calls/s). Every EC2 call the driver makes first takes a token from its class's bucket here,
through a botocore ``before-call`` hook, so pagination, key pairs and tags are covered too.

The default sizes (bursts) are half of EC2's (100 non-mutating, 50 mutating): EC2's buckets are
shared by everything using the account in that region (the console, other tools, other
cloudstate workers), so one driver should not be able to empty them. These buckets are fixed;
adapting to what EC2 actually allows is the engine's per-account call budget, which slows down
whenever EC2 throttles anyway.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from botocore.model import OperationModel
    from mypy_boto3_ec2 import EC2Client

DESCRIBE, MUTATING, RUN_INSTANCES = "describe", "mutating", "run_instances"
CLASSES = (DESCRIBE, MUTATING, RUN_INSTANCES)
DEFAULT_RATES: Mapping[str, float] = {DESCRIBE: 20.0, MUTATING: 5.0, RUN_INSTANCES: 2.0}
"""Calls per second: EC2's published refill rates."""
DEFAULT_BURSTS: Mapping[str, float] = {DESCRIBE: 50.0, MUTATING: 25.0, RUN_INSTANCES: 25.0}
"""Calls allowed at once: half of EC2's bucket sizes (see the module docstring)."""
NON_MUTATING_PREFIXES = ("Describe", "List", "Get", "Search")


def classify(operation: str) -> str:
    """The bucket an EC2 operation (``RunInstances``, ``DescribeInstances``, ...) draws from:
    EC2 treats every action that is not a read as mutating."""
    if operation == "RunInstances":
        return RUN_INSTANCES
    if operation.startswith(NON_MUTATING_PREFIXES):
        return DESCRIBE
    return MUTATING


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; thread-safe.

    A caller reserves its token at once (the count may go below zero) and then sleeps until
    that token is due, so concurrent callers queue in arrival order instead of racing.
    """

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, not {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, waiting until it is due; returns the seconds waited."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait:
            time.sleep(wait)
        return wait


class RequestBuckets:
    """One ``TokenBucket`` per class (``describe``, ``mutating``, ``run_instances``); the
    rates and bursts not given are the defaults above."""

    def __init__(
        self, rates: Mapping[str, float] | None = None, bursts: Mapping[str, float] | None = None
    ) -> None:
        rates = {**DEFAULT_RATES, **(rates or {})}
        bursts = {**DEFAULT_BURSTS, **(bursts or {})}
        self.buckets = {name: TokenBucket(rates[name], bursts[name]) for name in CLASSES}

    def acquire(self, operation: str) -> float:
        """Block until ``operation`` may be sent; returns the seconds waited."""
        return self.buckets[classify(operation)].acquire()

    def install(self, client: EC2Client) -> None:
        """Make every call ``client`` sends wait for its token first."""
        client.meta.events.register("before-call.ec2", self._before_call)

    def _before_call(self, model: OperationModel, **_: Any) -> None:
        # Must return None: a value returned from before-call would replace EC2's answer.
        self.acquire(model.name)
