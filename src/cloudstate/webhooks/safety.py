"""Callback URL safety: webhooks never reach loopback, private, link-local or metadata addresses.

A subscription URL is operator-supplied data that makes cloudstate send requests from inside
its network (SSRF). So, unless the operator's allow-list (``CLOUDSTATE_WEBHOOK_ALLOW``:
CIDRs and/or exact host names) says otherwise, an address is refused when it is the cloud
metadata service (169.254.169.254, fd00:ec2::254, 100.100.100.200), unspecified, loopback,
link-local, multicast, private (RFC 1918, fc00::/7), reserved, or otherwise not globally
reachable. IPv4 addresses embedded in IPv6 (``::ffff:a.b.c.d``, 6to4, NAT64) are judged as the
IPv4 address they reach.

The check runs twice, because DNS can change between them:

* at registration (``url_problem``): a URL is refused when *every* address its host resolves
  to now is refused (a host that does not resolve at all is accepted: nothing can be judged
  yet, and the second check still applies);
* at every delivery, inside the connection itself: ``PinnedResolver`` is the aiohttp resolver
  of the real sender; it resolves, drops refused addresses and hands aiohttp only the allowed
  ones, so the addresses checked are exactly the addresses connected to (no DNS-rebinding gap).
  Hosts that are IP literals never reach an aiohttp resolver, so ``literal_refusal`` judges them
  before sending, spelled any way the OS accepts (``[::1]``, ``0x7f.1``, ``2130706433``,
  ``127.1``), by asking ``getaddrinfo`` in numeric-only mode what it would connect to.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

if TYPE_CHECKING:
    from cloudstate.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]

RESOLVE_TIMEOUT = 5.0
NOT_HTTP = "must be an http:// or https:// URL with a host"
ALLOW_HINT = (
    "an operator can permit it with CLOUDSTATE_WEBHOOK_ALLOW in the environment of the "
    "cloudstate server (serve, api and worker), not of this client"
)
METADATA = frozenset(
    ipaddress.ip_address(text) for text in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
PRIVATE = tuple(  # RFC 1918 and RFC 4193
    ipaddress.ip_network(text)
    for text in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NUMERIC = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV


class RefusedAddress(OSError):
    """The policy refused every address of a host. An ``OSError`` so aiohttp reports it as a
    connection failure; ``str()`` is the sentence for ``last_error``."""


@dataclass(frozen=True)
class Refusal:
    """Why one address of one host may not be a webhook target."""

    host: str
    address: IPAddress
    what: str

    def __str__(self) -> str:
        embedded = _embedded_ipv4(self.address)
        address = f"{self.address} ({embedded})" if embedded else str(self.address)
        if _same_address(self.host, self.address):
            return f"refused: {address} is {self.what}"
        return f"refused: {self.host} resolves to {address}, {self.what}"


def address_problem(address: IPAddress) -> str | None:
    """What makes ``address`` unfit for webhooks (``"a private address"``), or None."""
    address = _embedded_ipv4(address) or address
    checks = (
        (address in METADATA, "the cloud metadata address"),
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (any(address in network for network in PRIVATE), "a private address"),
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "not a public address"),
    )
    return next((what for refused, what in checks if refused), None)


@dataclass(frozen=True)
class WebhookPolicy:
    """Which addresses webhooks may reach: public ones, plus the operator's exceptions."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()
    resolve_timeout: float = RESOLVE_TIMEOUT

    @classmethod
    def parse(
        cls, entries: Iterable[str], *, resolve_timeout: float = RESOLVE_TIMEOUT
    ) -> WebhookPolicy:
        """An allow-list of CIDRs or IP addresses (``10.1.0.0/16``, ``127.0.0.1``) and exact
        host names (``hooks.internal``: any address that name resolves to)."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for entry in (e.strip() for e in entries):
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if entry:
                    hosts.add(_host_key(entry))
        return cls(tuple(networks), frozenset(hosts), resolve_timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookPolicy:
        return cls.parse(settings.webhook_allow)

    def refusal(self, host: str, address: IPAddress) -> Refusal | None:
        """Why webhooks for ``host`` may not connect to ``address``; None when they may."""
        if _host_key(host) in self.hosts or any(address in net for net in self.networks):
            return None
        what = address_problem(address)
        return Refusal(host, address, what) if what else None

    def literal_refusal(self, url: str) -> str | None:
        """Judge a URL without DNS: its form, and its host when that is an IP literal.

        Host names are left to ``PinnedResolver`` (at connection time) or ``url_problem``.
        """
        try:
            target = URL(url)
        except (TypeError, ValueError):
            return NOT_HTTP
        host = target.raw_host
        if target.scheme not in ("http", "https") or not host:
            return NOT_HTTP
        for address in _numeric_addresses(host):
            refused = self.refusal(host, address)
            if refused is not None:
                return str(refused)
        return None

    def allowed(self, host: str, infos: Iterable[AddrInfo]) -> tuple[list[AddrInfo], list[Refusal]]:
        """Split resolved ``infos`` into the allowed ones and the refusals."""
        allowed: list[AddrInfo] = []
        refused: list[Refusal] = []
        for info in infos:
            refusal = self.refusal(host, _address(info))
            if refusal is None:
                allowed.append(info)
            else:
                refused.append(refusal)
        return allowed, refused

    def url_problem(self, url: str) -> str | None:
        """Why ``url`` cannot be registered as a webhook target (blocking, bounded by the
        resolve timeout: call it off the event loop); None when it can."""
        problem = self.literal_refusal(url)
        if problem is not None:
            return _with_hint(problem)
        target = URL(url)
        host = target.raw_host or ""
        try:
            infos = _resolve_blocking(host, target.port or 0, self.resolve_timeout)
        except (OSError, FutureTimeout):
            return None  # cannot be judged now; every delivery checks again
        allowed, refused = self.allowed(host, infos)
        if refused and not allowed:
            return _with_hint(str(refused[0]))
        return None


class PinnedResolver(AbstractResolver):
    """aiohttp's resolver for webhooks: resolves without blocking the event loop (bounded by
    the policy's timeout) and returns only the addresses the policy allows, so the connection
    goes exactly where the check looked. Raises ``RefusedAddress`` when none is allowed."""

    def __init__(self, policy: WebhookPolicy) -> None:
        self.policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        lookup = loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, family=family)
        try:
            infos = await asyncio.wait_for(lookup, self.policy.resolve_timeout)
        except TimeoutError as exc:
            raise OSError(f"resolving {host} timed out") from exc
        allowed, refused = self.policy.allowed(host, infos)
        if not allowed:
            raise RefusedAddress(str(refused[0]) if refused else f"{host} has no address")
        return [_resolve_result(host, port, info) for info in allowed]

    async def close(self) -> None:
        return None


def find_refusal(exc: BaseException) -> RefusedAddress | None:
    """The ``RefusedAddress`` behind an aiohttp connection error, if that is what it was."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, RefusedAddress):
            return seen
        seen = getattr(seen, "os_error", None) or seen.__cause__ or seen.__context__
    return None


def endpoint(kind: str, target: str) -> str:
    """The unit of isolation and circuit breaking: ``host:port`` of a URL (default port by
    scheme), or ``callable:<name>``."""
    if kind == "callable":
        return f"callable:{target}"
    try:
        url = URL(target)
    except (TypeError, ValueError):
        return target
    host = url.raw_host or ""
    return f"[{host}]:{url.port}" if ":" in host else f"{host}:{url.port}"


# internals ----------------------------------------------------------------------------------


def _host_key(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _same_address(host: str, address: IPAddress) -> bool:
    try:
        return ipaddress.ip_address(_host_key(host)) == address
    except ValueError:
        return False


def _with_hint(problem: str) -> str:
    return problem if problem == NOT_HTTP else f"{problem}; {ALLOW_HINT}"


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, NAT64), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _numeric_addresses(host: str) -> list[IPAddress]:
    """What the OS would connect to for ``host`` if it is an IP literal in any spelling; []
    for a host name. Never touches DNS."""
    try:
        infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM, flags=_NUMERIC)
    except (OSError, UnicodeError):
        return []
    return [_address(info) for info in infos]


def _address(info: AddrInfo) -> IPAddress:
    text = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone (fe80::1%eth0)
    return ipaddress.ip_address(text)


def _resolve_blocking(host: str, port: int, timeout: float) -> Sequence[AddrInfo]:
    """``getaddrinfo`` that gives up after ``timeout`` (the lookup thread is left to finish)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cloudstate-dns")
    try:
        future = pool.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        return future.result(timeout)
    finally:
        pool.shutdown(wait=False)


def _resolve_result(host: str, port: int, info: AddrInfo) -> ResolveResult:
    family, _, proto, _, sockaddr = info
    address = str(sockaddr[0])
    if family == socket.AF_INET6 and len(sockaddr) > 3 and sockaddr[3]:
        address = f"{address}%{sockaddr[3]}"
    resolved_port = int(sockaddr[1]) if len(sockaddr) > 1 else port
    return ResolveResult(
        hostname=host, host=address, port=resolved_port, family=family, proto=proto, flags=_NUMERIC
    )


HIDDEN = "redacted"


def redact_url(url: str) -> str:
    """``url`` without what callers hide credentials in: user and password, query string and
    fragment each become ``redacted`` (scheme, host, port and path stay, to tell hooks apart).
    Anything but an http(s) URL with a host is hidden whole."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return HIDDEN
    if parts.scheme not in ("http", "https") or not host:
        return HIDDEN
    if ":" in host:
        host = f"[{host}]"
    userinfo = f"{HIDDEN}@" if "@" in parts.netloc else ""
    query = f"?{HIDDEN}" if parts.query else ""
    fragment = f"#{HIDDEN}" if parts.fragment else ""
    return f"{parts.scheme}://{userinfo}{host}{port}{parts.path}{query}{fragment}"
