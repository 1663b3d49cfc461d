"""What the simulated cloud offers and how it names things: images, profiles, realms, raw
states, addresses and key pairs. Pure functions and constants; the cloud's store uses them.

Raw states are the simulator's own (EC2-like) vocabulary, so cloudstate's normalization is
exercised exactly as with a real provider.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloudstate.domain.hardware import HardwareProfile, ProfileProperty
from cloudstate.domain.states import InstanceState
from cloudstate.providers.base import Image

PENDING = "pending"
RUNNING = "running"
STOPPING = "stopping"
STOPPED = "stopped"
REBOOTING = "rebooting"
SHUTTING_DOWN = "shutting-down"
TERMINATED = "terminated"

STATE_MAP: dict[str, InstanceState] = {
    PENDING: InstanceState.PENDING,
    RUNNING: InstanceState.RUNNING,
    STOPPING: InstanceState.STOPPING,
    STOPPED: InstanceState.STOPPED,
    REBOOTING: InstanceState.REBOOTING,
    SHUTTING_DOWN: InstanceState.SHUTTING_DOWN,
    TERMINATED: InstanceState.TERMINATED,
}
"""Raw simulator state → normalized state (used through ``normalize_state``)."""

IMAGES: tuple[Image, ...] = (
    Image("img-basic", "Basic Linux"),
    Image("img-web", "Linux with a web server"),
)

PROFILES: tuple[HardwareProfile, ...] = (
    HardwareProfile(
        "small",
        {
            "memory": ProfileProperty.fixed(1024),
            "cpu": ProfileProperty.fixed(1),
            "storage": ProfileProperty.fixed(10),
        },
    ),
    HardwareProfile(
        "medium",
        {
            "memory": ProfileProperty.range(1024, 8192, 2048),
            "cpu": ProfileProperty.range(1, 4, 2),
            "storage": ProfileProperty.fixed(40),
        },
    ),
    HardwareProfile(
        "large",
        {
            "memory": ProfileProperty.fixed(16384),
            "cpu": ProfileProperty.fixed(8),
            "storage": ProfileProperty.enum((100, 250, 500, 1000), 100),
        },
    ),
)

REALMS: tuple[str, ...] = ("sim-a", "sim-b")

MAX_USER_DATA_BYTES = 16 * 1024
"""EC2's limit; the simulator refuses more, as the real API would."""

_PUBLIC_POOLS: tuple[tuple[int, int], ...] = tuple(
    (int(net.network_address) + 1, net.num_addresses - 2)
    for net in map(
        ipaddress.IPv4Network,
        ("203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/24", "198.18.0.0/15"),
    )
)
"""(first host, host count) of documentation and benchmarking ranges (RFC 5737, RFC 2544)."""


def private_address(counter: int) -> str:
    """The ``counter``-th private address, 10.0.0.1 upwards (about 16 million of them)."""
    return str(ipaddress.IPv4Address(0x0A000001 + counter % (2**24 - 2)))


def public_address(counter: int) -> str:
    """The ``counter``-th public address, drawn from the pools in order, then round again."""
    index = counter % sum(size for _, size in _PUBLIC_POOLS)
    for first, size in _PUBLIC_POOLS:
        if index < size:
            return str(ipaddress.IPv4Address(first + index))
        index -= size
    raise AssertionError("unreachable: the index is within the pools")


@dataclass(frozen=True)
class KeyPair:
    fingerprint: str
    private_key: str | None = None  # OpenSSH private key; only for generated pairs


def generate_key_pair() -> KeyPair:
    """A fresh Ed25519 pair, fingerprinted the way ``ssh-keygen -l`` prints it."""
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    blob = base64.b64decode(public.split()[1])
    material = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return KeyPair(_fingerprint(blob), material.decode("ascii"))


def named_key_pair(keyname: str) -> KeyPair:
    """The caller's existing key pair: its fingerprint is derived from its name."""
    return KeyPair(_fingerprint(b"simulator-key:" + keyname.encode("utf-8")))


def _fingerprint(blob: bytes) -> str:
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii")
    return "SHA256:" + digest.rstrip("=")
