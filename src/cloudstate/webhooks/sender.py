"""The HTTP seam: one narrow ``Sender`` protocol, the aiohttp implementation, and a fake.

A sender POSTs one body and reports what happened as a ``SendResult``; it never raises for
anything the network or the receiver does (refused connections, timeouts, resets, bad URLs all
become a result with an ``error``), so the deliverer can treat every outcome as data. The real
sender also enforces the callback URL policy (``cloudstate.webhooks.safety``) on every request,
connecting only to addresses the policy allows.
``RecordingSender`` is the fake that cloudstate's tests and users' tests use instead of a
network.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from cloudstate.config import Settings
from cloudstate.webhooks.safety import PinnedResolver, WebhookPolicy, find_refusal

MAX_RESPONSE_BYTES = 1024


@dataclass(frozen=True)
class SendResult:
    """The receiver's status code (``None`` when no response came) and what went wrong.

    ``refused``: the URL policy refused the target's address, so nothing was sent.
    """

    status_code: int | None
    error: str = ""
    refused: bool = False

    @property
    def ok(self) -> bool:
        """A 2xx answer: the receiver has the event."""
        return self.status_code is not None and 200 <= self.status_code < 300


class Sender(Protocol):
    """POST ``body`` to ``url``; never raise for network or receiver trouble."""

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendResult: ...

    async def close(self) -> None:
        """Release connections; called once, on the event loop that did the sending."""
        ...


class AiohttpSender:
    """The real sender: one connection pool, a total timeout per request, no redirects, and
    only addresses that ``policy`` allows (default: public ones only).

    The ``aiohttp.ClientSession`` is created on first use, inside the event loop that sends,
    and must be closed on that loop with ``close()``. A redirect is reported as its 3xx status
    (a failure): following it would send a signed event to a place nobody subscribed. IP
    literals are judged before sending; host names by the session's ``PinnedResolver``, so
    the connection goes only to addresses that were checked. No proxy is used.
    """

    def __init__(
        self,
        *,
        concurrency: int = 50,
        timeout_seconds: float = 15.0,
        policy: WebhookPolicy | None = None,
    ) -> None:
        self._concurrency = concurrency
        self._timeout = timeout_seconds
        self._policy = policy if policy is not None else WebhookPolicy()
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AiohttpSender:
        return cls(
            concurrency=settings.delivery_concurrency,
            timeout_seconds=settings.delivery_timeout_seconds,
            policy=WebhookPolicy.from_settings(settings),
        )

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        refusal = self._policy.literal_refusal(url)
        if refusal is not None:
            return SendResult(None, refusal, refused=True)
        session = self._open()
        try:
            async with session.post(
                url, data=body, headers=dict(headers), allow_redirects=False
            ) as response:
                await response.content.read(MAX_RESPONSE_BYTES)
                status = response.status
        except TimeoutError:
            return SendResult(None, f"timed out after {self._timeout:g} s")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            refused = find_refusal(exc)
            if refused is not None:
                return SendResult(None, str(refused), refused=True)
            return SendResult(None, _describe(exc))
        return SendResult(status, "" if 200 <= status < 300 else f"HTTP {status}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._concurrency, resolver=PinnedResolver(self._policy)
                ),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                auto_decompress=False,
                trust_env=False,
            )
        return self._session


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class SentRequest:
    """One request a ``RecordingSender`` was asked to send."""

    url: str
    body: bytes
    headers: dict[str, str]


Responder = Callable[[SentRequest], SendResult]


@dataclass
class RecordingSender:
    """A fake sender that keeps every request and answers with ``respond`` (default: 200).

    Thread-safe, so a test can inspect ``requests`` while a worker thread delivers.
    """

    respond: Responder = field(default=lambda _request: SendResult(200))
    requests: list[SentRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        request = SentRequest(url, body, dict(headers))
        with self._lock:
            self.requests.append(request)
        await asyncio.sleep(0)
        return self.respond(request)

    async def close(self) -> None:
        return None

    def bodies(self) -> list[Any]:
        """The JSON bodies sent so far, in the order they were sent."""
        with self._lock:
            return [json.loads(request.body) for request in self.requests]
