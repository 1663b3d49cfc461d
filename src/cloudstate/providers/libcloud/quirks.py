"""What a few Libcloud drivers need beyond the common API, kept in one place.

libvirt (``LibvirtNodeDriver``):

* a node's ``id`` is the domain's run-time ID, which is -1 for every shut-off domain and changes
  on each start; the domain UUID is the stable provider id;
* Libcloud maps "shut off" and "paused" to ``terminated``, and "crashed" to ``unknown``; a
  shut-off domain still exists and can be started, so the driver's map is replaced by libvirt's
  own meaning (shut off → stopped, shutdown → stopping, crashed → error, ...);
* ``destroy_node`` only pulls the power (libvirt's ``destroy``); cloudstate's destroy means
  gone, so a persistent domain is also undefined.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from libcloud.compute.types import NodeState

from cloudstate.providers.libcloud.errors import call

LIBVIRT_NODE_STATES: dict[int, NodeState] = {
    0: NodeState.UNKNOWN,  # no state
    1: NodeState.RUNNING,  # running
    2: NodeState.RUNNING,  # blocked on a resource (running, waiting on I/O)
    3: NodeState.PAUSED,  # paused by the user
    4: NodeState.STOPPING,  # being shut down
    5: NodeState.STOPPED,  # shut off
    6: NodeState.ERROR,  # crashed
    7: NodeState.SUSPENDED,  # suspended by guest power management
}
DEFAULT_UUID_PLACES = {"azure_arm": "tags", "libvirt": "name"}
"""Where our UUID goes when ``uuid_in`` is not set and ``ex_metadata`` would be wrong."""


@dataclass(frozen=True)
class Quirks:
    driver: str

    @property
    def uuid_in(self) -> str | None:
        return DEFAULT_UUID_PLACES.get(self.driver)

    def prepare(self, node_driver: Any) -> None:
        """Adjust a freshly built Libcloud driver (an instance attribute shadows its class')."""
        if self.driver == "libvirt":
            node_driver.NODE_STATE_MAP = LIBVIRT_NODE_STATES
            _quiet_libvirt()

    def provider_id(self, node: Any) -> str:
        if self.driver == "libvirt":
            return str(node.uuid)
        return str(node.id)

    def after_destroy(self, node_driver: Any, node: Any) -> None:
        if self.driver != "libvirt":
            return
        domain = call(lambda: node_driver.connection.lookupByUUIDString(node.uuid))
        if domain.isPersistent():
            call(domain.undefine)


def _quiet_libvirt() -> None:
    """libvirt prints every error to stderr unless a handler takes it; ours come as exceptions."""
    import libvirt

    libvirt.registerErrorHandler(lambda _context, _error: None, None)
