"""Circuit breakers, one per webhook endpoint (``host:port``), kept in this worker's memory.

An endpoint that fails ``threshold`` times in a row (no answer, a timeout, a 5xx) is *open*:
for a cool-down its deliveries are not attempted at all (the deliverer reschedules them to the
end of the cool-down without using an attempt of their retry schedule), so a dead receiver
costs neither connection slots nor retries. When the cool-down ends the breaker is
*half-open*: exactly one delivery goes out as a probe while the others wait. A successful probe
closes the breaker (and resets the cool-down); a failed one opens it again for twice as long,
up to ``max_cooldown``. An answer that proves the endpoint alive (any status below 500) also
closes it. Outcomes that say nothing about the endpoint (refused by the URL policy, a signing
problem) are neutral.

State is per process: each worker learns on its own that an endpoint is down, which costs at
most ``threshold`` attempts per worker; the deferrals it writes to the database, though, hold
every worker back until the cool-down ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Gate(Enum):
    """What the breaker lets through to an endpoint now."""

    CLOSED = "closed"  # send
    PROBE = "probe"  # half-open, no probe in flight: send one, as the probe
    HOLD = "hold"  # half-open, the probe is in flight: wait for its answer
    OPEN = "open"  # cooling down: do not attempt, reschedule to the end of the cool-down


@dataclass(frozen=True)
class Verdict:
    gate: Gate
    retry_in: float = 0.0  # OPEN: seconds until the breaker half-opens
    reason: str = ""  # OPEN: a sentence for the delivery's last_error


@dataclass
class _Circuit:
    failures: int = 0
    cooldown: float = 0.0  # the current cool-down; 0 while the breaker has never opened
    open_until: float | None = None
    probing: bool = False
    last_error: str = ""


CLOSED = Verdict(Gate.CLOSED)


class Breakers:
    """The breakers of one deliverer, keyed by endpoint. Not thread-safe: one event loop."""

    def __init__(
        self,
        threshold: int,
        cooldown: float,
        max_cooldown: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = threshold
        self._cooldown = cooldown
        self._max_cooldown = max_cooldown
        self._clock = clock
        self._circuits: dict[str, _Circuit] = {}

    def check(self, endpoint: str) -> Verdict:
        """May a delivery to ``endpoint`` start now?"""
        circuit = self._circuits.get(endpoint)
        if circuit is None or circuit.open_until is None:
            return CLOSED
        remaining = circuit.open_until - self._clock()
        if remaining > 0:
            return Verdict(Gate.OPEN, remaining, self._reason(endpoint, circuit))
        return Verdict(Gate.HOLD if circuit.probing else Gate.PROBE)

    def probing(self, endpoint: str) -> None:
        """A delivery admitted under ``Gate.PROBE`` has started: hold the others back."""
        self._circuits[endpoint].probing = True

    def succeeded(self, endpoint: str) -> None:
        """The endpoint answered: close its breaker and forget its failures."""
        self._circuits.pop(endpoint, None)

    def failed(self, endpoint: str, error: str, *, probe: bool) -> None:
        """Count a failure; open (or re-open, for twice as long) the breaker when it trips.

        A failure of a delivery that started before the breaker opened changes nothing: the
        breaker already knows.
        """
        circuit = self._circuits.setdefault(endpoint, _Circuit())
        circuit.failures += 1
        circuit.last_error = error
        if probe or (circuit.open_until is None and circuit.failures >= self._threshold):
            self._open(circuit)

    def neutral(self, endpoint: str, *, probe: bool) -> None:
        """An outcome that says nothing about the endpoint; a probe's turn passes on."""
        circuit = self._circuits.get(endpoint)
        if probe and circuit is not None:
            circuit.probing = False

    def is_open(self, endpoint: str) -> bool:
        """True while ``endpoint`` is cooling down or being probed (for metrics and tests)."""
        circuit = self._circuits.get(endpoint)
        return circuit is not None and circuit.open_until is not None

    def _open(self, circuit: _Circuit) -> None:
        if circuit.cooldown:
            circuit.cooldown = min(circuit.cooldown * 2, self._max_cooldown)
        else:
            circuit.cooldown = self._cooldown
        circuit.open_until = self._clock() + circuit.cooldown
        circuit.probing = False

    def _reason(self, endpoint: str, circuit: _Circuit) -> str:
        return (
            f"not attempted: circuit open for {endpoint} after {circuit.failures} consecutive "
            f"failures (last: {circuit.last_error}); next try after a {circuit.cooldown:g} s "
            "cool-down"
        )
