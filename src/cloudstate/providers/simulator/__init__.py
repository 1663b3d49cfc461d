"""The ``simulator`` provider: a realistic cloud, not a stub.

Instances take time to boot, stop, reboot and shut down; terminated ones stay listed for a
while and then disappear; new ones are invisible for a moment (eventual consistency); calls can
be throttled, fail, be slow, or lose their answer; realms go down; someone else can stop,
start, terminate or create instances behind cloudstate's back. The cloud lives in its own
SQLite file, so it survives restarts and is shared by every process that opens it, and it keeps
a ledger of everything it really did.

``create_driver`` is the registry's factory; ``SimulatedCloud`` is the cloud itself (its
``external_*``, ``configure`` and ledger methods are for tests and operators);
``cloudstate.testing`` has the short-hands for tests.
"""

from __future__ import annotations

from cloudstate.providers.simulator.catalogue import IMAGES, PROFILES, REALMS, STATE_MAP
from cloudstate.providers.simulator.cloud import SimulatedCloud
from cloudstate.providers.simulator.driver import SimulatorDriver, create_driver
from cloudstate.providers.simulator.knobs import CALL_NAMES, SimulatorKnobs
from cloudstate.providers.simulator.lifecycle import LedgerEntry

__all__ = [
    "CALL_NAMES",
    "IMAGES",
    "PROFILES",
    "REALMS",
    "STATE_MAP",
    "LedgerEntry",
    "SimulatedCloud",
    "SimulatorDriver",
    "SimulatorKnobs",
    "create_driver",
]
